"""Models with several inputs: which one the attack perturbs, and how the model is called.

A data item's input may be one tensor, a list or tuple of tensors (the model
is called as ``model(*inputs)``) or a dict of tensors (``model(**inputs)``,
as Hugging Face models take them). :class:`Inputs` holds such a batch, one
tensor per slot (a position or a key), all with the same number of rows.

The attack perturbs one slot, ``attack_input`` (a position or a key; by
default the first floating-point tensor); eps, ``bounds`` and
``preprocessing`` apply to it alone. :func:`choose` splits an
:class:`Inputs` into that tensor and :class:`Extras`, the other slots of
every sample, which the model wrapper puts back around the perturbed input
of each call (see :mod:`pytest_advrobust.inputs.rows`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import AdvRobustError

__all__ = ["Extras", "Inputs", "choose", "is_several", "join_tables"]

Slot = Union[int, str]


def _tensor_like(v: Any) -> bool:
    return isinstance(v, (torch.Tensor, np.ndarray))


def is_several(value: Any) -> bool:
    """Whether an item's input is several inputs: a list or tuple of tensors or arrays
    (a list of numbers is one input), or a dict."""
    if isinstance(value, dict):
        return True
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(map(_tensor_like, value))


@dataclass
class Inputs:
    """A batch of several inputs: ``kind`` ``"args"`` or ``"kwargs"``, and one tensor
    ``(N, ...)`` per slot, in the order the model takes them."""

    kind: str
    slots: Dict[Slot, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def of(cls, value: Any, as_tensor) -> Inputs:
        """One item's or one batch's inputs; ``as_tensor(v, slot)`` converts each value."""
        if isinstance(value, dict):
            return cls("kwargs", {str(k): as_tensor(v, str(k)) for k, v in value.items()})
        return cls("args", {i: as_tensor(v, i) for i, v in enumerate(value)})

    @property
    def n(self) -> int:
        return int(next(iter(self.slots.values())).shape[0])

    def __getitem__(self, index: Any) -> Inputs:
        return Inputs(self.kind, {k: v[index] for k, v in self.slots.items()})

    def contiguous(self) -> Inputs:
        return Inputs(self.kind, {k: v.contiguous() for k, v in self.slots.items()})

    def layout(self) -> Tuple[str, Tuple[Slot, ...]]:
        return self.kind, tuple(self.slots)

    @staticmethod
    def join(parts: Sequence[Inputs], fixture: str, stack: bool) -> Inputs:
        """Items stacked (``stack``) or batches concatenated, slot by slot."""
        first = parts[0]
        for p in parts[1:]:
            if p.layout() != first.layout():
                raise AdvRobustError(
                    f"fixture {fixture!r} gave samples whose inputs differ in kind or names "
                    f"({_describe(first)} and {_describe(p)}); give every sample the same inputs"
                )
        out = {}
        for k in first.slots:
            try:
                out[k] = (torch.stack if stack else torch.cat)([p.slots[k] for p in parts])
            except RuntimeError:
                raise AdvRobustError(
                    f"fixture {fixture!r} gave input {k!r} in different shapes"
                ) from None
        return Inputs(first.kind, out)


def _describe(inputs: Inputs) -> str:
    if inputs.kind == "kwargs":
        return "keys " + ", ".join(str(k) for k in inputs.slots)
    return f"{len(inputs.slots)} positional inputs"


@dataclass
class Extras:
    """The inputs the attack leaves alone, for every sample: ``table[slot]`` ``(M, ...)``
    on the CPU, row ``r`` belonging to sample ``r``. ``order`` lists every slot as the
    model takes them, ``slot`` being the perturbed one."""

    kind: str
    slot: Slot
    order: Tuple[Slot, ...]
    table: Dict[Slot, torch.Tensor]
    fixture: str = "robust_data"

    def call(self, model: Any, x: torch.Tensor, rows: torch.Tensor) -> Any:
        """``model`` on the perturbed batch ``x`` and the other inputs of samples ``rows``."""
        values = {s: self.table[s][rows].to(x.device, non_blocking=True) for s in self.table}
        values[self.slot] = x
        if self.kind == "kwargs":
            return model(**{str(s): values[s] for s in self.order})
        return model(*[values[s] for s in self.order])

    def rows_of(self, index: torch.Tensor) -> Dict[Slot, torch.Tensor]:
        return {s: t[index] for s, t in self.table.items()}


def _pick(inputs: Inputs, attack_input: Optional[Slot], fixture: str) -> Slot:
    names = ", ".join(repr(k) for k in inputs.slots)
    if attack_input is None:
        for k, v in inputs.slots.items():
            if v.is_floating_point():
                return k
        raise AdvRobustError(
            f"fixture {fixture!r} gives several inputs ({names}) and none is a floating-point "
            "tensor the attack could perturb; name the one to perturb with attack_input=..."
        )
    if attack_input in inputs.slots:
        return attack_input
    raise AdvRobustError(
        f"attack_input={attack_input!r} names no input of fixture {fixture!r}; its samples "
        f"have inputs {names} (a position for a list or tuple, a key for a dict)"
    )


def choose(
    inputs: Inputs, attack_input: Optional[Slot], fixture: str
) -> Tuple[torch.Tensor, Slot, Dict[Slot, torch.Tensor]]:
    """``(perturbed, slot, others)``: the input the attack perturbs and the other slots."""
    slot = _pick(inputs, attack_input, fixture)
    others = {k: v for k, v in inputs.slots.items() if k != slot}
    return inputs.slots[slot], slot, others


def join_tables(
    parts: List[Dict[Slot, torch.Tensor]], layouts: List[Tuple[str, Tuple[Slot, ...]]], fixture: str
) -> Dict[Slot, torch.Tensor]:
    """The other inputs of the evaluation samples, then of the training samples."""
    if len(set(layouts)) > 1:
        raise AdvRobustError(
            f"the training data and fixture {fixture!r} give different inputs "
            f"({layouts[0]} and {layouts[1]}); give both the same inputs"
        )
    return {k: torch.cat([p[k].cpu() for p in parts]) for k in parts[0]}
