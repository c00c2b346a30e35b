import pytest
from _support import BLOBS_CONFTEST, one_torch_thread  # noqa: F401  (fixture)

pytest_plugins = ["pytester"]


@pytest.fixture
def blobs_repo(pytester):
    """A pytester folder whose conftest provides robust_model and robust_data."""
    pytester.makeconftest(BLOBS_CONFTEST)
    return pytester
