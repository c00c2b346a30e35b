"""The state of one pytest run of pytest-advrobust, and what the hooks hand off to it.

One :class:`AdvRobustSession` is made in ``pytest_configure`` and kept in
``config.stash``; the hooks and fixtures of the plugin's ``__init__`` call its methods.
It owns the run's options, the evaluations made so far (so that tests sharing a
model, data and settings evaluate once), the reports gathered for the summary,
JSON, Markdown and baseline, and the notes shown at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Generator, List, Optional, Set

import pytest

from ..errors import AdvRobustError, warn
from ..runtime import Runtime
from ..settings.marker import resolve_settings
from ..settings.robust import RobustSettings, base_settings
from .options import flag, path_option, read_values
from .terminal import lock_wait_lines, progress_writer, quiet
from .user_fixtures import ROBUST_FIXTURES, SKIP_REASON, fail_cleanly, is_robust, user_objects

__all__ = ["ROBUST_FIXTURES", "SKIP_REASON", "AdvRobustSession", "fail_cleanly", "is_robust"]


@dataclass
class AdvRobustSession:
    config: pytest.Config
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
    errored: Set[str] = field(default_factory=set)  # robust tests that failed or errored
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

    # ------------------------------------------------------------ configure

    @classmethod
    def from_config(cls, config: pytest.Config) -> AdvRobustSession:
        """Read the options; nothing here touches the disk or imports torch."""
        from ..settings.cache_folder import choose_cache_dir

        values = read_values(config)
        # A run without --advrobust must not depend on a writable checkout: the cache
        # folder is made (and probed) on first use, by cache_folder.
        cache_dir, cache_default = choose_cache_dir(
            config.getoption("advrobust_cache_dir"),
            config.getini("advrobust_cache_dir"),
            os.environ,
            config.rootpath,
            getattr(config, "cache", None) is not None,
        )
        baseline = (
            path_option(config, "advrobust_baseline", "advrobust_baseline")
            or Path(config.rootpath) / "advrobust-baseline.json"
        )
        warm = bool(config.getoption("advrobust_warm"))
        return cls(
            config=config,
            enabled=warm or flag(config, "advrobust", "advrobust"),
            values=values,
            base=base_settings(values),
            cache_dir=cache_dir,
            json_path=path_option(config, "advrobust_json", "advrobust_json"),
            images_dir=path_option(config, "advrobust_images", "advrobust_images"),
            baseline_path=baseline,
            save_baseline=config.getoption("advrobust_save_baseline"),
            compare=flag(config, "advrobust_compare", "advrobust_compare"),
            strict=flag(config, "advrobust_strict", "advrobust_strict"),
            retrain=bool(config.getoption("advrobust_retrain")),
            warm=warm,
            markdown_path=path_option(config, "advrobust_markdown", "advrobust_markdown"),
            cache_default=cache_default,
        )

    def register_attacks(self) -> None:
        """Let other plugins add attacks (the pytest_advrobust_register_attacks hook)."""
        from ..attack_table import register_attack

        self.config.hook.pytest_advrobust_register_attacks(register=register_attack)

    @property
    def is_controller(self) -> bool:
        """Not an xdist worker: the process that writes the summary and files."""
        return not hasattr(self.config, "workerinput")

    def cache_folder(self) -> Optional[Path]:
        """The GAN cache folder, made and probed on first use; ``None`` when it cannot be
        written (then generators live in memory for the session, with one warning)."""
        from ..settings.cache_folder import open_cache_folder

        if self.cache_checked:
            return self.cache_dir
        self.cache_checked = True
        make = (lambda: self.config.cache.mkdir("advrobust")) if self.cache_default else None
        self.cache_dir, self.cache_note = open_cache_folder(self.cache_dir, make)
        if self.cache_note is not None:
            self.notes.append(self.cache_note)
            warn(self.cache_note)
        return self.cache_dir

    def session_data(self) -> Any:
        """Fixture values converted to tensors once per session."""
        if self.store is None:
            from ..inputs.session_data import SessionData

            self.store = SessionData()
        return self.store

    def load_baseline(self) -> Any:
        """The baseline file, read once (``None`` when there is none)."""
        from ..reports.baseline import load_baseline

        if not self.baseline_loaded:
            self.baseline = load_baseline(self.baseline_path)
            self.baseline_loaded = True
        return self.baseline

    def missing_package(self, exc: Exception) -> None:
        """A picture needs a package that is not installed: say so once, keep the verdict."""
        if str(exc) not in self.missing_warned:
            self.missing_warned.add(str(exc))
            warn(f"{exc} The verdicts and numbers are not affected.")

    # ----------------------------------------------------------- collection

    def item_collected(self, item: pytest.Item) -> None:
        if is_robust(item):
            self.collected.add(item.nodeid)

    def skip_unless_enabled(self, items: List[pytest.Item]) -> None:
        """Without --advrobust, robust tests are skipped with a reason that says so."""
        if self.enabled:
            return
        skip = pytest.mark.skip(reason=SKIP_REASON)
        for item in items:
            if is_robust(item):
                item.add_marker(skip)

    # ------------------------------------------------------------- fixtures

    def settings_for(
        self, request: pytest.FixtureRequest, require_threshold: bool
    ) -> RobustSettings:
        marker = request.node.get_closest_marker("robust")
        settings, warning = resolve_settings(marker, self.base, require_threshold)
        if warning:
            warn(warning)
        return settings

    def _runtime(self, label: Optional[str] = None, quiet: bool = False) -> Runtime:
        """What every evaluation and generator look-up borrows from this run; ``label``
        (the test the progress lines name) adds the longest silence between them."""
        every = self.values["progress_seconds"]
        extra = {} if label is None else dict(label=label, progress_every=every)
        return Runtime(
            cache_dir=self.cache_folder(),
            retrain=self.retrain,
            progress=progress_writer(self.config),
            warn=warn,
            quiet=quiet,
            store=self.session_data(),
            **extra,
        )

    def _running(self) -> Any:
        """Torch's threads as asked, and waits for a cache lock that say who holds it."""
        from ..inputs.prepare import torch_threads

        stack = contextlib.ExitStack()
        stack.enter_context(torch_threads(self.values["threads"]))
        stack.enter_context(lock_wait_lines(self.config, self.values["progress_seconds"]))
        return stack

    def gate_outcome(self, request: pytest.FixtureRequest) -> Any:
        """The autouse gate: evaluate a marked test during setup (its verdict is given
        after the body); ``None`` for any other test."""
        if not self.enabled or not isinstance(request.node, pytest.Item):
            return None
        marker = request.node.get_closest_marker("robust")
        if marker is None and not any(n in request.fixturenames for n in ROBUST_FIXTURES):
            return None
        try:
            settings = self.settings_for(request, require_threshold=True)
            if self.warm:
                self._warm_only(request, settings)
            return self.outcome(request, settings) if marker is not None else None
        except AdvRobustError as exc:
            fail_cleanly(exc)

    def outcome(self, request: pytest.FixtureRequest, settings: RobustSettings) -> Any:
        """Evaluate (or reuse the evaluation of) this test's model, data and settings."""
        from ..attack_table import needs_training_data
        from ..evaluation.run import run_evaluation

        need_train = needs_training_data(settings.attacks)
        model, data, train = user_objects(request, settings, need_train)
        key = (id(model), id(data), id(train), settings.evaluation_key())
        hit = self.outcomes.get(key)
        if hit is not None:  # same numbers; this test's own threshold and tolerance
            return hit[0].for_test(settings)
        with self._running():
            runtime = self._runtime(request.node.nodeid, quiet(self.config))
            outcome = run_evaluation(model, data, settings, train_data=train, runtime=runtime)
        if self.cache_note:
            outcome.kept_in_memory()
        self.outcomes[key] = (outcome, model, data, train)  # keep objects alive: ids stay unique
        return outcome

    def _warm_only(self, request: pytest.FixtureRequest, settings: RobustSettings) -> None:
        """``--advrobust-warm``: obtain the generators this test needs, then skip it."""
        from ..attack_table import makes_samples
        from ..evaluation.warm import warm_generators

        model, data, train = user_objects(request, settings)
        with self._running():
            label = None if makes_samples(settings.attacks) else request.node.nodeid
            facts = warm_generators(
                model, data, settings, train_data=train, runtime=self._runtime(label)
            )
        modes = (
            ", ".join(f"{f.get('role') or 'eps=%g' % f['eps']}: {f['mode']}" for f in facts)
            or "no GAN attack"
        )
        pytest.skip(f"advrobust warm: {modes}")

    def adversarial_batch(self, request: pytest.FixtureRequest, outcome: Any) -> Any:
        """The ``adversarial_batch`` fixture's value (``outcome``: the gate's, if any)."""
        from ..reports.report import build_report
        from .adversarial_batch import AdversarialBatch

        try:
            settings = self.settings_for(request, require_threshold=False)
            outcome = outcome or self.outcome(request, settings)
        except AdvRobustError as exc:
            fail_cleanly(exc)
        return AdversarialBatch(outcome, build_report(request.node.nodeid, outcome))

    def generator(self, request: pytest.FixtureRequest, conditional: bool) -> Any:
        """The ``gan_generator`` (or, with ``conditional``, ``conditional_generator``)
        fixture's value: trained, or read from the cache."""
        if conditional:
            from ..evaluation.warm import conditional_generator_for as look_up
        else:
            from ..evaluation.warm import generator_for as look_up
        try:
            settings = self.settings_for(request, require_threshold=False)
            model, data, train = user_objects(request, settings)
            with self._running():
                runtime = self._runtime(None if conditional else request.node.nodeid)
                return look_up(model, data, settings, train_data=train, runtime=runtime)
        except AdvRobustError as exc:
            fail_cleanly(exc)

    # ------------------------------------------------------------- the gate

    def gate_policy(self) -> Any:
        """What the gate is asked to do in this run (:class:`~.judge.GatePolicy`)."""
        from .judge import GatePolicy

        return GatePolicy(
            strict=self.strict,
            compare=self.compare,
            saving=bool(self.save_baseline),
            missing_baseline=self.values["missing_baseline"],
            baseline_path=self.baseline_path,
            baseline=self.load_baseline,
            images_dir=self.images_dir,
            missing_package=self.missing_package,
        )

    def judged_call(self, item: pytest.Item, outcome: Any) -> Generator[None, Any, Any]:
        """The body of the ``pytest_runtest_call`` wrapper: run the test, then judge it."""
        from .judge import judge

        if outcome is None:
            return (yield)
        try:
            result = yield
        except BaseException:
            try:
                judge(self.gate_policy(), item, outcome)
            except Exception:  # the body already failed; its error is the one to show
                pass
            raise
        try:
            message = judge(self.gate_policy(), item, outcome)
        except AdvRobustError as exc:
            fail_cleanly(exc)
        if message:
            pytest.fail(message, pytrace=False)
        return result

    def collect_report(self, report: pytest.TestReport) -> None:
        """Keep each test's advrobust report from its test report (plain run or xdist)."""
        if report.failed and "robust" in report.keywords and report.when != "teardown":
            self.errored.add(report.nodeid)  # listed as such unless a report follows below
        if report.when != "call":
            return
        for name, value in report.user_properties:
            if name == "advrobust_report":
                self.reports[report.nodeid] = json.loads(value)

    # -------------------------------------------------- session start / end

    def start(self) -> None:
        """Before collection: warn when the baseline comes from another environment."""
        from .baseline_run import check_fingerprint

        if self.enabled and self.compare and self.is_controller:
            baseline = (self.baseline_path, self.load_baseline)
            check_fingerprint(self.config, baseline, self.values, self.notes)

    def finish(self, session: pytest.Session) -> None:
        """Write the JSON report, the Markdown table and the baseline (controller only)."""
        if not self.is_controller:
            self.config.workeroutput["advrobust_collected"] = sorted(self.collected)
            return
        if self.relay is not None:
            self.relay.stop()
            self.relay = None
        if not self.enabled or self.warm:
            return
        from .baseline_run import write_json, write_markdown

        write_markdown(self.markdown_path, self.reports, self.errored, self.notes)
        if self.json_path is not None:
            write_json(self.json_path, list(self.reports.values()), self.values, self.notes)
        if self.save_baseline:
            from .baseline_run import RunBaseline, save_run_baseline

            try:
                run = RunBaseline(
                    path=self.baseline_path,
                    mode=self.save_baseline,
                    existing=self.load_baseline(),
                    collected=set(self.collected),
                    reports=list(self.reports.values()),
                    compare=self.compare,
                    values=self.values,
                )
                save_run_baseline(self.config, run, self.notes)
            except AdvRobustError as exc:
                self.notes.append(f"baseline NOT written: {exc}")
                session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def terminal_summary(self, terminalreporter: Any) -> None:
        """The ``advrobust`` section: one line per robust test, then the notes."""
        from ..reports.report import summary_lines

        if not self.enabled or not (self.reports or self.notes):
            return
        terminalreporter.section("advrobust")
        if self.reports:
            for line in summary_lines(list(self.reports.values())):
                terminalreporter.write_line(line)
        for note in self.notes:
            terminalreporter.write_line(note)
