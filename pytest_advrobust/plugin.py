"""pytest hooks of pytest-advrobust: options, marker, fixtures, the gate, summary, xdist.

Algorithms live in the modules this one calls; nothing heavy (torch) is
imported until a robust test actually runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

import pytest

from . import __version__
from .errors import AdvRobustError
from .report import build_report, failure_message, junit_properties, summary_lines
from .settings import (DEFAULTS, RobustSettings, VALUE_OPTIONS, base_settings, from_marker,
                       resolve_value)

ROBUST_FIXTURES = ("adversarial_batch", "gan_generator", "conditional_generator")
SKIP_REASON = "robustness test: pass --advrobust to run it"


class AdvRobustWarning(UserWarning):
    """A robustness evaluation needs a human look (sanity flag, baseline, environment)."""


@dataclass
class _State:
    enabled: bool
    values: Dict[str, Any]
    base: RobustSettings
    cache_dir: Optional[Path]
    json_path: Optional[Path]
    images_dir: Optional[Path]
    baseline_path: Path
    save_baseline: Optional[str]
    compare: bool
    strict: bool
    retrain: bool
    warm: bool
    outcomes: Dict[Any, Any] = field(default_factory=dict)
    reports: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    collected: Set[str] = field(default_factory=set)
    baseline: Any = None
    baseline_loaded: bool = False
    notes: List[str] = field(default_factory=list)
    markdown_path: Optional[Path] = None
    missing_warned: Set[str] = field(default_factory=set)
    relay: Any = None
    cache_default: bool = False  # cache_dir is pytest's own cache folder, made on first use
    cache_checked: bool = False
    cache_note: Optional[str] = None  # set when the cache folder cannot be written
    store: Any = None  # SessionData: fixture values converted to tensors once per session


STATE_KEY = pytest.StashKey[_State]()
OUTCOME_KEY = pytest.StashKey[Any]()


# ----------------------------------------------------------------- options

def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("advrobust", "adversarial robustness tests (pytest-advrobust)")
    group.addoption("--advrobust", action="store_true", default=None,
                    help="run robustness tests (marked robust or using adversarial_batch / "
                         "gan_generator); without it they are skipped. ini: advrobust")
    parser.addini("advrobust", "run robustness tests by default", type="bool", default=False)
    helps = {
        "device": "device for attacks and GAN training: auto (default), cpu, cuda, cuda:N",
        "seed": "seed of sample selection, attacks and GAN training (default 0)",
        "samples": "default number of evaluation samples n (default 512)",
        "eps": "default perturbation bound (default 0.1 for linf, 0.5 for l2)",
        "batch_size": "batch size for attacks and evaluation (default 256)",
        "sanity": "sanity checks against gradient masking: off, cheap (default), full",
        "tolerance": "largest allowed fall of adversarial accuracy below the baseline "
                     "(default 0.02)",
        "missing_baseline": "what a test without a baseline entry does under "
                            "--advrobust-compare: fail, warn (default), skip",
        "threads": "torch threads while attacking and training (default: torch's own "
                   "setting; 1 is often fastest for small models on shared CI machines)",
        "gan_steps": "GAN training step budget of both stages (default 300, and up to 200 "
                     "fitting passes)",
        "gan_seconds": "GAN training safety-net time cap in seconds; a training it cuts short "
                       "is marked cut_short with a warning (default 3600)",
        "bounds": "valid input range LOW,HIGH (default 0,1), or none for unbounded features",
        "preprocessing": "normalisation MEAN;STD the model applies to its inputs, comma-"
                         "separated per channel (e.g. 0.5,0.5,0.5;0.25,0.25,0.25); eps stays "
                         "in input units (default none)",
        "channel_axis": "axis of the channels that preprocessing normalises: auto (default: "
                        "1, or -1 for (N, H, W, C) images that fit only there) or an integer",
        "min_clean_accuracy": "clean accuracy a robust test needs, in [0, 1] (default: "
                              "clearly above chance, 1/classes)",
    }
    for name, (opt, ini, parse) in VALUE_OPTIONS.items():
        group.addoption(opt, type=parse, default=None, metavar=name.upper(),
                        help=f"{helps[name]}. ini: {ini}")
        parser.addini(ini, helps[name])
    group.addoption("--advrobust-json", metavar="PATH", default=None,
                    help="write the JSON report (all robust tests) to PATH. ini: advrobust_json")
    parser.addini("advrobust_json", "path of the JSON report")
    group.addoption("--advrobust-cache-dir", metavar="DIR", default=None,
                    help="GAN cache folder (default .pytest_cache/d/advrobust, or "
                         "$ADVROBUST_CACHE_DIR). ini: advrobust_cache_dir")
    parser.addini("advrobust_cache_dir", "GAN cache folder")
    group.addoption("--advrobust-retrain", action="store_true", default=False,
                    help="train generators even when the cache holds them")
    group.addoption("--advrobust-baseline", metavar="PATH", default=None,
                    help="baseline file (default <rootdir>/advrobust-baseline.json). "
                         "ini: advrobust_baseline")
    parser.addini("advrobust_baseline", "baseline file")
    group.addoption("--advrobust-save-baseline", nargs="?", const="all", default=None,
                    choices=("all", "new"),
                    help="write the baseline from this run; =new adds only missing entries "
                         "(write =all or put it after the test paths, since it takes an "
                         "optional value)")
    group.addoption("--advrobust-compare", action="store_true", default=None,
                    help="fail tests whose adversarial accuracy fell below the baseline by "
                         "more than the tolerance. ini: advrobust_compare")
    parser.addini("advrobust_compare", "compare against the baseline", type="bool",
                  default=False)
    group.addoption("--advrobust-strict", action="store_true", default=None,
                    help="turn sanity flags into test errors. ini: advrobust_strict")
    parser.addini("advrobust_strict", "sanity flags fail tests", type="bool", default=False)
    group.addoption("--advrobust-images", metavar="DIR", default=None,
                    help="write a PNG gallery (and curve) per robust test into DIR. "
                         "ini: advrobust_images")
    parser.addini("advrobust_images", "folder for PNG galleries")
    group.addoption("--advrobust-markdown", metavar="PATH", default=None,
                    help="write a Markdown table of every robust test to PATH (it is also "
                         "appended to $GITHUB_STEP_SUMMARY when set). ini: advrobust_markdown")
    parser.addini("advrobust_markdown", "path of the Markdown summary table")
    group.addoption("--advrobust-warm", action="store_true", default=False,
                    help="only train and cache the generators the selected tests need, "
                         "then skip them (used by `advrobust warm`)")
    parser.addini("advrobust_model_fixture", "default name of the model fixture",
                  default=DEFAULTS["model_fixture"])
    parser.addini("advrobust_data_fixture", "default name of the data fixture",
                  default=DEFAULTS["data_fixture"])
    parser.addini("advrobust_train_data_fixture",
                  "default name of the optional fixture with data for GAN training",
                  default=DEFAULTS["train_data_fixture"])


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def _flag(config: pytest.Config, opt: str, ini: str) -> bool:
    value = config.getoption(opt)
    return bool(value) if value is not None else bool(config.getini(ini))


def _path_option(config: pytest.Config, opt: str, ini: str) -> Optional[Path]:
    value = config.getoption(opt) or config.getini(ini) or None
    if value is None:
        return None
    path = Path(os.path.expanduser(str(value)))
    return path if path.is_absolute() else Path(config.rootpath) / path


def _identifier_ini(config: pytest.Config, ini: str) -> str:
    value = str(config.getini(ini)).strip()
    if not value.isidentifier():
        raise pytest.UsageError(f"ini option {ini} = {value!r} is not a fixture name")
    return value


@pytest.hookimpl(trylast=True)  # after the cache provider has set config.cache
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "robust(threshold, attack='gan', eps=None, norm='linf', steps=40, step_size=None, "
        "restarts=1, random_start=False, n_samples=None, metric='absolute', seed=None, "
        "model='robust_model', data='robust_data', bounds=(0, 1), preprocessing=None, "
        "refine=0, tolerance=None, sanity=None, threshold_eps=None, batch_size=None, "
        "targets=0, channel_axis=None, min_clean_accuracy=None, validity=0.9): "
        "fail the test when clean minus adversarial accuracy exceeds threshold "
        "(runs with --advrobust)")
    values: Dict[str, Any] = {}
    try:
        for name, (opt, ini, _) in VALUE_OPTIONS.items():
            values[name] = resolve_value(name, config.getoption(opt), config.getini(ini))
    except AdvRobustError as exc:
        raise pytest.UsageError(str(exc)) from None
    values["model_fixture"] = _identifier_ini(config, "advrobust_model_fixture")
    values["data_fixture"] = _identifier_ini(config, "advrobust_data_fixture")
    values["train_data_fixture"] = _identifier_ini(config, "advrobust_train_data_fixture")

    from .paths import ENV_CACHE_DIR, resolve_cache_dir

    # Nothing here touches the disk: a run without --advrobust must not depend on a
    # writable checkout. The folder is made (and probed) on first use, by _cache_dir.
    option, ini = config.getoption("advrobust_cache_dir"), config.getini("advrobust_cache_dir")
    cache_default = not (option or ini or os.environ.get(ENV_CACHE_DIR)) and \
        getattr(config, "cache", None) is not None
    cache_dir = None if cache_default else \
        resolve_cache_dir(option, ini or None, os.environ, config.rootpath)

    images = _path_option(config, "advrobust_images", "advrobust_images")
    baseline = _path_option(config, "advrobust_baseline", "advrobust_baseline") or \
        Path(config.rootpath) / "advrobust-baseline.json"
    state = _State(
        enabled=_flag(config, "advrobust", "advrobust"),
        values=values,
        base=base_settings(values),
        cache_dir=cache_dir,
        json_path=_path_option(config, "advrobust_json", "advrobust_json"),
        images_dir=images,
        baseline_path=baseline,
        save_baseline=config.getoption("advrobust_save_baseline"),
        compare=_flag(config, "advrobust_compare", "advrobust_compare"),
        strict=_flag(config, "advrobust_strict", "advrobust_strict"),
        retrain=bool(config.getoption("advrobust_retrain")),
        warm=bool(config.getoption("advrobust_warm")),
        cache_default=cache_default,
    )
    if state.warm:
        state.enabled = True
    state.markdown_path = _path_option(config, "advrobust_markdown", "advrobust_markdown")
    config.stash[STATE_KEY] = state

    from .attacks import register_attack

    config.hook.pytest_advrobust_register_attacks(register=register_attack)
    config.pluginmanager.register(_ReportCollector(state), "advrobust-reports")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(state), "advrobust-xdist")
    if config.pluginmanager.hasplugin("html"):
        from .html_report import HtmlHooks

        config.pluginmanager.register(
            HtmlHooks(lambda item: item.stash.get(OUTCOME_KEY, None),
                      lambda exc: _missing_package(state, exc)), "advrobust-html")


def _state(config: pytest.Config) -> _State:
    return config.stash[STATE_KEY]


def _cache_dir(config: pytest.Config) -> Optional[Path]:
    """The GAN cache folder, made and probed on first use; ``None`` when it cannot be
    written (then generators live in memory for the session, with one warning)."""
    from .paths import unwritable_reason

    state = _state(config)
    if state.cache_checked:
        return state.cache_dir
    state.cache_checked = True
    folder: Any = state.cache_dir
    try:
        if state.cache_default:  # pytest's own cache folder, wherever its cache_dir ini puts it
            folder = Path(config.cache.mkdir("advrobust"))
        reason = unwritable_reason(Path(folder))
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    if reason is not None:
        where = folder if folder is not None else "pytest's cache folder"
        state.cache_dir = None
        state.cache_note = (f"GAN cache folder {where} cannot be written ({reason}): "
                            "generators are kept in memory for this session and not cached; "
                            "point --advrobust-cache-dir or $ADVROBUST_CACHE_DIR at a "
                            "writable folder to keep them")
        state.notes.append(state.cache_note)
        _warn(state.cache_note)
    else:
        state.cache_dir = Path(folder)
    return state.cache_dir


def _store(state: _State) -> Any:
    if state.store is None:
        from .loading import SessionData

        state.store = SessionData()
    return state.store


def _is_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput")


# -------------------------------------------------------------- collection

def _is_robust(item: pytest.Item) -> bool:
    if item.get_closest_marker("robust") is not None:
        return True
    names = getattr(item, "fixturenames", ())
    return any(n in names for n in ROBUST_FIXTURES)


def pytest_itemcollected(item: pytest.Item) -> None:
    if _is_robust(item):
        state = _state(item.config)
        state.collected.add(item.nodeid)


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    state = _state(config)
    if state.enabled:
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if _is_robust(item):
            item.add_marker(skip)


# ---------------------------------------------------------------- fixtures

def _settings_for(request: pytest.FixtureRequest, require_threshold: bool) -> RobustSettings:
    state = _state(request.config)
    marker = request.node.get_closest_marker("robust")
    if marker is None:
        return state.base
    return from_marker(marker.kwargs, marker.args, state.base,
                       require_threshold=require_threshold)


def _fixture_value(request: pytest.FixtureRequest, name: str, role: str, arg: str,
                   ini: str, optional: bool = False) -> Any:
    try:
        return request.getfixturevalue(name)
    except pytest.FixtureLookupError:
        if optional:
            return None
        raise AdvRobustError(
            f"fixture {name!r} not found: define it in conftest.py to return the {role}, "
            f"or name another fixture with robust({arg}=...) or the ini option {ini}") from None


def _user_objects(request: pytest.FixtureRequest, settings: RobustSettings,
                  need_train: bool = True):
    """The user's model, evaluation data and (optional, only when ``need_train``)
    GAN training data."""
    model = _fixture_value(request, settings.model, "model", "model", "advrobust_model_fixture")
    data = _fixture_value(request, settings.data, "evaluation data", "data",
                          "advrobust_data_fixture")
    train = _fixture_value(request, settings.train_data, "GAN training data", "",
                           "advrobust_train_data_fixture", optional=True) if need_train else None
    return model, data, train


def _quiet(config: pytest.Config) -> bool:
    return config.get_verbosity() < -1  # -qq; a plain -q still shows training progress


def _progress(config: pytest.Config):
    from .progress import WORKERINPUT_KEY, worker_writer

    if _quiet(config):
        return None
    worker = getattr(config, "workerinput", None)
    if worker is not None:  # an xdist worker: the controller shows what it writes
        folder = worker.get(WORKERINPUT_KEY)
        return worker_writer(folder, worker.get("workerid", "gw")) if folder else None
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is None:
        return None

    capman = config.pluginmanager.get_plugin("capturemanager")

    def write(line: str) -> None:
        # Training runs inside a fixture, where output is captured: step out of
        # capture so that long trainings show progress as they go.
        text = line if line.startswith("advrobust") else f"advrobust: {line}"
        if capman is None:
            tr.write_line(text)
            return
        with capman.global_and_fixture_disabled():
            tr.ensure_newline()
            tr.write_line(text)
    return write


def _warn(message: str) -> None:
    warnings.warn(AdvRobustWarning(message), stacklevel=2)


def _outcome(request: pytest.FixtureRequest, settings: RobustSettings) -> Any:
    """Evaluate (or reuse the evaluation of) this test's model, data and settings."""
    from .runner import needs_training_data, run_evaluation, torch_threads

    state = _state(request.config)
    need_train = needs_training_data(settings)
    model, data, train = _user_objects(request, settings, need_train)
    key = (id(model), id(data), id(train), settings.evaluation_key())
    hit = state.outcomes.get(key)
    if hit is not None:  # same numbers; this test's own threshold and tolerance
        training = hit[0].training
        if training is not None:  # nothing was trained for this test: the training's own facts
            mode = "memory" if training.get("cache") == "not cached" else "cached"
            training = dict(training, mode=mode,
                            trained_mode=training.get("trained_mode", training.get("mode")))
        return dataclasses.replace(hit[0], settings=settings, training=training)
    cache_dir = _cache_dir(request.config) if need_train else None
    with torch_threads(state.values["threads"]):
        outcome = run_evaluation(model, data, settings, train_data=train,
                                 cache_dir=cache_dir, retrain=state.retrain,
                                 progress=_progress(request.config), warn=_warn,
                                 quiet=_quiet(request.config), store=_store(state))
    if state.cache_note and outcome.training is not None:
        mode = outcome.training.get("mode")  # "cached" here means this session's memory
        outcome.training = dict(outcome.training, cache="not cached",
                                mode="memory" if mode == "cached" else mode)
    state.outcomes[key] = (outcome, model, data, train)  # keep objects alive: ids stay unique
    return outcome


