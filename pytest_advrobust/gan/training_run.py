"""The state of one AdvGAN training and the phases that set it up.

:class:`TrainingRun` holds what one call of
:func:`pytest_advrobust.gan.train.train_generator` works with;
:func:`setup_networks`, :func:`setup_data` and :func:`setup_optimisers` fill
it in, in that order (the order fixes the seeds' and the collectives' order,
so it is part of the reproducibility contract).
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from typing import Callable, Optional, Tuple

import torch

from . import holdout
from .config import GanConfig
from .distributed import TrainingSync
from .networks import build_discriminator, build_generator

__all__ = [
    "CUDA_BATCH_FACTOR",
    "TrainingRun",
    "seeded_networks",
    "setup_data",
    "setup_networks",
    "setup_optimisers",
]

#: On CUDA each step sees this many times ``batch_size`` samples (the GPU is launch-bound).
CUDA_BATCH_FACTOR = 4
#: Keep the training set on the GPU when it is smaller than this many bytes.
_DEVICE_DATA_LIMIT = 2 * 1024**3
#: Longest silence, in seconds, of a training that reports progress.
HEARTBEAT_SECONDS = 30.0


class TrainingRun:
    """The state of one training: filled in by the ``setup_*`` phases, advanced by the steps.

    ``gen``/``disc`` are the networks, ``gen_step``/``disc_step`` what the
    training steps call (the networks themselves, or their DDP wrappers);
    ``step``, ``reason`` (why the training stopped), ``samples`` (this rank's
    training samples), ``order``/``pos`` (the shuffled training indices and
    the next one to use) and ``clock_up`` (rank 0's clock ran out) change as it
    goes.
    """

    def __init__(self, model, cfg: GanConfig, dev: torch.device, sync: TrainingSync, progress):
        self.t0 = time.perf_counter()
        self.model, self.cfg, self.dev, self.sync = model, cfg, dev, sync
        self.say = _Progress(progress if sync.rank == 0 else None)
        self.step, self.reason, self.samples = 0, "max_steps", 0
        self.order, self.pos, self.next_report = torch.empty(0, dtype=torch.long), 0, 1
        self.clock_up = False

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def seeded_networks(sample_shape, cfg: GanConfig, need_d: bool):
    """``(generator, discriminator or None)`` on the CPU, from seeds ``cfg.seed`` and ``+ 1``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        gen = build_generator(sample_shape, **cfg.generator_args())
        torch.manual_seed(cfg.seed + 1)
        disc = build_discriminator(sample_shape) if need_d else None
    return gen, disc


def setup_networks(run: TrainingRun, sample_shape: Tuple[int, ...], init_state) -> None:
    """Seeded networks (``init_state`` on rank 0 makes a warm start), the budget, precision."""
    cfg, dev = run.cfg, run.dev
    run.sample_shape = sample_shape
    gen, disc = seeded_networks(sample_shape, cfg, cfg.gan_weight > 0)
    warm = run.sync.broadcast_flag(init_state is not None)  # rank 0's decision
    if init_state is not None:
        gen.load_state_dict(init_state)
    run.mode = "warm" if warm else "cold"
    run.budget_steps, run.budget_seconds = cfg.max_steps, cfg.max_seconds
    if warm:
        run.budget_steps = max(1, int(math.ceil(cfg.max_steps * cfg.warm_fraction)))
        run.budget_seconds = cfg.max_seconds * cfg.warm_fraction
    # Mixed precision for the training steps; channels_last only for our own networks on CUDA.
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and dev.type == "cuda")
    amp = _bf16_autocast(dev) if use_bf16 else None
    run.autocast = amp if amp is not None else nullcontext
    run.image = len(sample_shape) == 3
    cuda_image = dev.type == "cuda" and run.image
    run.mem_fmt = torch.channels_last if cuda_image else torch.contiguous_format
    run.gen = gen.to(dev, memory_format=run.mem_fmt)
    run.disc = disc.to(dev, memory_format=run.mem_fmt) if disc is not None else None
    run.gen_step = run.sync.wrap(run.gen, dev)
    run.disc_step = run.sync.wrap(run.disc, dev) if run.disc is not None else None


def setup_data(run: TrainingRun, x: torch.Tensor, y: torch.Tensor) -> None:
    """The held-out split, and the training data on the GPU when it is small enough."""
    hold_idx, run.train_idx, run.n_hold = holdout.split(x.shape[0], run.cfg, run.sync)
    x_src = x.detach()
    nbytes = x_src.numel() * x_src.element_size()
    if run.dev.type == "cuda" and x_src.device != run.dev and nbytes <= _DEVICE_DATA_LIMIT:
        x_src = x_src.to(run.dev)
    run.x_src, run.y_src = x_src, y.to(x_src.device)
    run.hold = holdout.Holdout(run, x_src, y, hold_idx)


def setup_optimisers(run: TrainingRun) -> None:
    """The batch size, Adam for both networks, the cosine schedule and the batch order."""
    cfg, sync, n_train = run.cfg, run.sync, run.train_idx.numel()
    batch = cfg.batch_size * (CUDA_BATCH_FACTOR if run.dev.type == "cuda" else 1)
    batch = max(2, min(batch, n_train))
    if sync.active:  # at least 2 samples per rank (batch norm in training mode)
        if n_train < 2 * sync.world:
            raise ValueError(
                f"{n_train} training samples are too few for {sync.world} "
                "processes (at least 2 per process)"
            )
        batch = max(batch, 2 * sync.world)
    run.batch = batch
    run.opt_g = torch.optim.Adam(run.gen.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    run.opt_d = None
    if run.disc is not None:
        run.opt_d = torch.optim.Adam(run.disc.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    run.lr_at = _cosine(cfg.lr, cfg.lr * cfg.lr_final, run.budget_steps)
    run.g_order = torch.Generator().manual_seed(cfg.seed + 2)
    run.g_eps = torch.Generator().manual_seed(cfg.seed + 3)


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


def _cosine(lr0: float, lr1: float, total: int) -> Callable[[int], float]:
    def at(step: int) -> float:
        t = min(1.0, step / max(1, total))
        return lr1 + 0.5 * (lr0 - lr1) * (1 + math.cos(math.pi * t))

    return at


class _Progress:
    """Forwards messages to ``progress`` as ``advrobust gan: ...`` lines and remembers when
    the last one went out (:meth:`due`: :data:`HEARTBEAT_SECONDS` of silence)."""

    def __init__(self, progress: Optional[Callable[[str], None]]):
        self.progress = progress
        self.last = time.perf_counter()

    def due(self) -> bool:
        return self.progress is not None and time.perf_counter() - self.last >= HEARTBEAT_SECONDS

    def __call__(self, msg: str) -> None:
        if self.progress is None:
            return
        self.last = time.perf_counter()
        self.progress(f"advrobust gan: {msg}")
