"""AdvGAN training (Xiao et al., 2018) against a frozen classifier.

The generator ``G`` maps ``x`` to a bounded ``x_adv`` (see
:mod:`.networks`). Each step minimises

    adv_weight * mean(max(Z_y(x_adv) - max_{j != y} Z_j(x_adv), -kappa))
  + gan_weight * mean((D(x_adv) - 1) ** 2)

(a Carlini-Wagner margin against the frozen model plus the least-squares GAN
loss), while the discriminator ``D`` minimises the least-squares loss
``mean((D(x) - 1) ** 2) + mean(D(x_adv) ** 2)``. All losses are means, so the
weights do not depend on the batch size. A held-out split measures the
attack success (the share of correctly classified held-out samples that the
generator's output fools); the best state by that measure is kept and
training stops after ``patience`` evaluations without improvement, at
``target_success``, or at ``max_steps`` / ``max_seconds``.

Reproducibility: weights are initialised and batches drawn from generators
seeded with ``seed``; on the CPU the same inputs and seed give bit-identical
weights (unless ``max_seconds`` cuts the training short).

Several processes (``advrobust warm`` under ``torchrun``, see
:mod:`pytest_advrobust.distributed`): the generator and discriminator are
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
"""

from __future__ import annotations

import dataclasses
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn as nn

from ..geometry import NORMS
from ..modelguard import check_logits, frozen
from .networks import Generator, build_discriminator, build_generator, input_direction

__all__ = ["GanConfig", "TrainResult", "margin", "train_generator"]

#: On CUDA each step sees this many times ``batch_size`` samples (the GPU is launch-bound).
CUDA_BATCH_FACTOR = 4
#: Keep the training set on the GPU when it is smaller than this many bytes.
_DEVICE_DATA_LIMIT = 2 * 1024**3
_EVAL_BATCH = 1024
_MAX_PROGRESS_LINES = 10


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

    def replace(self, **changes: Any) -> "GanConfig":
        return dataclasses.replace(self, **changes)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass
class TrainResult:
    """What :func:`train_generator` returns.

    ``generator`` is in eval mode on the training device; ``holdout_success``
    is the best held-out success (the state kept); ``mode`` is ``"cold"`` or
    ``"warm"``; ``history`` lists ``(step, held-out success)`` per evaluation.
    ``world_size`` is the number of processes that trained together and
    ``rank_samples`` the number of training samples each of them processed.
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
    forward_samples: int = 0
    backward_samples: int = 0


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample ``Z_y - max_{j != y} Z_j`` (negative when misclassified); float32."""
    logits = logits.float()
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], -math.inf).amax(dim=1)
    return true - other


# --------------------------------------------------------------------------- training
def _seeded_networks(sample_shape, cfg: GanConfig, need_d: bool):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        gen = build_generator(
            sample_shape,
            cfg.eps,
            cfg.norm,
            cfg.bounds,
            width=cfg.width,
            n_res=cfg.n_res,
            grad_input=cfg.grad_input,
        )
        torch.manual_seed(cfg.seed + 1)
        disc = build_discriminator(sample_shape) if need_d else None
    return gen, disc