def _fail_cleanly(exc: AdvRobustError) -> None:
    raise pytest.fail.Exception(str(exc), pytrace=False) from None


def _warm_only(request: pytest.FixtureRequest, settings: RobustSettings) -> None:
    """``--advrobust-warm``: obtain the generators this test needs, then skip it."""
    from .runner import torch_threads
    from .warm import warm_generators

    state = _state(request.config)
    model, data, train = _user_objects(request, settings)
    with torch_threads(state.values["threads"]):
        facts = warm_generators(model, data, settings, train_data=train,
                                cache_dir=_cache_dir(request.config), retrain=state.retrain,
                                progress=_progress(request.config), warn=_warn,
                                store=_store(state))
    modes = ", ".join(f"{f.get('role') or 'eps=%g' % f['eps']}: {f['mode']}"
                      for f in facts) or "no GAN attack"
    pytest.skip(f"advrobust warm: {modes}")


@pytest.fixture(autouse=True)
def _advrobust_gate(request: pytest.FixtureRequest) -> None:
    """Evaluates marked tests during setup; the verdict is given after the test body."""
    state = _state(request.config)
    if not state.enabled or not isinstance(request.node, pytest.Item):
        return
    marker = request.node.get_closest_marker("robust")
    if marker is None and not any(n in request.fixturenames for n in ROBUST_FIXTURES):
        return
    try:
        settings = _settings_for(request, require_threshold=True)
        if state.warm:
            _warm_only(request, settings)
        if marker is not None:
            request.node.stash[OUTCOME_KEY] = _outcome(request, settings)
    except AdvRobustError as exc:
        _fail_cleanly(exc)


