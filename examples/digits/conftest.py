"""Fixtures that hand the models and the data to pytest-advrobust.

The plugin looks for ``robust_model`` and ``robust_data`` by default; a test
names another model fixture with ``@pytest.mark.robust(model="...")``. The
optional ``robust_train_data`` gives the GAN attack its own training images,
so that the generator is trained on the training split and judged on the
held-out one.
"""

import os

import pytest
import torch
from model import get_model, load_splits


def pytest_configure(config):
    # These networks are tiny: on a small CI machine (2 cores, often shared) one
    # thread trains and attacks them several times faster than torch's default of
    # one thread per core, which mostly waits on synchronisation. Set
    # DIGITS_TORCH_THREADS=0 to keep torch's default.
    threads = int(os.environ.get("DIGITS_TORCH_THREADS", "1"))
    if threads > 0:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digits_splits():
    """``((x_train, y_train), (x_test, y_test))``, x in [0, 1] of shape (n, 1, 8, 8)."""
    return load_splits()


@pytest.fixture(scope="session")
def robust_model(digits_splits):
    """The adversarially trained CNN (trained once, then loaded from .weights/)."""
    return get_model("robust", digits_splits[0])


@pytest.fixture(scope="session")
def fragile_model(digits_splits):
    """The same CNN trained without adversarial examples: accurate, easily fooled."""
    return get_model("fragile", digits_splits[0])


@pytest.fixture(scope="session")
def robust_data(digits_splits):
    """The held-out split as an (x, y) pair: what the robustness numbers are measured on."""
    return digits_splits[1]


@pytest.fixture(scope="session")
def robust_train_data(digits_splits):
    """The training split: what the GAN attack learns to fool the model on."""
    return digits_splits[0]
