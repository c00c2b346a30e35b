"""AdvGAN training (Xiao et al., 2018) against a frozen classifier.

The generator ``G`` maps ``x`` and a budget ``eps`` to a bounded ``x_adv``
(see :mod:`.networks`); each training sample draws its eps log-uniformly
from ``cfg.eps_range``, so that one generator serves every eps of the
range. Each step minimises

    adv_weight * mean(max(Z_y(x_adv) - max_{j != y} Z_j(x_adv), -kappa))
  + gan_weight * mean((D(x_adv) - 1) ** 2)

(a Carlini-Wagner margin against the frozen model plus the least-squares GAN
loss), while the discriminator ``D`` minimises the least-squares loss
``mean((D(x) - 1) ** 2) + mean(D(x_adv) ** 2)``. All losses are means, so the
weights do not depend on the batch size. A held-out split measures the
attack success (the share of correctly classified held-out samples that the
generator's output fools, averaged over a few budgets of the range); the best
state by that measure is kept and training stops after ``patience`` evaluations
without improvement, at ``target_success``, or at ``max_steps`` / ``max_seconds``.

Reproducibility: weights are initialised and batches drawn from generators
seeded with ``seed``; on the CPU the same inputs and seed give bit-identical
weights (unless ``max_seconds`` cuts the training short).

Several processes (``advrobust warm`` under ``torchrun``, see
:mod:`pytest_advrobust.gan.distributed`): the generator and discriminator are
wrapped in DistributedDataParallel. Every rank draws the same global batch
from the same seeded generator and trains on its own contiguous 1/W slice of
it, with its loss weighted by the slice's share, so the all-reduced gradient
is the gradient of the single-process loss on the global batch (batch norm
layers normalise each slice with its own statistics, as usual under DDP). The
weights and buffers are broadcast from rank 0 before every held-out
evaluation; the evaluation is sharded over the ranks and its counts summed,
so every rank gets the same number and makes the same early-stopping
decision; rank 0's clock alone decides ``max_seconds``, and a non-finite loss
on any rank stops all of them. Every rank ends with the same weights. The
settings (and so the cache key) do not depend on the number of processes.

Where each part lives: the settings in :mod:`.config`, the state of one
training and its set-up in :mod:`.training_run`, one step in :mod:`.steps`, the
held-out split, evaluation and early stopping in :mod:`.holdout`, the
collectives in :class:`pytest_advrobust.gan.distributed.TrainingSync`; this module
runs the loop and hands back the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from ..inputs.model import frozen
from . import holdout
from .config import GanConfig
from .distributed import TrainingSync, is_distributed
from .networks import Generator
from .steps import margin, train_step
from .training_run import TrainingRun, seeded_networks, setup_data, setup_networks, setup_optimisers

__all__ = ["GanConfig", "TrainResult", "margin", "train_generator"]


@dataclass
class TrainResult:
    """What :func:`train_generator` returns.

    ``generator`` is in eval mode on the training device; ``holdout_success``
    is the best held-out success (the state kept); ``mode`` is ``"cold"`` or
    ``"warm"``; ``history`` lists ``(step, held-out success)`` per evaluation.
    ``world_size`` is the number of processes that trained together and
    ``rank_samples`` the number of training samples each of them processed.
    ``success_curve`` is the kept generator's held-out success at budgets spread
    over ``eps_range`` (``[[eps, success], ...]``); ``holdout_accuracy`` the model's clean
    accuracy on the held-out split.
    ``forward_samples``/``backward_samples`` count the model's forward and
    backward passes in samples (this rank's, held-out evaluations included).
    """

    generator: Generator
    steps: int
    seconds: float
    device: str
    holdout_success: float
    mode: str
    stop_reason: str = ""
    history: List[Tuple[int, float]] = field(default_factory=list)
    world_size: int = 1
    rank_samples: List[int] = field(default_factory=list)
    success_curve: List[List[float]] = field(default_factory=list)
    holdout_accuracy: float = float("nan")
    forward_samples: int = 0
    backward_samples: int = 0


# --------------------------------------------------------------------------- entry
def _resolve_device(device: Any) -> torch.device:
    dev = torch.device(device if device is not None else "cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def train_generator(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: GanConfig,
    device: Any = "cpu",
    init_state: Optional[Dict[str, torch.Tensor]] = None,
    progress: Optional[Callable[[str], None]] = None,
) -> TrainResult:
    """Train an AdvGAN generator against ``model``.

    ``model``: maps ``(N, *sample_shape)`` inputs on ``device`` to ``(N, K)``
    logits; frozen (eval mode, no weight gradients) during training and
    restored afterwards. ``x``: ``(N, *sample_shape)`` inputs inside
    ``cfg.bounds``, ``y``: ``(N,)`` integer labels; any device (batches are
    moved to ``device``). ``init_state``: a generator state dict to start
    from (a warm start: ``mode="warm"``, ``warm_fraction`` of the budget).
    ``progress``: called with one-line messages (on rank 0 only): the start, about every
    eighth of the budget, at least every 30 seconds, and the end.
    When :func:`pytest_advrobust.gan.distributed.init_from_env` set up a process
    group of more than one process, every rank trains together (every rank must
    call this with the same model, data and settings); ``init_state`` and the
    warm/cold decision are then rank 0's.
    """
    if not isinstance(cfg, GanConfig):
        raise TypeError(f"cfg must be a GanConfig, got {type(cfg).__name__}")
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError("x and y must be tensors")
    if x.dim() not in (2, 4):
        raise ValueError(f"x must have shape (N, D) or (N, C, H, W), got {tuple(x.shape)}")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must have shape ({x.shape[0]},), got {tuple(y.shape)}")
    if x.shape[0] < 2:
        raise ValueError(f"x must hold at least 2 samples, got {x.shape[0]}")
    if not torch.is_floating_point(x):
        raise ValueError(f"x must be a floating-point tensor, got {x.dtype}")
    run = TrainingRun(model, cfg, _resolve_device(device), TrainingSync(is_distributed()), progress)
    with frozen(model), torch.random.fork_rng(devices=[]):
        return _train(run, x, y.long(), init_state)


# --------------------------------------------------------------------------- one training
def _train(run: TrainingRun, x, y, init_state) -> TrainResult:
    setup_networks(run, tuple(x.shape[1:]), init_state)
    setup_data(run, x, y)
    setup_optimisers(run)
    _loop(run)
    return _result(run)


def _loop(run: TrainingRun) -> None:
    """Steps with held-out evaluations until the target, patience, step or time budget stops."""
    cfg, sync = run.cfg, run.sync
    procs = f" x {sync.world} processes" if sync.active else ""
    run.say(
        f"training GAN generator on {run.dev}{procs} ({run.mode}): {run.train_idx.numel()} "
        f"samples, {run.n_hold} held out, up to {run.budget_steps} steps or "
        f"{run.budget_seconds:.0f} s"
    )
    run.gen.train()
    run.stop = holdout.EarlyStop(run.hold.success(run.gen), run.gen)
    if run.stop.best >= cfg.target_success:
        run.reason = "target"
    # Distributed: rank 0's clock decides, agreed on once per step (with the loss check).
    if sync.active:
        run.clock_up = sync.broadcast_flag(run.elapsed() >= run.budget_seconds)
    while run.reason == "max_steps" and run.step < run.budget_steps:
        if run.clock_up if sync.active else run.elapsed() >= run.budget_seconds:
            run.reason = "max_seconds"
            break
        train_step(run)
        if run.step % cfg.eval_every == 0 or run.step == run.budget_steps:
            _evaluate(run)
        elif run.say.due():
            run.say(f"step {run.step}/{run.budget_steps}, {run.elapsed():.0f} s")
    if run.stop.history[-1][0] != run.step:  # stopped between evaluations (time budget)
        run.stop.record(run.step, run.hold.success(run.gen), run.gen)


def _evaluate(run: TrainingRun) -> None:
    """One held-out evaluation: keep the best state, report, decide on stopping."""
    stop = run.stop
    success = run.hold.success(run.gen)
    stop.record(run.step, success, run.gen)
    elapsed = run.elapsed()
    frac = max(run.step / run.budget_steps, elapsed / run.budget_seconds)
    if frac * 8 >= run.next_report:
        run.next_report = int(frac * 8) + 1
        run.say(
            f"step {run.step}/{run.budget_steps}, {elapsed:.0f} s: held-out success "
            f"{success:.3f} (best {stop.best:.3f})"
        )
    if stop.best >= run.cfg.target_success:
        run.reason = "target"
    elif stop.stale >= run.cfg.patience and run.step < run.budget_steps:
        run.reason = "patience"  # at the last step the budget, not patience, ended it


def _result(run: TrainingRun) -> TrainResult:
    """The best state in a bare generator (no DDP hooks), in eval mode."""
    gen, stop = run.gen, run.stop
    if run.sync.active:  # hand back a generator without DDP's hooks on its parameters
        run.gen_step = run.disc_step = None
        gen, _ = seeded_networks(run.sample_shape, run.cfg, False)
        gen = gen.to(run.dev, memory_format=run.mem_fmt)
    gen.load_state_dict(stop.best_state)
    gen.eval()
    curve = run.hold.curve(gen)
    rank_samples = run.sync.per_rank(run.samples)
    seconds = run.elapsed()
    run.say(
        f"done: {run.step} steps in {seconds:.1f} s ({run.reason}), best held-out success "
        f"{stop.best:.3f} at step {stop.best_step}"
    )
    return TrainResult(
        generator=gen,
        steps=run.step,
        seconds=seconds,
        device=str(run.dev),
        holdout_success=stop.best,
        mode=run.mode,
        stop_reason=run.reason,
        history=stop.history,
        world_size=run.sync.world,
        rank_samples=rank_samples,
        success_curve=curve,
        holdout_accuracy=run.hold.accuracy(),
        forward_samples=run.hold.forward + run.samples,
        backward_samples=run.hold.backward + run.samples,
    )
