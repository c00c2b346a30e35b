"""Exact-match keys for input rows: the generator's per-input memory is looked up with them.

The transductive fitting (:mod:`.transductive`) optimises, besides the
generator's weights, one raw-space offset per evaluation input. The offsets
are stored in the generator with the key of the input they belong to, and
applied only to inputs whose float32 bits are exactly those of a stored
row; every other input gets the network's output alone.

A key is two 64-bit wrap-around sums of the row's float32 bit patterns with
fixed pseudo-random odd coefficients (seeded, identical on every machine),
so two different rows share a key with probability about 2**-128.
"""

from __future__ import annotations

from typing import Dict, Tuple

import torch

__all__ = ["row_keys", "match_rows"]

_COEFFS: Dict[Tuple[int, str], torch.Tensor] = {}


def _coefficients(d: int, device: torch.device) -> torch.Tensor:
    key = (d, str(device))
    if key not in _COEFFS:
        g = torch.Generator().manual_seed(0x5EED)
        c = torch.randint(1, 2**62, (2, d), generator=g, dtype=torch.int64) * 2 + 1
        _COEFFS[key] = c.to(device)
    return _COEFFS[key]


def row_keys(x: torch.Tensor) -> torch.Tensor:
    """``(N, 2)`` int64 keys of the rows of ``x`` (``(N, ...)``, compared as float32 bits)."""
    flat = x.detach().to(torch.float32).reshape(x.shape[0], -1).contiguous()
    bits = flat.view(torch.int32).to(torch.int64)
    coeffs = _coefficients(bits.shape[1], bits.device)
    return torch.stack([(bits * coeffs[0]).sum(1), (bits * coeffs[1]).sum(1)], dim=1)


def match_rows(keys: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """For each key of ``keys`` ``(N, 2)``, the index of its row in ``table`` ``(M, 2)``, or -1."""
    n = keys.shape[0]
    if table.shape[0] == 0 or n == 0:
        return torch.full((n,), -1, dtype=torch.int64, device=keys.device)
    table = table.to(keys.device)
    eq = (keys[:, None, :] == table[None, :, :]).all(dim=2)  # (N, M)
    found = eq.any(dim=1)
    first = eq.to(torch.int8).argmax(dim=1)
    return torch.where(found, first, torch.full_like(first, -1))
