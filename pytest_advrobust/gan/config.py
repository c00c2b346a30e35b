"""The settings of one AdvGAN training (:class:`GanConfig`), checked when built.

Every field has a type and range; a bad value raises ValueError naming the
field, in the form ``GanConfig.<field> must be ..., got ...``.
:meth:`GanConfig.to_dict` is part of the GAN cache key.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from ..geometry import NORMS

__all__ = ["GanConfig"]


@dataclass(frozen=True)
class GanConfig:
    """Settings of one AdvGAN training; :meth:`to_dict` is part of the cache key.

    eps_range, norm, bounds: the budgets (input units, ``(low, high)``) the generator is
      trained for, each training sample drawing its eps log-uniformly from the range;
      the norm and the valid input range.
    seed: initialisation, the held-out split and the batch order.
    max_steps, max_seconds: budget (``warm_fraction`` of it for warm starts, the
      retraining of a cached generator on evidence).
    batch_size, lr, lr_final: Adam with a cosine decay from ``lr`` to
      ``lr * lr_final`` over the step budget; the discriminator uses ``lr`` too.
    adv_weight, gan_weight, kappa: loss weights and C&W confidence margin.
    holdout_fraction, holdout_max: size of the held-out split.
    eval_every, patience: early stopping (in steps and in evaluations).
    target_success: stop as soon as the held-out success reaches it.
    width, n_res: generator capacity (``None``: the network's default).
    precision: ``"auto"`` trains the generator and discriminator (and runs
      the model's forward/backward) under bfloat16 autocast on CUDA devices
      and in float32 on the CPU, where bf16 kernels cost seconds of start-up
      on small networks and make weights depend on the CPU type; ``"bf16"``
      also uses bfloat16 on CPUs with native support (AVX512-BF16 or AMX),
      which pays off for long trainings; ``"fp32"`` always uses float32.
      Held-out evaluation is always float32.
    """

    eps_range: Tuple[float, float]
    norm: str = "linf"
    bounds: Optional[Tuple[float, float]] = (0.0, 1.0)
    seed: int = 0
    max_steps: int = 1000
    max_seconds: float = 180.0
    batch_size: int = 64
    lr: float = 3e-3
    lr_final: float = 0.05
    adv_weight: float = 1.0
    gan_weight: float = 0.01
    kappa: float = 10.0
    holdout_fraction: float = 0.1
    holdout_max: int = 2000
    eval_every: int = 100
    patience: int = 5
    target_success: float = 1.0
    warm_fraction: float = 0.5
    width: Optional[int] = None
    n_res: Optional[int] = None
    precision: str = "auto"

    def __post_init__(self) -> None:
        def bad(name: str, what: str) -> None:
            raise ValueError(f"GanConfig.{name} must be {what}, got {getattr(self, name)!r}")

        er = self.eps_range
        if (
            not isinstance(er, (tuple, list))
            or len(er) != 2
            or not all(_is_number(e) and math.isfinite(e) for e in er)
            or not 0 < er[0] <= er[1]
        ):
            bad("eps_range", "a pair (low, high) with 0 < low <= high")
        object.__setattr__(self, "eps_range", (float(er[0]), float(er[1])))
        if self.norm not in NORMS:
            bad("norm", f"one of {NORMS}")
        if self.bounds is not None:
            if (
                not isinstance(self.bounds, (tuple, list))
                or len(self.bounds) != 2
                or not all(_is_number(b) and math.isfinite(b) for b in self.bounds)
                or not self.bounds[0] < self.bounds[1]
            ):
                bad("bounds", "None or a finite pair (low, high) with low < high")
            object.__setattr__(self, "bounds", (float(self.bounds[0]), float(self.bounds[1])))
        for name in ("seed",):
            if not _is_int(getattr(self, name)):
                bad(name, "an integer")
        for name in ("max_steps", "batch_size", "eval_every", "patience", "holdout_max"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                bad(name, "a positive integer")
        if not _is_number(self.max_seconds) or not self.max_seconds > 0:
            bad("max_seconds", "a positive number")
        if not _is_number(self.lr) or not (math.isfinite(self.lr) and self.lr > 0):
            bad("lr", "a positive number")
        if not _is_number(self.lr_final) or not 0 < self.lr_final <= 1:
            bad("lr_final", "a number in (0, 1]")
        for name in ("adv_weight", "gan_weight", "kappa"):
            v = getattr(self, name)
            if not _is_number(v) or not math.isfinite(v) or v < 0:
                bad(name, "a non-negative number")
        if self.adv_weight == 0:
            bad("adv_weight", "positive")
        if not _is_number(self.holdout_fraction) or not 0 <= self.holdout_fraction < 1:
            bad("holdout_fraction", "a number in [0, 1)")
        if not _is_number(self.target_success) or not 0 < self.target_success <= 1:
            bad("target_success", "a number in (0, 1]")
        if not _is_number(self.warm_fraction) or not 0 < self.warm_fraction <= 1:
            bad("warm_fraction", "a number in (0, 1]")
        if self.width is not None and (not _is_int(self.width) or self.width < 2):
            bad("width", "None or an integer >= 2")
        if self.n_res is not None and (not _is_int(self.n_res) or self.n_res < 0):
            bad("n_res", "None or a non-negative integer")
        if self.precision not in ("auto", "bf16", "fp32"):
            bad("precision", "'auto', 'bf16' or 'fp32'")

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-able dict of every field (``bounds`` as a list)."""
        d = dataclasses.asdict(self)
        d["bounds"] = list(self.bounds) if self.bounds is not None else None
        d["eps_range"] = list(self.eps_range)
        return d

    def generator_args(self) -> Dict[str, Any]:
        """The arguments of :func:`.networks.build_generator` these settings fix (all but the
        sample shape)."""
        names = ("norm", "bounds", "eps_range", "width", "n_res")
        return {name: getattr(self, name) for name in names}

    def replace(self, **changes: Any) -> "GanConfig":
        return dataclasses.replace(self, **changes)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
