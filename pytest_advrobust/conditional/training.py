"""Training of the conditional generator (AC-GAN, hinge loss) and of the reference classifier.

Both trainings are seeded and budgeted in steps, never in seconds, so the
same data, settings and seed give the same weights on the CPU whatever the
machine's load. Batches are drawn with replacement from a ``torch.Generator``
seeded with ``seed``; initial weights come from ``torch.manual_seed(seed)``
inside a forked RNG, so the caller's random state is left alone.

The generator follows AC-GAN (Odena, Olah & Shlens 2017, "Conditional Image
Synthesis with Auxiliary Classifier GANs"): the discriminator has a second
head that classifies real samples; the generator is trained to fool the
realness head and to make the class head recognise the class it was asked
for. The adversarial loss is the hinge loss and the discriminator is
spectrally normalised (Miyato et al. 2018, "Spectral Normalization for
Generative Adversarial Networks"). The discriminator's class head is trained
on real samples only, so that it cannot learn to accept the generator's
artefacts as class evidence.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F

from .networks import ReferenceClassifier, arch_for, from_arch

__all__ = [
    "ClassData",
    "GenConfig",
    "TrainResult",
    "data_range",
    "default_config",
    "train_generator",
    "train_reference",
]

Progress = Optional[Callable[[str], None]]


class ClassData(NamedTuple):
    """Labelled training samples: ``x`` float ``(N, *shape)``, ``index`` int64 ``(N,)``
    class indices into ``labels`` (int64 ``(K,)``, the dataset's labels)."""

    x: torch.Tensor
    index: torch.Tensor
    labels: torch.Tensor


@dataclass(frozen=True)
class GenConfig:
    """Settings of one generator and one reference training; :meth:`to_dict` enters the cache key.

    steps, batch_size, lr, betas: the GAN's budget and Adam settings (both networks).
    aux_weight: weight of the class (auxiliary classifier) loss of both networks.
    reference_steps, reference_lr: the reference classifier's budget and Adam rate.
    warm_fraction: share of ``steps`` a warm-started generator trains.
    noise_dim, width: capacity (``None``: the networks' defaults for the sample shape).
    """

    seed: int = 0
    steps: int = 600
    batch_size: int = 64
    lr: float = 1e-3
    betas: Tuple[float, float] = (0.5, 0.999)
    aux_weight: float = 1.0
    reference_steps: int = 300
    reference_lr: float = 1e-3
    warm_fraction: float = 0.25
    noise_dim: Optional[int] = None
    width: Optional[int] = None

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d


def default_config(n_train: int, seed: int = 0, steps: Optional[int] = None) -> GenConfig:
    """Budgets that scale with the data: about 8 epochs of batch 64 for the generator
    (at least 600, at most 3000 steps) and 3 epochs for the reference (200 to 1500).
    ``steps`` (``--advrobust-gan-steps``) replaces the generator's budget."""
    per_epoch = max(1, -(-int(n_train) // 64))
    gen_steps = int(min(3000, max(600, 8 * per_epoch))) if steps is None else int(steps)
    ref_steps = int(min(1500, max(200, 3 * per_epoch)))
    return GenConfig(seed=int(seed), steps=gen_steps, reference_steps=ref_steps)


@dataclass
class TrainResult:
    """A trained network and how it was obtained (``mode``: ``"cold"`` or ``"warm"``)."""

    network: torch.nn.Module
    mode: str
    steps: int
    seconds: float
    device: str
    holdout_accuracy: Optional[float] = None


def data_range(x: torch.Tensor, bounds: Optional[Tuple[float, float]]):
    """``(center, scale)`` of one sample's shape: the bounds' midpoint and half-width, or
    the per-feature mean and three standard deviations of ``x`` for unbounded features."""
    shape = x.shape[1:]
    if bounds is not None:
        lo, hi = float(bounds[0]), float(bounds[1])
        return torch.full(shape, (lo + hi) / 2), torch.full(shape, (hi - lo) / 2)
    xf = x.float()
    return xf.mean(0), (3 * xf.std(0, unbiased=False)).clamp_min(1e-3)


def _build(arch: Dict[str, Any], seed: int, center, scale, device) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = from_arch(arch)
    net.set_range(center, scale)
    return net.to(device)


def _say(progress: Progress, step: int, total: int, what: str, text: str) -> None:
    if progress is not None and total >= 10 and step % max(1, total // 5) == 0:
        progress(f"{what}: step {step}/{total} {text}")


def train_generator(
    data: ClassData,
    cfg: GenConfig,
    bounds,
    device: Any = "cpu",
    init_state: Optional[Dict[str, Any]] = None,
    progress: Progress = None,
) -> TrainResult:
    """Train a :class:`ConditionalGenerator` on ``data`` (:class:`ClassData`).

    ``data.labels`` maps class index to dataset label. With ``init_state`` (a
    generator state dict of the same architecture) the generator starts from it and
    trains ``warm_fraction`` of the steps.
    """
    t0 = time.perf_counter()
    x, labels = data.x, data.labels
    k = int(labels.numel())
    g_arch = arch_for(x.shape[1:], k, "generator", cfg.noise_dim, cfg.width)
    d_arch = dict(arch_for(x.shape[1:], k, "discriminator", cfg.noise_dim, cfg.width))
    center, scale = data_range(x, bounds)
    gen = _build(g_arch, cfg.seed, center, scale, device)
    disc = _build(d_arch, cfg.seed + 1, center, scale, device)
    with torch.no_grad():
        gen.labels.copy_(labels.to(gen.labels))
    steps, mode = cfg.steps, "cold"
    if init_state is not None:
        gen.load_state_dict(init_state)
        steps, mode = max(1, round(cfg.steps * cfg.warm_fraction)), "warm"
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
    rng = torch.Generator().manual_seed(cfg.seed)
    gen.train()
    disc.train()
    for step in range(1, steps + 1):
        loss_d, loss_g = _gan_step(gen, disc, (opt_g, opt_d), data, cfg, rng, device)
        _say(progress, step, steps, "sample generator", f"loss D {loss_d:.3f} G {loss_g:.3f}")
    gen.eval().requires_grad_(False)
    return TrainResult(gen, mode, steps, time.perf_counter() - t0, str(torch.device(device)))


def _gan_step(gen, disc, optimizers, data: ClassData, cfg: GenConfig, rng, device):
    """One discriminator step (hinge loss plus the auxiliary classifier's cross-entropy on
    real samples), then one generator step; returns both losses."""
    opt_g, opt_d = optimizers
    x, index = data.x, data.index
    k = int(gen.labels.numel())
    pick = torch.randint(x.shape[0], (cfg.batch_size,), generator=rng)
    xr, yr = x[pick].to(device), index[pick].to(device)
    noise = torch.randn(cfg.batch_size, gen.noise_dim, generator=rng).to(device)
    yf = torch.randint(k, (cfg.batch_size,), generator=rng).to(device)
    fake = gen(noise, yf)
    real_score, real_logits = disc(xr)
    fake_score, _ = disc(fake.detach())
    loss_d = (
        F.relu(1 - real_score).mean()
        + F.relu(1 + fake_score).mean()
        + cfg.aux_weight * F.cross_entropy(real_logits, yr)
    )
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    fake_score, fake_logits = disc(fake)
    loss_g = -fake_score.mean() + cfg.aux_weight * F.cross_entropy(fake_logits, yf)
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    return float(loss_d.detach()), float(loss_g.detach())


def train_reference(
    data: ClassData, cfg: GenConfig, bounds, device: Any = "cpu", progress: Progress = None
) -> TrainResult:
    """Train the :class:`ReferenceClassifier` on ``data`` (:class:`ClassData`) with
    cross-entropy.

    A seeded tenth of the samples (at most 2,000) is held out;
    ``holdout_accuracy`` is the reference's accuracy on it.
    """
    t0 = time.perf_counter()
    x, index, num_classes = data.x, data.index, int(data.labels.numel())
    arch = arch_for(x.shape[1:], num_classes, "reference", cfg.noise_dim, cfg.width)
    center, scale = data_range(x, bounds)
    seed = cfg.seed + 2
    ref: ReferenceClassifier = _build(arch, seed, center, scale, device)
    rng = torch.Generator().manual_seed(seed)
    perm = torch.randperm(x.shape[0], generator=rng)
    n_hold = min(2000, x.shape[0] // 10)
    hold, train = perm[:n_hold], perm[n_hold:]
    opt = torch.optim.Adam(ref.parameters(), lr=cfg.reference_lr)
    ref.train()
    for step in range(1, cfg.reference_steps + 1):
        pick = train[torch.randint(train.numel(), (cfg.batch_size,), generator=rng)]
        loss = F.cross_entropy(ref(x[pick].to(device)), index[pick].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _say(
            progress,
            step,
            cfg.reference_steps,
            "reference classifier",
            f"loss {float(loss.detach()):.3f}",
        )
    ref.eval().requires_grad_(False)
    acc = None
    if n_hold:
        with torch.no_grad():
            acc = float((ref(x[hold].to(device)).argmax(1).cpu() == index[hold]).double().mean())
    return TrainResult(
        ref,
        "cold",
        cfg.reference_steps,
        time.perf_counter() - t0,
        str(torch.device(device)),
        holdout_accuracy=acc,
    )
