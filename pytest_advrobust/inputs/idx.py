"""A reader for MNIST-style IDX files (plain or gzip), used by the benchmarks and usable
by model repositories that keep such files (Fashion-MNIST, for one)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Tuple

import numpy as np
import torch

__all__ = ["load_idx_dataset", "read_idx"]

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Read an IDX file (MNIST format), gzip-compressed or not, into an array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX element type 0x{code:02x}")
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[code])
    count = int(np.prod(dims)) if dims else 1
    body = raw[4 + 4 * ndim :]
    if len(body) != count * dtype.itemsize:
        raise ValueError(
            f"{path}: expected {count * dtype.itemsize} bytes of data, found {len(body)}"
        )
    return np.frombuffer(body, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def load_idx_dataset(root, split: str = "test") -> Tuple[torch.Tensor, torch.Tensor]:
    """Load an MNIST-layout dataset folder (e.g. Fashion-MNIST) as float images in [0, 1].

    ``root`` holds ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``.
    Returns ``x`` of shape (n, 1, 28, 28) and ``y`` of shape (n,).
    """
    prefix = {"train": "train", "test": "t10k"}[split]
    root = Path(root)

    def find(stem: str) -> Path:
        for name in (stem + ".gz", stem):
            if (root / name).exists():
                return root / name
        raise FileNotFoundError(f"{root / stem}[.gz] not found")

    images = read_idx(find(f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(find(f"{prefix}-labels-idx1-ubyte"))
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y
