"""Hooks that users implement in ``conftest.py`` or a plugin.

Example::

    def pytest_advrobust_register_attacks(register):
        register("noise", my_noise_attack)   # (model, x, y, cfg, ctx) -> x_adv

    def pytest_advrobust_report(report, item):
        report["commit"] = os.environ.get("GIT_SHA")
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("pytest")


@hookspec
def pytest_advrobust_register_attacks(register):
    """Register custom attacks: call ``register(name, attack)`` for each.

    ``attack(model, x, y, cfg, ctx)`` returns adversarial inputs of the shape of
    ``x`` within ``cfg.eps`` in ``cfg.norm`` and inside ``cfg.bounds`` (see
    ``pytest_advrobust.attacks.base``); the plugin checks the bound and
    errors the test when an attack breaks it. Names become valid values of
    the marker's ``attack=`` argument.
    """


@hookspec
def pytest_advrobust_report(report, item):
    """Amend the report dict of a robust test before it is judged and stored.

    Called on the process that ran the test (an xdist worker, or the main one).
    """
