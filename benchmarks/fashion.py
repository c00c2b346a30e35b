"""Fashion-MNIST for the benchmarks: the data (through the plugin's IDX reader) and the
small reference CNN.

The CNN is conv(1->32, 3) ReLU, conv(32->64, 3)
ReLU, max-pool 2, fc(9216->128) ReLU, fc(128->10), trained with Adam (lr
1e-3), batch 128, 2 epochs, seed 0; its weights are kept in a work folder so
that reruns load them instead of training again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Tuple

if TYPE_CHECKING:  # pragma: no cover
    import torch

DEFAULT_ROOT = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))


def load_split(split: str, root: Path = DEFAULT_ROOT) -> Tuple["torch.Tensor", "torch.Tensor"]:
    """``split`` "train" or "test" -> (x float32 (N, 1, 28, 28) in [0, 1], y int64 (N,))."""
    from pytest_advrobust.inputs.data import load_idx_dataset

    return load_idx_dataset(root, split)


def small_cnn() -> "torch.nn.Module":
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(1, 32, 3),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(9216, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def trained_cnn(
    x_train, y_train, work_dir: Optional[Path] = None, epochs: int = 2, seed: int = 0, log=print
) -> "torch.nn.Module":
    """The reference CNN, trained once and then loaded from ``work_dir/cnn.safetensors``."""
    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file, save_file

    torch.manual_seed(seed)
    model = small_cnn()
    path = Path(work_dir) / f"cnn_e{epochs}_s{seed}.safetensors" if work_dir else None
    if path is not None and path.exists():
        model.load_state_dict(load_file(str(path)))
        return model.eval()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(x_train.shape[0], generator=g)
        for s in range(0, perm.numel(), 128):
            idx = perm[s : s + 128]
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        log(f"cnn epoch {epoch + 1}/{epochs}: last loss {loss.item():.3f}")
    model.eval()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
        os.replace(tmp, path)
    return model


def robust_cnn(
    x_train,
    y_train,
    work_dir: Optional[Path] = None,
    epochs: int = 3,
    n_train: int = 20000,
    eps: float = 0.1,
    seed: int = 0,
    log=print,
) -> "torch.nn.Module":
    """The reference CNN adversarially trained with FGSM from a random start.

    "Fast is better than free" (Wong, Rice and Kolter, ICLR 2020): per batch,
    a uniform start in the eps-ball, one FGSM step of 1.25 eps, projection to
    the ball and [0, 1], then one Adam step (lr 1e-3) on the perturbed batch.
    First ``n_train`` training images, batch 128, seeded; the weights are kept
    in ``work_dir/cnn_fgsmrs_e{epochs}_n{n_train}_s{seed}.safetensors``.
    """
    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file, save_file

    torch.manual_seed(seed)
    model = small_cnn()
    name = f"cnn_fgsmrs_e{epochs}_n{n_train}_eps{eps:g}_s{seed}.safetensors"
    path = Path(work_dir) / name if work_dir else None
    if path is not None and path.exists():
        model.load_state_dict(load_file(str(path)))
        return model.eval()
    x_train, y_train = x_train[:n_train], y_train[:n_train]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(x_train.shape[0], generator=g)
        for s in range(0, perm.numel(), 128):
            idx = perm[s : s + 128]
            xb, yb = x_train[idx], y_train[idx]
            delta = (torch.rand(xb.shape, generator=g) * 2 - 1) * eps
            delta.requires_grad_(True)
            (grad,) = torch.autograd.grad(
                F.cross_entropy(model((xb + delta).clamp(0, 1)), yb), delta
            )
            delta = (delta.detach() + 1.25 * eps * grad.sign()).clamp(-eps, eps)
            loss = F.cross_entropy(model((xb + delta).clamp(0, 1)), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        log(f"robust cnn epoch {epoch + 1}/{epochs}: last loss {loss.item():.3f}")
    model.eval()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
        os.replace(tmp, path)
    return model
