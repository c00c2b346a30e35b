"""pytest hooks of pytest-advrobust (the ``pytest11`` entry point): each hands off to the
run's AdvRobustSession.

The session (:mod:`.session`) is made in ``pytest_configure`` and kept in
``config.stash``; options are declared in :mod:`.options`, the verdict of a test is
given in :mod:`.judge`. Nothing heavy (torch) is imported until a robust test runs.
"""

from __future__ import annotations

from typing import Any, List

import pytest

from ..errors import AdvRobustWarning
from .options import MARKER_LINE, add_options, check_path_values
from .session import ROBUST_FIXTURES, SKIP_REASON, AdvRobustSession

__all__ = ["OUTCOME_KEY", "ROBUST_FIXTURES", "SESSION_KEY", "SKIP_REASON", "AdvRobustWarning"]

SESSION_KEY = pytest.StashKey[AdvRobustSession]()
OUTCOME_KEY = pytest.StashKey[Any]()  # a marked test's evaluation, made by the gate


def _session(config: pytest.Config) -> AdvRobustSession:
    return config.stash[SESSION_KEY]


# ----------------------------------------------------------- configuration


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_load_initial_conftests(early_config: pytest.Config, parser: Any, args: List[str]):
    """Before the rootdir's conftests load: no path option may be written with a space."""
    check_path_values(args)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


@pytest.hookimpl(trylast=True)  # after the cache provider has set config.cache
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_LINE)
    config.stash[SESSION_KEY] = AdvRobustSession.from_config(config)
    _register(config, config.stash[SESSION_KEY])


def _register(config: pytest.Config, session: AdvRobustSession) -> None:
    """Attacks from other plugins, then the hook classes: the report collector always,
    the xdist and pytest-html hooks when those plugins are installed."""
    session.register_attacks()
    config.pluginmanager.register(_ReportCollector(session), "advrobust-reports")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(session), "advrobust-xdist")
    if config.pluginmanager.hasplugin("html"):
        from .html_report import HtmlHooks

        config.pluginmanager.register(
            HtmlHooks(lambda item: item.stash.get(OUTCOME_KEY, None), session.missing_package),
            "advrobust-html",
        )


# -------------------------------------------------------------- collection


def pytest_itemcollected(item: pytest.Item) -> None:
    _session(item.config).item_collected(item)


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    _session(config).skip_unless_enabled(items)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _advrobust_gate(request: pytest.FixtureRequest) -> None:
    """Evaluates marked tests during setup; the verdict is given after the test body."""
    outcome = _session(request.config).gate_outcome(request)
    if outcome is not None:
        request.node.stash[OUTCOME_KEY] = outcome


@pytest.fixture
def adversarial_batch(request: pytest.FixtureRequest):
    """The evaluation batch and its adversarial twin: ``x``, ``y``, ``x_adv``,
    ``settings``, ``report`` and ``evaluate(model)``. Uses the test's ``robust``
    marker when it has one, else the command-line / ini defaults."""
    outcome = request.node.stash.get(OUTCOME_KEY, None)
    return _session(request.config).adversarial_batch(request, outcome)


@pytest.fixture
def gan_generator(request: pytest.FixtureRequest):
    """The trained (or cached) generator for this test's model, data and settings:
    an ``nn.Module`` in eval mode whose output on ``x`` is a bounded ``x_adv``."""
    return _session(request.config).generator(request, conditional=False)


@pytest.fixture
def conditional_generator(request: pytest.FixtureRequest):
    """The class-conditional sample generator of ``attack="generated"``, trained on
    ``robust_train_data`` (or cached): an ``nn.Module`` in eval mode mapping (noise
    ``(N, noise_dim)``, class index ``(N,)``) to samples, with ``sample(n, seed, classes)``
    giving ``(x, y)``, ``labels``, and ``reference`` (the validity judge)."""
    return _session(request.config).generator(request, conditional=True)


# ---------------------------------------------------------------- the gate


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    outcome = item.stash.get(OUTCOME_KEY, None)
    return (yield from _session(item.config).judged_call(item, outcome))


# ------------------------------------------------ session start and finish


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    _session(session.config).start()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _session(session.config).finish(session)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    _session(config).terminal_summary(terminalreporter)


# ------------------------------------------------------ registered classes


class _ReportCollector:
    """Gathers the per-test reports from the test reports themselves, so that the
    same code serves a plain run and an xdist controller."""

    def __init__(self, session: AdvRobustSession):
        self.session = session

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.session.collect_report(report)


class _XdistHooks:
    """Registered only when pytest-xdist is installed."""

    def __init__(self, session: AdvRobustSession):
        self.session = session

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """Give each worker the folder whose progress lines the controller shows."""
        from .progress import WORKERINPUT_KEY, ProgressRelay
        from .terminal import quiet, terminal_line

        session = self.session
        if not session.enabled or quiet(node.config):
            return
        if session.relay is None:
            session.relay = ProgressRelay(terminal_line(node.config))
        node.workerinput[WORKERINPUT_KEY] = session.relay.folder

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """Merge what a finished worker collected into this run's list."""
        out = getattr(node, "workeroutput", None) or {}
        self.session.collected.update(out.get("advrobust_collected", ()))
