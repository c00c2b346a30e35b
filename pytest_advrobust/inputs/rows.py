"""Inputs that know which samples they hold, for models that take several inputs.

A model with several inputs (an image and its metadata, or the keyword
arguments of a Hugging Face model) is attacked through one of them, the
perturbed input; the others go to the model unchanged. Attacks select
samples freely (a PGD step runs on the samples still standing, a GAN trains
on shuffled batches), so the model wrapper must find, for every batch it
receives, the other inputs of exactly those samples.

:class:`Tagged` is a tensor that carries, beside its values, the index of
each of its rows (``rows``: int64 ``(N,)`` on the CPU) and the table of the
other inputs (``extras``). Row selections keep the index right: indexing
along the first axis (``x[idx]``, ``x[mask]``, ``x[a:b]``), ``torch.cat``
along it, ``index_select``, ``split`` and ``chunk``; elementwise arithmetic,
``clone``, ``detach``, ``to``, ``torch.where`` and every other operation
whose result has as many rows as a tagged argument keep the rows of the
first tagged argument. Operations that reorder or merge samples along the
first axis (``stack``, ``sort``, ``flip``, ``transpose`` of it, ...) give a
plain tensor: a model call on it is then refused with a sentence rather than
given another sample's inputs.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

__all__ = ["Tagged", "plain", "rows_of", "same_samples", "tag"]

_CAT = {torch.cat, torch.concat, torch.concatenate}
_SPLIT = {torch.split, torch.chunk, torch.Tensor.split, torch.Tensor.chunk}
_INDEX_SELECT = {torch.index_select, torch.Tensor.index_select}
# Results of these have rows in another order (or no rows at all) when they act on axis 0.
_REORDER = {
    torch.stack,
    torch.sort,
    torch.Tensor.sort,
    torch.argsort,
    torch.Tensor.argsort,
    torch.flip,
    torch.Tensor.flip,
    torch.roll,
    torch.Tensor.roll,
    torch.transpose,
    torch.Tensor.transpose,
    torch.Tensor.t,
    torch.t,
    torch.permute,
    torch.Tensor.permute,
    torch.movedim,
    torch.Tensor.movedim,
    torch.gather,
    torch.Tensor.gather,
    torch.unbind,
    torch.Tensor.unbind,
    torch.topk,
    torch.Tensor.topk,
    torch.Tensor.repeat,
    torch.repeat_interleave,
    torch.Tensor.repeat_interleave,
    torch.Tensor.expand,
    torch.Tensor.unfold,
}


class Tagged(torch.Tensor):
    """A tensor whose rows are known samples: ``rows`` (int64 ``(N,)``) and ``extras``."""

    rows: torch.Tensor
    extras: Any

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **kwargs)
        src = _first_tagged(args, kwargs)
        if src is None or out is None:
            return out
        if any(out is a for a in args):  # in place: the object is already tagged
            return out
        if func is torch.Tensor.__getitem__:
            return _wrap(out, _index_rows(src, args[1]), src.extras)
        if func in _CAT:
            return _wrap(out, _cat_rows(args, kwargs), src.extras)
        if func in _INDEX_SELECT:
            return _index_select(out, src, args, kwargs)
        if func in _SPLIT:
            return _split(func, out, src, args, kwargs)
        if func in _REORDER:
            return out
        if isinstance(out, (tuple, list)):
            return type(out)(_same_rows(o, src) for o in out) if type(out) in (tuple, list) else out
        return _same_rows(out, src)


def tag(x: torch.Tensor, rows: torch.Tensor, extras: Any) -> Tagged:
    """``x`` (``(N, ...)``) as a :class:`Tagged` tensor of samples ``rows`` (``(N,)``)."""
    rows = torch.as_tensor(rows, dtype=torch.int64).reshape(-1).cpu()
    if rows.numel() != x.shape[0]:
        raise ValueError(f"{rows.numel()} row indices for a batch of {x.shape[0]} samples")
    out = x.as_subclass(Tagged)
    out.rows, out.extras = rows, extras
    return out


def same_samples(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``x`` tagged with the samples of ``like`` (row for row), when ``like`` is tagged."""
    rows = rows_of(like)
    return x if rows is None else tag(plain(x), rows, like.extras)


