"""Shared pieces of the test suite (imported by conftest.py and test modules)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import pytest_advrobust

#: The checkout the package is imported from (a subprocess imports the same one).
ROOT = Path(pytest_advrobust.__file__).resolve().parents[1]


def run_cli(*args, cwd=None, env_extra=None, timeout=120):
    """``python -m pytest_advrobust.cli ARGS`` in a subprocess that imports this checkout,
    without the caller's ``ADVROBUST_CACHE_DIR``; ``env_extra`` is added to its
    environment. Returns the finished process (text output captured)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("ADVROBUST_CACHE_DIR", None)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "pytest_advrobust.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


# A model repository in miniature: a nearest-centre linear classifier on
# well-separated synthetic blobs in [0, 1]^20. Fast to build, exact to reason about.
BLOBS_CONFTEST = textwrap.dedent(
    """
    import pytest
    import torch

    def make_blobs(n=300, d=20, k=3, seed=0):
        g = torch.Generator().manual_seed(seed)
        centres = 0.3 + 0.4 * torch.rand(k, d, generator=g)
        y = torch.arange(n) % k
        x = (centres[y] + 0.03 * torch.randn(n, d, generator=g)).clamp(0, 1)
        return x, y, centres

    class NearestCentre(torch.nn.Module):
        def __init__(self, centres):
            super().__init__()
            self.fc = torch.nn.Linear(centres.shape[1], centres.shape[0])
            with torch.no_grad():
                self.fc.weight.copy_(2 * centres)
                self.fc.bias.copy_(-(centres ** 2).sum(1))

        def forward(self, x):
            return self.fc(x.flatten(1))

    @pytest.fixture(scope="session")
    def robust_data():
        x, y, _ = make_blobs()
        return x, y

    @pytest.fixture(scope="session")
    def robust_model():
        _, _, centres = make_blobs()
        return NearestCentre(centres)
    """
)


def digits_tensors(n=None):
    """sklearn's 8x8 digits as (x in [0, 1] of shape (n, 1, 8, 8), y)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data[:n], dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    return x, torch.tensor(d.target[:n], dtype=torch.long)


def digits_mlp(x, y, seed=0, steps=150):
    """A small MLP trained full-batch on (x, y) for ``steps`` Adam steps, in eval mode."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: one thread avoids oversubscription stalls on busy machines."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


#: Plugins the inner pytest sessions do not need (half a second of start-up each on a busy
#: machine).
LEAN = (
    "-p",
    "no:randomly",
    "-p",
    "no:cacheprovider",
    "-p",
    "no:xdist",
    "-p",
    "no:xdist.looponfail",
    "-p",
    "no:hypothesispytest",
)
