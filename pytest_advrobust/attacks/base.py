"""The attack protocol: configuration, context, and the bound every attack keeps."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol, Tuple

from ..geometry import NORMS, bound, clip_bounds, perturbation_norms, project  # noqa: F401

if TYPE_CHECKING:  # pragma: no cover
    import torch


Model = Callable[["torch.Tensor"], "torch.Tensor"]


@dataclass(frozen=True)
class AttackConfig:
    """Settings shared by every attack.

    ``eps`` bounds the perturbation in ``norm``; ``bounds`` is the valid input
    range (``None`` for unbounded feature vectors). ``step_size=None`` means the
    attack's own default (PGD: ``2.5 * eps / steps``, FGSM: ``eps``).
    ``targets=k`` adds, after the untargeted restarts, targeted runs against
    each sample's k most likely wrong classes (margin loss), as AutoAttack's
    targeted APGD does; it finds perturbations that the cross-entropy
    direction misses when several classes compete. ``gan_steps`` and
    ``gan_seconds`` replace the GAN's default training budget.
    """

    eps: float
    norm: str = "linf"
    steps: int = 40
    step_size: Optional[float] = None
    restarts: int = 1
    random_start: bool = False
    bounds: Optional[Tuple[float, float]] = (0.0, 1.0)
    seed: int = 0
    refine: int = 0
    batch_size: int = 256
    early_stop: bool = True
    targets: int = 0
    gan_steps: Optional[int] = None
    gan_seconds: Optional[float] = None

    def resolved_step_size(self) -> float:
        if self.step_size is not None:
            return float(self.step_size)
        return 2.5 * self.eps / max(self.steps, 1)


@dataclass
class AttackContext:
    """What an attack may need beyond the batch: device, training data, cache.

    ``train_x``/``train_y`` are the samples a learned attack (the GAN) trains
    on, disjoint from the evaluation samples where the data allows it.
    ``facts`` is filled by the attack with what the report should show
    (for the GAN: how the generator was obtained).
    """

    device: Any = "cpu"
    train_x: Any = None
    train_y: Any = None
    cache_dir: Optional[Path] = None
    retrain: bool = False
    progress: Optional[Callable[[str], None]] = None
    warn: Optional[Callable[[str], None]] = None
    quiet: bool = False
    facts: dict = field(default_factory=dict)


class Attack(Protocol):
    """An attack maps (model, x, y) to adversarial inputs inside the bound.

    ``model`` is frozen, in eval mode, on ``ctx.device`` and already includes
    any preprocessing; ``x`` and ``y`` are on ``ctx.device``. The result has
    the shape and dtype of ``x``, satisfies ``||x_adv - x|| <= eps`` in
    ``cfg.norm`` and lies inside ``cfg.bounds``.
    """

    name: str

    def __call__(
        self,
        model: Model,
        x: "torch.Tensor",
        y: "torch.Tensor",
        cfg: AttackConfig,
        ctx: AttackContext,
    ) -> "torch.Tensor": ...