@pytest.fixture
def adversarial_batch(request: pytest.FixtureRequest):
    """The evaluation batch and its adversarial twin: ``x``, ``y``, ``x_adv``,
    ``settings``, ``report`` and ``evaluate(model)``. Uses the test's ``robust``
    marker when it has one, else the command-line / ini defaults."""
    from .batch import AdversarialBatch

    try:
        settings = _settings_for(request, require_threshold=False)
        outcome = request.node.stash.get(OUTCOME_KEY, None) or _outcome(request, settings)
    except AdvRobustError as exc:
        _fail_cleanly(exc)
    return AdversarialBatch(outcome, build_report(request.node.nodeid, outcome))


@pytest.fixture
def gan_generator(request: pytest.FixtureRequest):
    """The trained (or cached) generator for this test's model, data and settings:
    an ``nn.Module`` in eval mode whose output on ``x`` is a bounded ``x_adv``."""
    from .runner import torch_threads
    from .warm import generator_for

    state = _state(request.config)
    try:
        settings = _settings_for(request, require_threshold=False)
        model, data, train = _user_objects(request, settings)
        with torch_threads(state.values["threads"]):
            return generator_for(model, data, settings, train_data=train,
                                 cache_dir=_cache_dir(request.config), retrain=state.retrain,
                                 progress=_progress(request.config), warn=_warn,
                                 store=_store(state))
    except AdvRobustError as exc:
        _fail_cleanly(exc)


