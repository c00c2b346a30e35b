"""Fashion-MNIST for the benchmarks: an IDX ``.gz`` reader and the small reference CNN.

The reader uses numpy only. The CNN is conv(1->32, 3) ReLU, conv(32->64, 3)
ReLU, max-pool 2, fc(9216->128) ReLU, fc(128->10), trained with Adam (lr
1e-3), batch 128, 2 epochs, seed 0; its weights are kept in a work folder so
that reruns load them instead of training again.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

DEFAULT_ROOT = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic)")
    code, ndim = data[2], data[3]
    if code not in _DTYPES:
        raise ValueError(f"{path}: unknown IDX element type 0x{code:02x}")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    dtype = np.dtype(_DTYPES[code])
    count = int(np.prod(dims)) if dims else 1
    body = np.frombuffer(data, dtype=dtype, count=count, offset=4 + 4 * ndim)
    return body.reshape(dims).astype(dtype.newbyteorder("="), copy=False)


def load_split(split: str, root: Path = DEFAULT_ROOT) -> Tuple["torch.Tensor", "torch.Tensor"]:
    """``split`` "train" or "test" -> (x float32 (N, 1, 28, 28) in [0, 1], y int64 (N,))."""
    import torch

    prefix = {"train": "train", "test": "t10k"}[split]
    root = Path(root)
    images = read_idx(root / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(root / f"{prefix}-labels-idx1-ubyte.gz")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def small_cnn() -> "torch.nn.Module":
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(),
        nn.Conv2d(32, 64, 3), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(9216, 128), nn.ReLU(),
        nn.Linear(128, 10),
    )


def trained_cnn(x_train, y_train, work_dir: Optional[Path] = None, epochs: int = 2, seed: int = 0,
                log=print) -> "torch.nn.Module":
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
            idx = perm[s:s + 128]
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