def plain(x: Any) -> Any:
    """``x`` as a plain tensor (a :class:`Tagged` loses its rows); anything else as it is."""
    return x.as_subclass(torch.Tensor) if isinstance(x, Tagged) else x


def rows_of(x: Any) -> Optional[torch.Tensor]:
    """The sample index of each row of ``x``, or ``None`` when ``x`` is not tagged."""
    return getattr(x, "rows", None) if isinstance(x, Tagged) else None


def _first_tagged(args, kwargs) -> Optional[Tagged]:
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, Tagged) and hasattr(a, "rows"):
            return a
        if isinstance(a, (tuple, list)):
            for b in a:
                if isinstance(b, Tagged) and hasattr(b, "rows"):
                    return b
    return None


def _wrap(out: Any, rows: Optional[torch.Tensor], extras: Any) -> Any:
    if rows is None or not isinstance(out, torch.Tensor) or out.dim() == 0:
        return out
    if out.shape[0] != rows.numel():
        return out
    with torch._C.DisableTorchFunctionSubclass():
        wrapped = out.as_subclass(Tagged)
    wrapped.rows, wrapped.extras = rows, extras
    return wrapped


def _same_rows(out: Any, src: Tagged) -> Any:
    if isinstance(out, torch.Tensor) and not isinstance(out, torch.nn.Parameter):
        return _wrap(out, src.rows, src.extras)
    return out


def _key_rows(rows: torch.Tensor, key: Any) -> Optional[torch.Tensor]:
    """``rows`` selected by one index along the first axis, or None (axis dropped or unknown)."""
    if key is Ellipsis:
        return rows
    if isinstance(key, slice):
        return rows[key]
    if isinstance(key, torch.Tensor):
        if key.dim() != 1 or (key.dtype == torch.bool and key.numel() != rows.numel()):
            return None
        if key.dtype != torch.bool and key.is_floating_point():
            return None
        return rows[key.cpu()]
    if isinstance(key, list) and all(isinstance(k, int) and not isinstance(k, bool) for k in key):
        return rows[key]
    return None  # an integer (the axis goes), None (a new axis), anything else


def _index_rows(src: Tagged, key: Any) -> Optional[torch.Tensor]:
    if not isinstance(key, tuple):
        return _key_rows(src.rows, key)
    if not key:
        return src.rows
    first, rest = key[0], key[1:]
    if first is Ellipsis:
        used = sum(1 for k in rest if k is not None)
        return src.rows if used < src.dim() else None
    advanced = [k for k in rest if isinstance(k, (torch.Tensor, list))]
    if isinstance(first, (torch.Tensor, list)) and advanced:
        return None  # several advanced indices broadcast together
    if isinstance(first, slice) and len(advanced) > 1:
        return None  # separated advanced indices move to the front
    return _key_rows(src.rows, first)


def _cat_rows(args, kwargs) -> Optional[torch.Tensor]:
    tensors = args[0] if args else kwargs.get("tensors")
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    if dim != 0:
        src = _first_tagged((tensors,), {})
        return src.rows if src is not None else None
    parts = []
    for t in tensors:
        if not isinstance(t, Tagged) or not hasattr(t, "rows"):
            return None
        parts.append(t.rows)
    return torch.cat(parts) if parts else None


def _index_select(out, src: Tagged, args, kwargs):
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    index = args[2] if len(args) > 2 else kwargs.get("index")
    if dim == 0 and isinstance(index, torch.Tensor):
        return _wrap(out, src.rows[index.cpu()], src.extras)
    return _same_rows(out, src) if dim not in (0, -src.dim()) else out


def _split(func, out, src: Tagged, args, kwargs):
    dim = args[2] if len(args) > 2 else kwargs.get("dim", 0)
    if dim != 0:
        return type(out)(_same_rows(o, src) for o in out)
    size = args[1] if len(args) > 1 else kwargs.get("split_size_or_sections", kwargs.get("chunks"))
    with torch._C.DisableTorchFunctionSubclass():
        parts = func(src.rows, size, 0)
    return type(out)(_wrap(o, r, src.extras) for o, r in zip(out, parts))
