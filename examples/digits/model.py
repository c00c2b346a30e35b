"""A small model repository: a CNN on scikit-learn's 8x8 digits.

Two models share one architecture:

* ``robust``: adversarially trained (3-step PGD in an L-inf ball of radius
  0.1 on every training batch, Madry et al. 2018): the model the suite gates;
* ``fragile``: the same network and recipe without the adversarial batches.
  It is about as accurate, but small perturbations fool it: the model that
  a careless change to the training recipe would produce.

Training is deterministic (fixed seeds, fixed batch order) and takes a few
seconds on a CPU. The weights are kept in ``.weights/`` next to this file
under a name that hashes the training settings and the data, so a second
run loads them instead of training again; change a setting and the model is
retrained. Run ``python model.py`` to train both and print their accuracy.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
WEIGHTS_DIR = Path(os.environ.get("DIGITS_WEIGHTS_DIR", HERE / ".weights"))

#: Bump when the architecture or the training code changes meaning.
RECIPE_VERSION = 1

#: Training recipes. ``adv_eps=0`` is plain training.
RECIPES: Dict[str, Dict] = {
    "robust": {
        "epochs": 15,
        "batch_size": 64,
        "lr": 2e-3,
        "seed": 0,
        "adv_eps": 0.1,
        "adv_steps": 3,
        "adv_step_size": 0.04,
    },
    "fragile": {
        "epochs": 15,
        "batch_size": 64,
        "lr": 2e-3,
        "seed": 0,
        "adv_eps": 0.0,
        "adv_steps": 0,
        "adv_step_size": 0.0,
    },
}

Pair = Tuple[torch.Tensor, torch.Tensor]


# ----------------------------------------------------------------------------- data


def load_splits(test_fraction: float = 0.3, seed: int = 0) -> Tuple[Pair, Pair]:
    """``((x_train, y_train), (x_test, y_test))``: x float32 (n, 1, 8, 8) in [0, 1], y int64.

    The split is a seeded, class-stratified permutation, the same on every machine.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy((digits.images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(digits.target.astype(np.int64))
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for c in range(10):
        idx = np.flatnonzero(digits.target == c)
        rng.shuffle(idx)
        k = int(round(len(idx) * test_fraction))
        test_idx.extend(idx[:k])
        train_idx.extend(idx[k:])
    tr = torch.as_tensor(np.sort(train_idx))
    te = torch.as_tensor(np.sort(test_idx))
    return (x[tr], y[tr]), (x[te], y[te])


# ---------------------------------------------------------------------------- model


class DigitsCNN(nn.Module):
    """conv(1->16, 3) ReLU, conv(16->32, 3) ReLU, max-pool 2, fc(512->64) ReLU, fc(64->10)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# ------------------------------------------------------------------------- training


def _pgd_linf(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int,
    step_size: float,
    gen: torch.Generator,
) -> torch.Tensor:
    """Random-start L-inf PGD used to make training batches adversarial."""
    delta = (torch.rand(x.shape, generator=gen) * 2 - 1) * eps
    x_adv = (x + delta).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + step_size * grad.sign()
        x_adv = (x + (x_adv - x).clamp(-eps, eps)).clamp(0, 1)
    return x_adv.detach()


def train(recipe: Dict, x: torch.Tensor, y: torch.Tensor) -> DigitsCNN:
    """Train a :class:`DigitsCNN` with ``recipe`` on ``(x, y)``; deterministic on the CPU.

    Runs on one CPU thread: the network is tiny, so more threads only add
    synchronisation (a lot of it on a busy machine), and one thread gives the
    same weights whatever the core count.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(recipe, x, y)
    finally:
        torch.set_num_threads(threads)


def _train(recipe: Dict, x: torch.Tensor, y: torch.Tensor) -> DigitsCNN:
    torch.manual_seed(recipe["seed"])
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=recipe["lr"])
    gen = torch.Generator().manual_seed(recipe["seed"])
    for _ in range(recipe["epochs"]):
        perm = torch.randperm(x.shape[0], generator=gen)
        for start in range(0, x.shape[0], recipe["batch_size"]):
            idx = perm[start : start + recipe["batch_size"]]
            xb, yb = x[idx], y[idx]
            if recipe["adv_eps"] > 0:
                model.eval()
                xb = _pgd_linf(
                    model,
                    xb,
                    yb,
                    recipe["adv_eps"],
                    recipe["adv_steps"],
                    recipe["adv_step_size"],
                    gen,
                )
            model.train()
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def _weights_path(kind: str, x: torch.Tensor, y: torch.Tensor) -> Path:
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {"kind": kind, "recipe": RECIPES[kind], "version": RECIPE_VERSION}, sort_keys=True
        ).encode()
    )
    h.update(x.numpy().tobytes())
    h.update(y.numpy().tobytes())
    return WEIGHTS_DIR / f"{kind}-{h.hexdigest()[:16]}.pt"


def get_model(kind: str = "robust", train_data: Pair = None) -> DigitsCNN:
    """The trained ``kind`` model ("robust" or "fragile"), from ``.weights/`` when it is there."""
    if kind not in RECIPES:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {sorted(RECIPES)}")
    x, y = train_data if train_data is not None else load_splits()[0]
    path = _weights_path(kind, x, y)
    model = DigitsCNN()
    if path.exists():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()
    model = train(RECIPES[kind], x, y)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # parallel workers: rename wins
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    return model


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model(x).argmax(1) == y).float().mean())


if __name__ == "__main__":
    import time

    (x_tr, y_tr), (x_te, y_te) = load_splits()
    print(f"train {tuple(x_tr.shape)}, test {tuple(x_te.shape)}")
    for kind in RECIPES:
        t0 = time.perf_counter()
        net = get_model(kind, (x_tr, y_tr))
        print(
            f"{kind:8s} clean test accuracy {accuracy(net, x_te, y_te):.3f} "
            f"({time.perf_counter() - t0:.1f} s, {_weights_path(kind, x_tr, y_tr).name})"
        )
