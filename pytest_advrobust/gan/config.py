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

    eps, norm, bounds: the perturbation budget the generator is built with.
    seed: initialisation, the held-out split and the batch order.
    max_steps, max_seconds: budget (``warm_fraction`` of it for warm starts).
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
    fit_steps, fit_patience, fit_lr, fit_kappa, fit_memory_lr: the fine-tuning
      on the evaluation inputs (:mod:`.transductive`); ``fit_steps=0`` skips
      it; ``fit_memory_lr`` is the learning rate of the per-input offsets
      (``0``: the weights only).
      :func:`train_generator` itself does not use them.
    grad_input: the generator also takes the input gradient's direction
      (:func:`.networks.input_direction`; one more forward and backward pass
      of the model per sample).
    """

    eps: float
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
    fit_steps: int = 0
    fit_patience: int = 40
    fit_lr: float = 3e-3
    fit_kappa: float = 0.5
    fit_memory_lr: float = 0.0
    grad_input: bool = False

    def __post_init__(self) -> None:
        def bad(name: str, what: str) -> None:
            raise ValueError(f"GanConfig.{name} must be {what}, got {getattr(self, name)!r}")

        if not _is_number(self.eps) or not math.isfinite(self.eps) or self.eps <= 0:
            bad("eps", "a positive finite number")
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
        if not _is_int(self.fit_steps) or self.fit_steps < 0:
            bad("fit_steps", "a non-negative integer")
        if not _is_int(self.fit_patience) or self.fit_patience < 1:
            bad("fit_patience", "a positive integer")
        for name in ("fit_lr", "fit_kappa"):
            v = getattr(self, name)
            if not _is_number(v) or not math.isfinite(v) or v <= 0:
                bad(name, "a positive number")
        v = self.fit_memory_lr
        if not _is_number(v) or not math.isfinite(v) or v < 0:
            bad("fit_memory_lr", "a non-negative number")
        if not isinstance(self.grad_input, bool):
            bad("grad_input", "True or False")
        if self.precision not in ("auto", "bf16", "fp32"):
            bad("precision", "'auto', 'bf16' or 'fp32'")

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-able dict of every field (``bounds`` as a list)."""
        d = dataclasses.asdict(self)
        d["bounds"] = list(self.bounds) if self.bounds is not None else None
        return d

    def generator_args(self) -> Dict[str, Any]:
        """The arguments of :func:`.networks.build_generator` these settings fix (all but the
        sample shape)."""
        names = ("eps", "norm", "bounds", "width", "n_res", "grad_input")
        return {name: getattr(self, name) for name in names}

    def replace(self, **changes: Any) -> "GanConfig":
        return dataclasses.replace(self, **changes)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
