"""The command-line options and ini keys of pytest-advrobust, and reading them back.

Every option is also an ini key. The value options (device, seed, eps, ...) come
from ``settings.VALUE_OPTIONS``; the rest are the run's switches and paths below.
Nothing here imports torch or touches the disk.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import pytest

from ..errors import AdvRobustError
from ..settings.marker import MARKER_HELP
from ..settings.robust import DEFAULTS, VALUE_OPTIONS, resolve_value

GROUP = ("advrobust", "adversarial robustness tests (pytest-advrobust)")

MARKER_LINE = MARKER_HELP  # the help pytest --markers shows, built from the argument table

# Help of each value option of settings.VALUE_OPTIONS (its ini key is appended).
VALUE_HELP = {
    "device": "device for attacks and GAN training: auto (default), cpu, cuda, cuda:N",
    "seed": "seed of sample selection, attacks and GAN training (default 0)",
    "samples": "default number of evaluation samples n (default 512)",
    "eps": "default perturbation bound (default 0.1 for linf, 0.5 for l2)",
    "batch_size": "batch size for attacks and evaluation (default 256)",
    "sanity": "sanity checks against gradient masking: off, cheap (default), full",
    "tolerance": "largest allowed fall of adversarial accuracy below the baseline (default 0.02)",
    "significance": "one-sided significance level at which the exact paired test must find "
    "a fall beyond the tolerance real before --advrobust-compare fails a test (default 0.05)",
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
    "attack_input": "for models with several inputs, the one the attack perturbs: a "
    "position (0, 1, ...) or a key (default auto: the first floating-point tensor)",
    "progress_seconds": "longest time in seconds between two progress lines of a long "
    "evaluation (default 30)",
}

# (option, METAVAR or None for an on/off switch, help, help of its ini key or None).
# The ini key is the option's name with underscores ("--advrobust-json": advrobust_json);
# an on/off switch with an ini key is a bool ini.
SWITCHES = (
    (
        "--advrobust",
        None,
        "run robustness tests (marked robust or using adversarial_batch / gan_generator); "
        "without it they are skipped",
        "run robustness tests by default",
    ),
    (
        "--advrobust-json",
        "PATH",
        "write the JSON report (all robust tests) to PATH",
        "path of the JSON report",
    ),
    (
        "--advrobust-cache-dir",
        "DIR",
        "GAN cache folder (default .pytest_cache/d/advrobust, or $ADVROBUST_CACHE_DIR)",
        "GAN cache folder",
    ),
    (
        "--advrobust-retrain",
        None,
        "train generators even when the cache holds them, and evaluate again instead of "
        "reusing a stored evaluation",
        None,
    ),
    (
        "--advrobust-baseline",
        "PATH",
        "baseline file (default <rootdir>/advrobust-baseline.json)",
        "baseline file",
    ),
    (
        "--advrobust-compare",
        None,
        "fail tests whose adversarial accuracy fell below the baseline by more than the "
        "tolerance, beyond noise by an exact paired test of the samples that changed",
        "compare against the baseline",
    ),
    ("--advrobust-strict", None, "turn sanity flags into test errors", "sanity flags fail tests"),
    (
        "--advrobust-images",
        "DIR",
        "write a PNG gallery (and curve) per robust test into DIR",
        "folder for PNG galleries",
    ),
    (
        "--advrobust-markdown",
        "PATH",
        "write a Markdown table of every robust test to PATH (it is also appended to "
        "$GITHUB_STEP_SUMMARY when set)",
        "path of the Markdown summary table",
    ),
    (
        "--advrobust-warm",
        None,
        "only train and cache the generators the selected tests need, then skip them "
        "(used by `advrobust warm`)",
        None,
    ),
)

SAVE_BASELINE = (
    "--advrobust-save-baseline",
    dict(
        nargs="?",
        const="all",
        default=None,
        choices=("all", "new"),
        help="write the baseline from this run; =new adds only missing entries (write =all or "
        "put it after the test paths, since it takes an optional value)",
    ),
)

# (ini key, help, settings field) of the fixture names
FIXTURE_INIS = (
    ("advrobust_model_fixture", "default name of the model fixture", "model_fixture"),
    ("advrobust_data_fixture", "default name of the data fixture", "data_fixture"),
    (
        "advrobust_train_data_fixture",
        "default name of the optional fixture with data for GAN training",
        "train_data_fixture",
    ),
)


def add_options(parser: pytest.Parser) -> None:
    """Register every option and ini key of the plugin (the pytest_addoption hook)."""
    group = parser.getgroup(*GROUP)
    _add_switch(parser, group, *SWITCHES[0])
    for name, (opt, ini_name, parse) in VALUE_OPTIONS.items():
        group.addoption(
            opt,
            type=parse,
            default=None,
            metavar=name.upper(),
            help=f"{VALUE_HELP[name]}. ini: {ini_name}",
        )
        parser.addini(ini_name, VALUE_HELP[name])
    for switch in SWITCHES[1:]:
        _add_switch(parser, group, *switch)
        if switch[0] == "--advrobust-baseline":
            group.addoption(SAVE_BASELINE[0], **SAVE_BASELINE[1])
    for ini_name, help_text, field in FIXTURE_INIS:
        parser.addini(ini_name, help_text, default=DEFAULTS[field])


def _add_switch(
    parser: pytest.Parser, group: Any, opt: str, metavar: Optional[str], help: str, ini: Any
) -> None:
    name = opt.lstrip("-").replace("-", "_")
    kwargs: Dict[str, Any] = {"metavar": metavar} if metavar else {"action": "store_true"}
    default = None if (metavar or ini) else False
    group.addoption(opt, default=default, help=f"{help}. ini: {name}" if ini else help, **kwargs)
    if ini is not None:
        parser.addini(name, ini, **({} if metavar else {"type": "bool", "default": False}))


def path_options() -> List[str]:
    """The options whose value is a file or folder."""
    return [opt for opt, metavar, _, _ in SWITCHES if metavar in ("PATH", "DIR")]


def check_path_values(args: Sequence[str]) -> None:
    """Stop when a path-valued option is written with its value after a space.

    pytest chooses its rootdir and ini file from the command line before it
    knows this plugin's options, so it takes that value for a test path: another
    rootdir, and the ini file (eps, preprocessing, the baseline) silently not
    read. Raises ``pytest.UsageError`` saying to write ``--option=VALUE``.
    """
    paths = set(path_options())
    for i, arg in enumerate(args[:-1]):
        if arg == "--":
            return
        if arg in paths and not str(args[i + 1]).startswith("-"):
            value = args[i + 1]
            raise pytest.UsageError(
                f"{arg} {value}: write {arg}={value} (with '='); pytest reads a value after a "
                "space as a test path before it knows this option, which can choose another "
                "rootdir and leave your ini file unread"
            )


def flag(config: pytest.Config, opt: str, ini: str) -> bool:
    """A switch given on the command line, else its ini key."""
    value = config.getoption(opt)
    return bool(value) if value is not None else bool(config.getini(ini))


def path_option(config: pytest.Config, opt: str, ini: str) -> Optional[Path]:
    """A path option (or its ini key), relative paths taken from the rootdir."""
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


def read_values(config: pytest.Config) -> Dict[str, Any]:
    """The value options resolved (command line over ini over default) and the
    fixture names; a bad value is a usage error naming the option."""
    values: Dict[str, Any] = {}
    try:
        for name, (opt, ini, _) in VALUE_OPTIONS.items():
            values[name] = resolve_value(name, config.getoption(opt), config.getini(ini))
    except AdvRobustError as exc:
        raise pytest.UsageError(str(exc)) from None
    for ini, _, field in FIXTURE_INIS:
        values[field] = _identifier_ini(config, ini)
    return values