@pytest.fixture
def conditional_generator(request: pytest.FixtureRequest):
    """The class-conditional sample generator of ``attack="generated"``, trained on
    ``robust_train_data`` (or cached): an ``nn.Module`` in eval mode mapping (noise
    ``(N, noise_dim)``, class index ``(N,)``) to samples, with ``sample(n, seed, classes)``
    giving ``(x, y)``, ``labels``, and ``reference`` (the validity judge)."""
    from .generated.fixture import conditional_generator_for
    from .runner import torch_threads

    state = _state(request.config)
    try:
        settings = _settings_for(request, require_threshold=False)
        model, data, train = _user_objects(request, settings)
        with torch_threads(state.values["threads"]):
            return conditional_generator_for(model, data, settings, train_data=train,
                                             cache_dir=_cache_dir(request.config),
                                             retrain=state.retrain,
                                             progress=_progress(request.config), warn=_warn,
                                             store=_store(state))
    except AdvRobustError as exc:
        _fail_cleanly(exc)


# ---------------------------------------------------------------- the gate

def _judge(item: pytest.Item, outcome: Any) -> Optional[str]:
    """Build the report, attach it to the item, return a failure message or None."""
    state = _state(item.config)
    rep = build_report(item.nodeid, outcome)
    item.config.hook.pytest_advrobust_report(report=rep, item=item)
    problems: List[str] = []
    problems += _gate_checks(state, item, outcome)
    failing = outcome.failing_points()
    if failing:
        problems.append(failure_message(rep, failing))
    for flag in rep["sanity"]:
        text = f"sanity flag {flag['flag']}: {flag['message']} {flag.get('suggests', '')}".strip()
        if state.strict:
            problems.append(text + " (--advrobust-strict)")
        else:
            _warn(f"{item.nodeid}: {text}")
    if state.compare:
        problems += _compare_with_baseline(item, rep, outcome.settings)
    if state.images_dir is not None:
        from .pictures import write_pictures

        rep["images"] = write_pictures(state.images_dir, item.nodeid, outcome, rep,
                                       lambda exc: _missing_package(state, exc))
    if problems and rep["verdict"] == "pass":
        rep["verdict"] = "fail"
    item.user_properties.extend(junit_properties(rep))
    item.user_properties.append(("advrobust_report", json.dumps(rep, sort_keys=True)))
    return "\n".join(problems) if problems else None