def _predict(model, x: torch.Tensor, device, batch: int, autocast) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for s in range(0, x.shape[0], batch):
            with autocast():
                logits = model(x[s : s + batch].to(device, non_blocking=True))
            check_logits(logits, x[s : s + batch].shape[0], "robust_model")
            out.append(logits.float().argmax(dim=1).cpu())
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


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
    distributed: Optional[bool] = None,
) -> TrainResult:
    """Train an AdvGAN generator against ``model``.

    ``model``: maps ``(N, *sample_shape)`` inputs on ``device`` to ``(N, K)``
    logits; frozen (eval mode, no weight gradients) during training and
    restored afterwards. ``x``: ``(N, *sample_shape)`` inputs inside
    ``cfg.bounds``, ``y``: ``(N,)`` integer labels; any device (batches are
    moved to ``device``). ``init_state``: a generator state dict to start
    from (a warm start: ``mode="warm"``, ``warm_fraction`` of the budget).
    ``progress``: called with at most ~10 one-line messages (on rank 0 only).
    ``distributed``: train with every rank of the process group that
    :func:`pytest_advrobust.distributed.init_from_env` set up (every rank
    must call this with the same model, data and settings); ``None`` (the
    default) does so whenever that group has more than one process. In
    distributed mode ``init_state`` and the warm/cold decision are rank 0's.
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
    dev = _resolve_device(device)
    if distributed is None:
        from .. import distributed as _dd

        distributed = _dd.is_distributed()
    sync = _Sync(bool(distributed))
    with frozen(model), torch.random.fork_rng(devices=[]):
        return _train(model, x, y.long(), cfg, dev, init_state, progress, sync)


def _train(
    model, x, y, cfg: GanConfig, dev: torch.device, init_state, progress, sync: "_Sync"
) -> TrainResult:
    t0 = time.perf_counter()
    cuda = dev.type == "cuda"
    say = _Progress(progress if sync.rank == 0 else None)
    sample_shape = tuple(x.shape[1:])
    use_gan = cfg.gan_weight > 0
    gen, disc = _seeded_networks(sample_shape, cfg, use_gan)
    mode = "cold"
    warm = sync.broadcast_flag(init_state is not None)  # rank 0's decision
    if init_state is not None:
        gen.load_state_dict(init_state)
    if warm:
        mode = "warm"
    budget_steps = (
        cfg.max_steps
        if mode == "cold"
        else max(1, int(math.ceil(cfg.max_steps * cfg.warm_fraction)))
    )
    budget_seconds = cfg.max_seconds if mode == "cold" else cfg.max_seconds * cfg.warm_fraction

    # Mixed precision for the training steps; channels_last only for our own networks on CUDA.
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and dev.type == "cuda")
    amp = _bf16_autocast(dev) if use_bf16 else None

    def autocast():
        return amp() if amp is not None else _null()

    def fp32():
        return _null()

    image = x.dim() == 4
    mem_fmt = torch.channels_last if (cuda and image) else torch.contiguous_format
    gen = gen.to(dev, memory_format=mem_fmt)
    if disc is not None:
        disc = disc.to(dev, memory_format=mem_fmt)
    # What the training steps call: the networks themselves, or their DDP wrappers.
    gen_step, disc_step = sync.wrap(gen, dev), sync.wrap(disc, dev) if disc is not None else None

    # Split: held-out samples drive early stopping.
    g_split = torch.Generator().manual_seed(cfg.seed)
    n = x.shape[0]
    perm = torch.randperm(n, generator=g_split)
    n_hold = min(cfg.holdout_max, int(round(n * cfg.holdout_fraction)))
    if n - n_hold < 2:
        n_hold = 0
    hold_idx, train_idx = perm[:n_hold], perm[n_hold:]
    if n_hold == 0:
        hold_idx = train_idx
    if sync.active:  # each rank evaluates its share of the held-out samples
        hold_idx = hold_idx[sync.rank :: sync.world]
    x_src = x.detach()
    if cuda and x_src.device != dev and x_src.numel() * x_src.element_size() <= _DEVICE_DATA_LIMIT:
        x_src = x_src.to(dev)
    y_src = y.to(x_src.device)
    x_hold, y_hold = x_src[hold_idx.to(x_src.device)], y[hold_idx.to(y.device)].cpu()
    clean_pred = _predict(model, x_hold, dev, _EVAL_BATCH, fp32)
    correct = clean_pred == y_hold
    passes = {"forward": int(x_hold.shape[0]), "backward": 0}
    d_hold = None
    if cfg.grad_input:  # the model is frozen and the held-out inputs fixed: directions once
        d_hold = torch.cat(
            [
                input_direction(
                    model,
                    x_hold[s : s + _EVAL_BATCH].to(dev),
                    y_hold[s : s + _EVAL_BATCH].to(dev),
                    cfg.norm,
                )
                for s in range(0, x_hold.shape[0], _EVAL_BATCH)
            ]
        )
        passes["forward"] += int(x_hold.shape[0])
        passes["backward"] += int(x_hold.shape[0])

    def evaluate() -> float:
        passes["forward"] += int(x_hold.shape[0])
        sync.sync_module(gen)  # identical weights and batch-norm statistics on every rank
        gen.eval()
        preds = []
        with torch.no_grad():
            for s in range(0, x_hold.shape[0], _EVAL_BATCH):
                xb = x_hold[s : s + _EVAL_BATCH].to(dev, non_blocking=True)
                db = d_hold[s : s + _EVAL_BATCH] if d_hold is not None else None
                x_adv = gen(xb.contiguous(memory_format=mem_fmt) if image else xb, db)
                logits = model(x_adv)
                preds.append(logits.float().argmax(dim=1).cpu())
        gen.train()
        fooled = (torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)) != y_hold
        if sync.active:
            n_fc, n_c, n_f, n_all = sync.sum_ints(
                [
                    int((fooled & correct).sum()),
                    int(correct.sum()),
                    int(fooled.sum()),
                    int(fooled.numel()),
                ]
            )
            if n_c > 0:
                return n_fc / n_c
            return n_f / n_all if n_all > 0 else 0.0
        if bool(correct.any()):
            return float(fooled[correct].float().mean())
        return float(fooled.float().mean())

    batch = cfg.batch_size * (CUDA_BATCH_FACTOR if cuda else 1)
    batch = max(2, min(batch, train_idx.numel()))
    if sync.active:  # at least 2 samples per rank (batch norm in training mode)
        if train_idx.numel() < 2 * sync.world:
            raise ValueError(
                f"{train_idx.numel()} training samples are too few for {sync.world} "
                "processes (at least 2 per process)"
            )
        batch = max(batch, 2 * sync.world)
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    opt_d = (
        torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
        if disc is not None
        else None
    )
    lr_at = _cosine(cfg.lr, cfg.lr * cfg.lr_final, budget_steps)
    g_order = torch.Generator().manual_seed(cfg.seed + 2)

    procs = f" x {sync.world} processes" if sync.active else ""
    say(
        f"training GAN generator on {dev}{procs} ({mode}): {train_idx.numel()} samples, "
        f"{n_hold} held out, up to {budget_steps} steps or {budget_seconds:.0f} s"
    )
    gen.train()
    history: List[Tuple[int, float]] = []
    best = evaluate()
    history.append((0, best))
    best_state = _clone_state(gen)
    best_step, stale, step, reason = 0, 0, 0, "max_steps"
    next_report = 1
    order = torch.empty(0, dtype=torch.long)
    pos = 0
    if best >= cfg.target_success:
        reason = "target"
    samples = 0
    samples_grad = 0
    # Distributed: rank 0's clock decides, agreed on once per step (with the loss check).
    clock_up = (
        sync.broadcast_flag(time.perf_counter() - t0 >= budget_seconds) if sync.active else False
    )
    while reason != "target" and step < budget_steps:
        out_of_time = clock_up if sync.active else time.perf_counter() - t0 >= budget_seconds
        if out_of_time:
            reason = "max_seconds"
            break
        if pos + batch > order.numel():
            order = train_idx[torch.randperm(train_idx.numel(), generator=g_order)]
            pos = 0
        idx = order[pos : pos + batch]
        pos += batch
        share = 1.0
        if (
            sync.active
        ):  # this rank's slice; its loss weighted so that the DDP mean is the global mean
            n_global = idx.numel()
            idx = idx.tensor_split(sync.world)[sync.rank]
            share = idx.numel() * sync.world / n_global
        samples += idx.numel()
        xb = x_src[idx.to(x_src.device)].to(dev, non_blocking=True)
        yb = y_src[idx.to(y_src.device)].to(dev, non_blocking=True)
        if image:
            xb = xb.contiguous(memory_format=mem_fmt)
        lr = lr_at(step)
        for opt in (opt_g, opt_d):
            if opt is not None:
                for group in opt.param_groups:
                    group["lr"] = lr

        # Generator step (the discriminator's weights are frozen meanwhile) ...
        if disc is not None:
            disc.requires_grad_(False)
        db = None
        if cfg.grad_input:
            db = input_direction(model, xb, yb, cfg.norm)
            samples_grad += idx.numel()
        with autocast():
            x_adv = gen_step(xb, db) if db is not None else gen_step(xb)
            logits = model(x_adv)
            adv_loss = margin(logits, yb).clamp(min=-cfg.kappa).mean()
            loss = cfg.adv_weight * adv_loss
            if (
                disc is not None
            ):  # the bare discriminator: its DDP wrapper reduces only in its own step
                loss = loss + cfg.gan_weight * ((disc(x_adv).float() - 1) ** 2).mean()
        opt_g.zero_grad(set_to_none=True)
        (loss * share if sync.active else loss).backward()
        opt_g.step()
        # ... then the discriminator step on the same (detached) adversarial batch.
        if disc is not None:
            disc.requires_grad_(True)
            with autocast():
                if sync.active:  # one forward per backward under DDP: real and fake in one batch
                    scores = disc_step(torch.cat([xb, x_adv.detach()])).float()
                    real, fake = scores[: xb.shape[0]], scores[xb.shape[0] :]
                    d_loss = 0.5 * (((real - 1) ** 2).mean() + (fake**2).mean()) * share
                else:
                    d_loss = 0.5 * (
                        ((disc(xb).float() - 1) ** 2).mean()
                        + (disc(x_adv.detach()).float() ** 2).mean()
                    )
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
        bad = not bool(torch.isfinite(loss.detach()))
        if sync.active:
            bad, clock_up = sync.any_flags(
                [bad, sync.rank == 0 and time.perf_counter() - t0 >= budget_seconds]
            )
        if bad:
            raise FloatingPointError(
                f"GAN training diverged at step {step + 1} (loss is not finite)"
            )
        step += 1

        if step % cfg.eval_every == 0 or step == budget_steps:
            success = evaluate()
            history.append((step, success))
            if success > best:
                best, best_state, best_step, stale = success, _clone_state(gen), step, 0
            else:
                stale += 1
            elapsed = time.perf_counter() - t0
            frac = max(step / budget_steps, elapsed / budget_seconds)
            if frac * 8 >= next_report:
                next_report = int(frac * 8) + 1
                say(
                    f"step {step}/{budget_steps}, {elapsed:.0f} s: held-out success "
                    f"{success:.3f} (best {best:.3f})"
                )
            if best >= cfg.target_success:
                reason = "target"
            elif stale >= cfg.patience:
                reason = "patience"
                break
    if history[-1][0] != step:  # stopped between evaluations (time budget)
        success = evaluate()
        history.append((step, success))
        if success > best:
            best, best_state, best_step = success, _clone_state(gen), step
    if sync.active:  # hand back a generator without DDP's hooks on its parameters
        del gen_step, disc_step
        gen, _ = _seeded_networks(sample_shape, cfg, False)
        gen = gen.to(dev, memory_format=mem_fmt)
    gen.load_state_dict(best_state)
    gen.eval()
    rank_samples = sync.per_rank(samples)
    seconds = time.perf_counter() - t0
    say(
        f"done: {step} steps in {seconds:.1f} s ({reason}), best held-out success {best:.3f} "
        f"at step {best_step}"
    )
    return TrainResult(
        generator=gen,
        steps=step,
        seconds=seconds,
        device=str(dev),
        holdout_success=best,
        mode=mode,
        stop_reason=reason,
        history=history,
        world_size=sync.world,
        rank_samples=rank_samples,
        forward_samples=passes["forward"] + samples + samples_grad,
        backward_samples=passes["backward"] + samples + samples_grad,
    )


class _Sync:
    """The collectives of one training; all trivial for a single process."""

    def __init__(self, active: bool):
        self.active = False
        self.rank, self.world = 0, 1
        if active:
            from .. import distributed as dd

            if not dd.is_distributed():
                raise RuntimeError(
                    "distributed training needs pytest_advrobust.distributed.init_from_env() "
                    "to have joined a process group of more than one process"
                )
            import torch.distributed as dist

            self.active, self.dist = True, dist
            self.rank, self.world = dd.rank(), dd.world_size()
            self.dev = dd.collective_device()

    def wrap(self, module: nn.Module, dev: torch.device) -> nn.Module:
        """``module`` in DistributedDataParallel (buffers are synchronised before evaluations)."""
        if not self.active:
            return module
        import inspect

        from torch.nn.parallel import DistributedDataParallel

        kwargs = {"device_ids": [dev.index] if dev.type == "cuda" else None}
        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
            kwargs["forward_sync_buffers"] = False  # torch >= 2.12 (buffers still synced at init)
        else:
            kwargs["broadcast_buffers"] = False
        return DistributedDataParallel(module, **kwargs)

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank."""
        if not self.active:
            return bool(flag)
        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self.dev)
        self.dist.broadcast(t, src=0)
        return bool(t.item())

    def any_flags(self, flags: List[bool]) -> List[bool]:
        """Per position: true when true on some rank."""
        t = torch.tensor([1 if f else 0 for f in flags], dtype=torch.int32, device=self.dev)
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]

    def sum_ints(self, values: List[int]) -> List[int]:
        t = torch.tensor(values, dtype=torch.int64, device=self.dev)
        self.dist.all_reduce(t)
        return [int(v) for v in t.tolist()]

    def per_rank(self, value: int) -> List[int]:
        """Every rank's ``value``, in rank order."""
        if not self.active:
            return [int(value)]
        one_hot = [0] * self.world
        one_hot[self.rank] = int(value)
        return self.sum_ints(one_hot)

    def sync_module(self, module: nn.Module) -> None:
        """Overwrite every parameter and buffer with rank 0's."""
        if not self.active:
            return
        with torch.no_grad():
            for t in module.state_dict().values():  # views of the module's own tensors
                if not isinstance(t, torch.Tensor):
                    continue
                if t.is_contiguous():
                    self.dist.broadcast(t, src=0)
                else:
                    c = t.contiguous()
                    self.dist.broadcast(c, src=0)
                    t.copy_(c)


