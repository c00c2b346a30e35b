"""Benchmark: how much of a warm robust suite goes into turning data into tensors.

A model repository's suite of four robust tests (GAN, PGD-40, an FGSM/PGD
worst case and a PGD eps sweep) over two ``Dataset`` fixtures that behave like
torchvision's: Fashion-MNIST's 60,000 training and 10,000 test images kept
as uint8 arrays, each ``__getitem__`` returning ``(float tensor (1, 28, 28)
in [0, 1], int label)``. The model is the reference CNN of ``fashion.py``.

The script writes that repository into ``--work-dir``, runs it once in a
subprocess to fill the GAN cache (the cold run), then runs it again in this
process under cProfile (the warm run: generator loaded from the cache) and
prints, from that one profile:

* the warm run's total time;
* the time inside :func:`pytest_advrobust.inputs.data.to_tensor_pair` (every
  conversion of a fixture value, the user's ``__getitem__`` included) and its
  share of the total;
* how many times ``__getitem__`` ran.

Usage::

    python benchmarks/bench_data.py [--work-dir .bench/data] [--threads 1]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import subprocess
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

CONFTEST = '''
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

sys.path.insert(0, {bench!r})
from fashion import DEFAULT_ROOT, load_split, trained_cnn  # noqa: E402
from pytest_advrobust.inputs.data import read_idx  # noqa: E402

CALLS = [0]


class Fashion(Dataset):
    """Like torchvision's FashionMNIST with ToTensor(): uint8 in memory, floats per item."""

    def __init__(self, split):
        prefix = {{"train": "train", "test": "t10k"}}[split]
        self.images = read_idx(DEFAULT_ROOT / f"{{prefix}}-images-idx3-ubyte.gz").copy()
        self.labels = read_idx(DEFAULT_ROOT / f"{{prefix}}-labels-idx1-ubyte.gz").copy()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        CALLS[0] += 1
        image = torch.from_numpy(self.images[i]).float().div_(255).unsqueeze(0)
        return image, int(self.labels[i])


@pytest.fixture(scope="session")
def robust_model():
    x, y = load_split("train")
    return trained_cnn(x, y, work_dir={work!r}, epochs={epochs}, log=lambda *_: None)


@pytest.fixture(scope="session")
def robust_data():
    return Fashion("test")


@pytest.fixture(scope="session")
def robust_train_data():
    return Fashion("train")
'''

TESTS = """
import pytest


@pytest.mark.robust(threshold=1.0)
def test_gan():
    pass


@pytest.mark.robust(threshold=1.0, attack="pgd", steps=40)
def test_pgd():
    pass


@pytest.mark.robust(threshold=1.0, attack=["fgsm", "pgd"], eps=0.05, steps=10)
def test_worst_case():
    pass


@pytest.mark.robust(threshold=1.0, attack="pgd", eps=[0.02, 0.05], steps=10)
def test_sweep():
    pass
"""


def write_repo(work: Path, epochs: int) -> Path:
    repo = work / "repo"
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "conftest.py").write_text(
        CONFTEST.format(bench=str(HERE), work=str(work), epochs=epochs)
    )
    (repo / "test_suite.py").write_text(textwrap.dedent(TESTS))
    (repo / "pytest.ini").write_text("[pytest]\n")
    return repo


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work-dir", type=Path, default=ROOT / ".bench" / "data")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=1, help="CNN training epochs (cached)")
    ap.add_argument("--gan-steps", type=int, default=200)
    args = ap.parse_args(argv)
    work = args.work_dir.resolve()
    repo = write_repo(work, args.epochs)
    opts = [
        "-q",
        "-p",
        "no:randomly",
        "--advrobust",
        f"--advrobust-threads={args.threads}",
        f"--advrobust-gan-steps={args.gan_steps}",
        f"--advrobust-cache-dir={work / 'gan-cache'}",
        "-p",
        "no:cacheprovider",
    ]
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    print("cold run (trains the CNN once and the generator into the cache) ...", flush=True)
    cold = subprocess.run([sys.executable, "-m", "pytest", *opts, str(repo)], env=env)
    if cold.returncode != 0:
        return cold.returncode

    import pytest
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(repo))
    profile = cProfile.Profile()
    profile.enable()
    code = pytest.main([*opts, "-rA", str(repo)])
    profile.disable()
    stats = pstats.Stats(profile)
    total = max(v[3] for v in stats.stats.values())  # the outermost call's cumulative time
    convert = sum(
        v[3]
        for k, v in stats.stats.items()  # cProfile counts recursion once
        if k[2] == "to_tensor_pair"
        and k[0].endswith(os.path.join("pytest_advrobust", "inputs", "data.py"))
    )
    calls = sys.modules["conftest"].CALLS[0]
    print(
        f"warm run: exit {int(code)}, total {total:.2f} s, in to_tensor_pair {convert:.2f} s "
        f"= {100 * convert / total:.1f}% of the run, __getitem__ calls {calls:,}"
    )
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