def _gate_checks(state: _State, item: pytest.Item, outcome: Any) -> List[str]:
    """Clean accuracy at chance fails the test; a baseline that cannot fall warns."""
    from .gatechecks import clean_accuracy_problem, stuck_baseline_warning

    s, clean = outcome.settings, outcome.clean
    problem = clean_accuracy_problem(int(clean.correct.sum()), int(clean.correct.numel()),
                                     clean.num_classes, s.min_clean_accuracy, s.model, s.data)
    if state.save_baseline or state.compare:
        stuck = stuck_baseline_warning(outcome.numbers["adversarial_accuracy"],
                                       clean.num_classes, outcome.numbers["eps"], s.attack_label)
        if stuck:
            _warn(f"{item.nodeid}: {stuck}")
    return [problem] if problem else []


def _load_baseline(state: _State) -> Any:
    from .baseline import load_baseline

    if not state.baseline_loaded:
        state.baseline = load_baseline(state.baseline_path)
        state.baseline_loaded = True
    return state.baseline


def _compare_with_baseline(item: pytest.Item, rep: Dict[str, Any],
                           settings: RobustSettings) -> List[str]:
    from .baseline import compare

    state = _state(item.config)
    baseline = _load_baseline(state) or {"tests": {}}
    entry = baseline.get("tests", {}).get(item.nodeid)
    cmp = compare(entry, rep, settings.tolerance)
    rep["baseline"] = cmp.to_report()
    if cmp.status == "regressed":
        return [cmp.message]
    if cmp.status == "missing":
        policy = state.values["missing_baseline"]
        text = (f"no baseline entry for this test in {state.baseline_path.name}; "
                "save one with --advrobust-save-baseline")
        if policy == "fail":
            return [text + " (--advrobust-missing-baseline=fail)"]
        if policy == "warn":
            _warn(f"{item.nodeid}: {text}")
        else:
            rep["baseline"]["status"] = "missing (skipped)"
    return []


