"""The user's own fixtures a robust test evaluates (model, data and GAN training data), which
tests are robust tests, and how a robust test fails with one sentence."""

from __future__ import annotations

from typing import Any

import pytest

from ..errors import AdvRobustError
from ..settings.robust import RobustSettings

ROBUST_FIXTURES = ("adversarial_batch", "gan_generator", "conditional_generator")
SKIP_REASON = "robustness test: pass --advrobust to run it"


def is_robust(item: pytest.Item) -> bool:
    """A robust test: marked ``robust`` or using one of the robust fixtures."""
    if item.get_closest_marker("robust") is not None:
        return True
    names = getattr(item, "fixturenames", ())
    return any(n in names for n in ROBUST_FIXTURES)


def fail_cleanly(exc: AdvRobustError) -> None:
    """Fail the test with the error's one sentence, without a traceback."""
    raise pytest.fail.Exception(str(exc), pytrace=False) from None


def _fixture_value(
    request: pytest.FixtureRequest, name: str, role: str, arg: str, ini: str, optional: bool = False
) -> Any:
    try:
        return request.getfixturevalue(name)
    except pytest.FixtureLookupError:
        if optional:
            return None
        raise AdvRobustError(
            f"fixture {name!r} not found: define it in conftest.py to return the {role}, "
            f"or name another fixture with robust({arg}=...) or the ini option {ini}"
        ) from None


def user_objects(request: pytest.FixtureRequest, settings: RobustSettings, need_train: bool = True):
    """The user's model, evaluation data and (optional, only when ``need_train``)
    GAN training data."""
    model = _fixture_value(request, settings.model, "model", "model", "advrobust_model_fixture")
    data = _fixture_value(
        request, settings.data, "evaluation data", "data", "advrobust_data_fixture"
    )
    train = (
        _fixture_value(
            request,
            settings.train_data,
            "GAN training data",
            "",
            "advrobust_train_data_fixture",
            optional=True,
        )
        if need_train
        else None
    )
    return model, data, train
