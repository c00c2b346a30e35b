"""The attack protocol: configuration, context, and the bound every attack keeps.

:func:`check_bound` rejects an attack result that is not a bounded perturbation.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol, Tuple

from ..errors import AdvRobustError
from ..geometry import NORMS, bound, clip_bounds, perturbation_norms, project  # noqa: F401
from ..runtime import Runtime

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
    """What an attack may need beyond the batch: device, training data, the run.

    ``train_x``/``train_y`` are the samples a learned attack (the GAN) trains
    on, disjoint from the evaluation samples where the data allows it.
    ``runtime`` (:class:`~pytest_advrobust.runtime.Runtime`) holds the cache folder,
    ``retrain`` and where progress lines and warnings go. ``facts`` is filled by the
    attack with what the report should show (for the GAN: how the generator was
    obtained); :meth:`fresh` gives the same context with no facts, for the next call.
    """

    device: Any = "cpu"
    train_x: Any = None
    train_y: Any = None
    runtime: Runtime = field(default_factory=Runtime)
    facts: dict = field(default_factory=dict)

    def fresh(self, **changes: Any) -> AttackContext:
        """This context with no facts yet (and ``changes``, e.g. another ``runtime``)."""
        return replace(self, facts={}, **changes)


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


def check_bound(
    name: str, x: "torch.Tensor", x_adv: "torch.Tensor", cfg, record: Any = None, fixture: str = ""
) -> None:
    """Reject an attack result that is not a bounded perturbation of ``x``.

    ``record`` (what the model guard saw) lets a NaN result be traced to the model
    from ``fixture`` when its outputs or input gradients were not finite.
    """
    import torch

    if not isinstance(x_adv, torch.Tensor) or x_adv.shape != x.shape:
        shape = tuple(x_adv.shape) if isinstance(x_adv, torch.Tensor) else type(x_adv).__name__
        raise AdvRobustError(
            f"attack {name!r} returned {shape}, not a tensor of the input shape {tuple(x.shape)}"
        )
    if not torch.isfinite(x_adv).all():
        raise _nonfinite_result(name, record, fixture)
    slack = 1e-5 * max(1.0, cfg.eps)
    # In float64: exact for the differences of float16/bfloat16/float32 values.
    worst = (
        float(perturbation_norms(x.double(), x_adv.double(), cfg.norm).max()) if x.numel() else 0.0
    )
    if worst > cfg.eps + slack:
        raise AdvRobustError(
            f"attack {name!r} left the {cfg.norm} ball: perturbation {worst:.6g} > eps {cfg.eps:g}"
        )
    if cfg.bounds is not None:
        lo, hi = cfg.bounds
        if float(x_adv.min()) < lo - 1e-6 or float(x_adv.max()) > hi + 1e-6:
            raise AdvRobustError(f"attack {name!r} returned inputs outside bounds ({lo:g}, {hi:g})")


def _nonfinite_result(name: str, record: Any, fixture: str) -> AdvRobustError:
    """The sentence for an attack result with NaN or infinite values: the model's own
    non-finite outputs or gradients when the guard saw any, else the attack's."""
    outputs = getattr(record, "nonfinite_outputs", 0)
    grads = getattr(record, "nonfinite_rows", 0)
    if outputs or grads:
        seen = []
        if outputs:
            seen.append(f"NaN or infinite logits for {outputs} of {record.output_rows} inputs")
        if grads:
            seen.append(
                f"NaN or infinite input gradients for {grads} of {record.gradient_rows} inputs"
            )
        return AdvRobustError(
            f"the model from fixture {fixture!r} gave {' and '.join(seen)} the attacks tried, "
            f"and attack {name!r} could not find finite adversarial inputs from them; make "
            "the model's forward pass numerically safe (sqrt, log or division at 0, overflow)"
        )
    return AdvRobustError(f"attack {name!r} returned NaN or infinite inputs")