def _missing_package(state: _State, exc: Exception) -> None:
    """A picture needs a package that is not installed: say so once, keep the verdict."""
    if str(exc) not in state.missing_warned:
        state.missing_warned.add(str(exc))
        _warn(f"{exc} The verdicts and numbers are not affected.")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    outcome = item.stash.get(OUTCOME_KEY, None)
    if outcome is None:
        return (yield)
    try:
        result = yield
    except BaseException:
        _judge_quietly(item, outcome)
        raise
    try:
        message = _judge(item, outcome)
    except AdvRobustError as exc:
        _fail_cleanly(exc)
    if message:
        pytest.fail(message, pytrace=False)
    return result


def _judge_quietly(item: pytest.Item, outcome: Any) -> None:
    try:
        _judge(item, outcome)
    except Exception:  # the body already failed; its error is the one to show
        pass


# ------------------------------------------------ collecting and reporting

class _ReportCollector:
    """Gathers the per-test reports from the test reports themselves, so that the
    same code serves a plain run and an xdist controller."""

    def __init__(self, state: _State):
        self.state = state

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        for name, value in report.user_properties:
            if name == "advrobust_report":
                self.state.reports[report.nodeid] = json.loads(value)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    state = _state(session.config)
    if state.enabled and state.compare and _is_controller(session.config):
        _check_fingerprint(session.config, state)