def _bf16_autocast(dev: torch.device):
    """A bfloat16 autocast factory for ``dev``, or ``None`` when bf16 would not be native there."""
    try:
        if dev.type == "cuda":
            native = torch.cuda.is_bf16_supported()
        elif dev.type == "cpu":
            native = bool(
                torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
            )
        else:
            native = False
    except (AttributeError, RuntimeError):
        native = False
    if not native:
        return None
    return lambda: torch.autocast(dev.type, dtype=torch.bfloat16)


def _clone_state(module: nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _cosine(lr0: float, lr1: float, total: int) -> Callable[[int], float]:
    def at(step: int) -> float:
        t = min(1.0, step / max(1, total))
        return lr1 + 0.5 * (lr0 - lr1) * (1 + math.cos(math.pi * t))

    return at


@contextmanager
def _null() -> Iterator[None]:
    yield


class _Progress:
    """Forwards at most ``_MAX_PROGRESS_LINES`` messages to ``progress``."""

    def __init__(self, progress: Optional[Callable[[str], None]]):
        self.progress = progress
        self.count = 0

    def __call__(self, msg: str) -> None:
        if self.progress is None or self.count >= _MAX_PROGRESS_LINES:
            return
        self.count += 1
        self.progress(f"advrobust gan: {msg}")