def _current_environment(state: _State) -> Dict[str, Any]:
    from .baseline import environment_fingerprint

    from .modelguard import resolve_device

    try:
        device = str(resolve_device(state.values["device"]))
    except AdvRobustError:
        device = "cpu"
    return environment_fingerprint(device, state.values["seed"])


def _check_fingerprint(config: pytest.Config, state: _State) -> None:
    from .baseline import fingerprint_differences

    try:
        baseline = _load_baseline(state)
    except AdvRobustError as exc:
        raise pytest.UsageError(str(exc)) from None
    if not baseline or not baseline.get("environment"):
        return
    diffs = fingerprint_differences(baseline["environment"], _current_environment(state))
    if diffs:
        msg = (f"baseline {state.baseline_path.name} was recorded in another environment "
               f"({'; '.join(diffs)}); numbers may differ for that reason alone")
        state.notes.append(msg)
        config.issue_config_time_warning(AdvRobustWarning(msg), stacklevel=2)


def _files_narrowed_by_args(config: pytest.Config) -> Set[str]:
    """Test files (as in node ids) that the command line narrowed to some of their
    tests (``tests/test_x.py::test_y``): this run did not collect them in full."""
    files = set()
    for arg in config.args:
        if "::" not in str(arg):
            continue
        path = os.path.abspath(os.path.join(config.invocation_params.dir,
                                            str(arg).split("::", 1)[0]))
        rel = os.path.relpath(path, config.rootpath)
        if not rel.startswith(os.pardir):
            files.add(Path(rel).as_posix())
    return files


def _save_baseline(config: pytest.Config, state: _State) -> None:
    from .baseline import save_baseline

    existing = _load_baseline(state)
    collected = set(state.collected)
    # Entries of test files that this run did not collect in full are kept, unless
    # the file is gone: a partial run must not prune the rest of the suite.
    narrowed = _files_narrowed_by_args(config)
    collected_files = {nodeid.split("::", 1)[0] for nodeid in state.collected}
    for nodeid in (existing or {}).get("tests", {}):
        path = nodeid.split("::", 1)[0]
        if (path not in collected_files or path in narrowed) and \
                (Path(config.rootpath) / path).exists():
            collected.add(nodeid)
    reports = list(state.reports.values())
    if state.compare:  # a run that regresses does not move its own baseline
        held = [r["nodeid"] for r in reports
                if (r.get("baseline") or {}).get("status") == "regressed"]
        reports = [r for r in reports if r["nodeid"] not in held]
        if held:
            state.notes.append("baseline entries of regressed tests not overwritten "
                               "(--advrobust-compare): " + ", ".join(held))
    result = save_baseline(state.baseline_path, reports,
                           mode=state.save_baseline, existing=existing, collected=collected,
                           environment=_current_environment(state))
    state.notes.append(f"baseline written to {result.path}: {len(result.written)} "
                       f"entries written, {len(result.kept)} kept")
    if result.pruned:
        state.notes.append("pruned baseline entries of tests that no longer exist: " +
                           ", ".join(result.pruned))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    state = _state(config)
    if not _is_controller(config):
        config.workeroutput["advrobust_collected"] = sorted(state.collected)
        return
    if state.relay is not None:
        state.relay.stop()
        state.relay = None
    if not state.enabled or state.warm:
        return
    _write_markdown(state)
    if state.json_path is not None:
        from .report import write_json_report

        write_json_report(state.json_path, list(state.reports.values()),
                          _current_environment(state), __version__)
        state.notes.append(f"JSON report written to {state.json_path}")
    if state.save_baseline:
        try:
            _save_baseline(config, state)
        except AdvRobustError as exc:
            state.notes.append(f"baseline NOT written: {exc}")
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _write_markdown(state: _State) -> None:
    from .markdown import summary_targets, write_summary

    targets = summary_targets(state.markdown_path)
    if targets and state.reports:
        for path in write_summary(list(state.reports.values()), targets):
            state.notes.append(f"Markdown summary written to {path}")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    state = _state(config)
    if not state.enabled or not (state.reports or state.notes):
        return
    terminalreporter.section("advrobust")
    if state.reports:
        for line in summary_lines(list(state.reports.values())):
            terminalreporter.write_line(line)
    for note in state.notes:
        terminalreporter.write_line(note)


def _terminal_line(config: pytest.Config):
    tr = config.pluginmanager.get_plugin("terminalreporter")

    def show(line: str) -> None:
        if tr is None:
            return
        tr.ensure_newline()
        writer = getattr(tr, "_tw", None)  # xdist's progress dots do not end their line
        if writer is not None and getattr(writer, "width_of_current_line", 0):
            tr.write("\n")
        tr.write_line(line)
    return show


class _XdistHooks:
    """Registered only when pytest-xdist is installed."""

    def __init__(self, state: _State):
        self.state = state

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """Give each worker the folder whose progress lines the controller shows."""
        from .progress import WORKERINPUT_KEY, ProgressRelay

        state = self.state
        if not state.enabled or _quiet(node.config):
            return
        if state.relay is None:
            state.relay = ProgressRelay(_terminal_line(node.config))
        node.workerinput[WORKERINPUT_KEY] = state.relay.folder

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        out = getattr(node, "workeroutput", None) or {}
        state = self.state
        state.collected.update(out.get("advrobust_collected", ()))
