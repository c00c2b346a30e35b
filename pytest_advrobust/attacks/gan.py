"""The ``gan`` attack: two generators fitted to the evaluation inputs, best of both per sample.

:func:`gan_attack` gets the pair from :func:`.gan_fit.fitted_heads` (each head
trained on the training split by :func:`obtain_generator` below, then
fine-tuned on the evaluation inputs) and keeps, per sample, the output that
fools the model: one forward and one backward pass for the input gradient's
direction, then one forward pass per head.

A generator is identified by a key over the model (class, parameter layout
and weights), the training data, the GAN settings, the generator
architecture and :data:`FORMAT_VERSION`. :func:`obtain_generator` looks the
key up in this process, then in the on-disk cache (under a per-key lock, so
parallel workers train once), and otherwise trains: warm-started from the
newest cached generator of the same *family* (the key without the model
weights) when there is one, cold otherwise. ``cfg.refine > 0`` adds that many
PGD steps started at the generator's output.

Under ``torchrun`` (after :func:`pytest_advrobust.distributed.init_from_env`)
every rank calls :func:`obtain_generator` with the same model, data and
settings: the ranks first check that they computed the same key; rank 0 alone
takes the cache lock, looks the key up (and a warm start) and broadcasts the
decision; a hit is broadcast to the other ranks, a miss is trained by all
ranks together (DistributedDataParallel), stored by rank 0 with a ``"train"``
(or ``"warm"``) event, and a barrier follows. Every rank returns the same
generator, and the entry is exactly the one a single process would load.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import time
import weakref
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn

from ..errors import AdvRobustError
from ..gan.networks import Generator, build_generator, generator_from_arch
from ..gan.train import GanConfig, train_generator
from ..modelguard import Preprocessed, frozen
from .base import AttackConfig, AttackContext, Model, bound

__all__ = [
    "FORMAT_VERSION",
    "clear_memo",
    "default_gan_config",
    "gan_attack",
    "identity",
    "obtain_generator",
]

#: Bumped whenever the meaning of a cached generator changes (networks, training, key).
FORMAT_VERSION = 3

name = "gan"

_MEMO: Dict[str, Tuple[Generator, Dict[str, Any]]] = {}
_DATA_DIGESTS: Dict[Tuple[int, int], Tuple[Any, Any, Tuple, str]] = {}


def clear_memo() -> None:
    """Forget the generators (and data digests) memoised in this process."""
    from . import gan_fit

    _MEMO.clear()
    _DATA_DIGESTS.clear()
    gan_fit.clear_memo()


def default_gan_config(cfg: AttackConfig, n_train: int) -> GanConfig:
    """GAN settings for an attack config and a training set of ``n_train`` samples.

    Budgets are counted in steps and do not depend on the data set's size:
    300 generator steps on the training split (batch 64, smaller below 1,024
    samples; evaluations every 50 steps) and then up to 200 fine-tuning
    passes over the evaluation inputs (:mod:`pytest_advrobust.gan.transductive`,
    fitting the weights and one remembered offset per input, Adam lr 0.1;
    stopping after 40 passes without a better one); a warm start runs only the
    fine-tuning, with 15% of both budgets together (75 steps). No discriminator (``gan_weight=0``):
    on every model we measured it only weakened the attack. The generator
    takes the input gradient's direction as a second input (``grad_input``):
    evaluation costs one forward and one backward pass of the model per
    sample, then the generator's forward. ``cfg.gan_steps``
    (``--advrobust-gan-steps``) replaces the step budget of both stages
    (the fine-tuning gets at most 200). ``cfg.gan_seconds`` is a safety net
    only (default one hour): when it cuts a training short the result is
    marked ``cut_short`` and a warning says so.
    """
    n_train = int(n_train)
    batch = 64 if n_train >= 1024 else max(8, min(64, n_train // 8))
    max_steps = 300 if cfg.gan_steps is None else int(cfg.gan_steps)
    fit_steps = 200 if cfg.gan_steps is None else min(200, int(cfg.gan_steps))
    max_seconds = float(cfg.gan_seconds) if cfg.gan_seconds is not None else 3600.0
    return GanConfig(
        eps=float(cfg.eps),
        norm=cfg.norm,
        bounds=tuple(cfg.bounds) if cfg.bounds is not None else None,
        seed=int(cfg.seed),
        max_steps=max_steps,
        max_seconds=max_seconds,
        batch_size=batch,
        holdout_max=1000,
        eval_every=max(10, min(50, max_steps)),
        patience=4,
        gan_weight=0.0,
        fit_steps=fit_steps,
        fit_memory_lr=0.1,
        warm_fraction=0.15,
        grad_input=True,
    )


# --------------------------------------------------------------------------- digests and keys
def _qualname(obj: Any) -> str:
    if isinstance(obj, nn.Module) or not hasattr(obj, "__qualname__"):
        cls = type(obj)
        return f"{cls.__module__}.{cls.__qualname__}"
    return f"{getattr(obj, '__module__', '')}.{obj.__qualname__}"


def user_model_class(model: Any) -> str:
    """The qualified class name of the user's own model inside the plugin's wrappers
    (preprocessing, dtype cast), as ``advrobust cache list`` shows it."""
    from ..precision import InputCast

    while isinstance(model, (Preprocessed, InputCast)):
        model = model.inner
    return _qualname(model)


def _layout_digest(model: Any) -> str:
    """Digest of the parameter/buffer names, shapes and dtypes (the architecture, not values)."""
    if not isinstance(model, nn.Module):
        return ""
    layout = [[k, list(v.shape), str(v.dtype)] for k, v in model.state_dict().items()]
    layout.append([type(m).__qualname__ for m in model.modules()])
    return hashlib.sha256(json.dumps(layout).encode()).hexdigest()


def _model_digest(model: Any, train_x: torch.Tensor, device: Any) -> str:
    from ..cache import digest_module, digest_tensors

    if isinstance(model, nn.Module):
        return digest_module(model)
    with torch.no_grad():
        logits = model(train_x[:64].to(device))
    return digest_tensors(torch.as_tensor(logits).detach().float().cpu())


def _data_digest(x: torch.Tensor, y: torch.Tensor) -> str:
    from ..cache import digest_tensors

    # Digesting 60,000 images takes a moment: remember it per (live) tensor pair and version.
    slot = (id(x), id(y))
    state = (x._version, y._version, x.data_ptr(), y.data_ptr(), tuple(x.shape), tuple(y.shape))
    hit = _DATA_DIGESTS.get(slot)
    if hit is not None and hit[0]() is x and hit[1]() is y and hit[2] == state:
        return hit[3]
    digest = digest_tensors(x, y)
    try:
        _DATA_DIGESTS[slot] = (weakref.ref(x), weakref.ref(y), state, digest)
    except TypeError:  # not weak-referenceable: do not remember
        pass
    return digest


def _hash_parts(parts: Dict[str, Any]) -> str:
    from ..cache import GanCache

    return GanCache.key(parts)


def _arch_for(sample_shape, gcfg: GanConfig) -> Dict[str, Any]:
    with torch.random.fork_rng(devices=[]):
        return build_generator(
            sample_shape,
            gcfg.eps,
            gcfg.norm,
            gcfg.bounds,
            width=gcfg.width,
            n_res=gcfg.n_res,
            grad_input=gcfg.grad_input,
        ).arch


# --------------------------------------------------------------------------- obtaining a generator
def identity(
    model: Model, cfg: AttackConfig, ctx: AttackContext, gan_cfg: Optional[GanConfig] = None
):
    """``(train_x, train_y, gan_cfg, arch, parts, key, family)`` of the generator for ``model``.

    ``key`` hashes ``parts`` (model weights, training data, settings, architecture);
    ``family`` the same without the model weights.
    """
    train_x, train_y = ctx.train_x, ctx.train_y
    if train_x is None or train_y is None:
        raise ValueError(
            "the gan attack needs training data: ctx.train_x and ctx.train_y are not set"
        )
    train_x = train_x if isinstance(train_x, torch.Tensor) else torch.as_tensor(train_x)
    train_y = train_y if isinstance(train_y, torch.Tensor) else torch.as_tensor(train_y)
    if train_x.shape[0] != train_y.shape[0]:
        raise ValueError(
            f"ctx.train_x has {train_x.shape[0]} samples but ctx.train_y has {train_y.shape[0]}"
        )
    if train_x.shape[0] < 2:
        raise ValueError("the gan attack needs at least 2 training samples")
    gcfg = gan_cfg if gan_cfg is not None else default_gan_config(cfg, train_x.shape[0])
    sample_shape = tuple(train_x.shape[1:])
    arch = _arch_for(sample_shape, gcfg)
    with frozen(model):
        model_digest = _model_digest(model, train_x, ctx.device)
    family_parts = {
        "format": FORMAT_VERSION,
        "model_class": _qualname(model),
        "model_layout": _layout_digest(model),
        "data": _data_digest(train_x, train_y),
        "gan": gcfg.to_dict(),
        "arch": arch,
    }
    parts = dict(family_parts, model=model_digest)
    key = _hash_parts(parts)
    family = _hash_parts(family_parts)
    parts["user_model_class"] = user_model_class(model)  # shown by `cache list`, not keyed

    return train_x, train_y, gcfg, arch, parts, key, family


def obtain_generator(
    model: Model, cfg: AttackConfig, ctx: AttackContext, gan_cfg: Optional[GanConfig] = None
) -> Tuple[Generator, Dict[str, Any]]:
    """The generator for ``model`` trained on ``ctx.train_x``/``ctx.train_y``; how it was obtained.

    Returns ``(generator, facts)``: the generator in eval mode on
    ``ctx.device`` and ``{"mode": "cold"|"warm"|"cached", "steps", "seconds",
    "device", "holdout_success", "key"}``. ``gan_cfg`` overrides the settings
    derived from ``cfg`` by :func:`default_gan_config`.
    """
    train_x, train_y, gcfg, arch, parts, key, family = identity(model, cfg, ctx, gan_cfg)

    from .. import distributed

    if distributed.is_distributed():
        return _obtain_distributed(model, train_x, train_y, gcfg, ctx, key, family, arch, parts)

    memo = _MEMO.get(key)
    if memo is not None and (not ctx.retrain or memo[1]["mode"] in ("cold", "warm")):
        gen, facts = memo
        return gen.to(ctx.device).eval(), _memo_facts(facts)

    if ctx.cache_dir is None:
        result = train_generator(model, train_x, train_y, gcfg, ctx.device, progress=_progress(ctx))
        gen, facts = result.generator, _facts(result, key)
    else:
        gen, facts = _through_cache(model, train_x, train_y, gcfg, ctx, key, family, arch, parts)
    gen = gen.to(ctx.device).eval()
    _MEMO[key] = (gen, dict(facts))
    return gen, facts


def _memo_facts(facts: Dict[str, Any]) -> Dict[str, Any]:
    """Facts of a generator reused in this process: its training's, marked ``cached``."""
    trained = facts.get("trained_mode", facts.get("mode"))
    return dict(facts, mode="cached", trained_mode=trained)


def _progress(ctx: AttackContext):
    return None if ctx.quiet else ctx.progress


def _warn(ctx: AttackContext, msg: str) -> None:
    if ctx.warn is not None:
        ctx.warn(msg)


def _facts(result, key: str) -> Dict[str, Any]:
    """How a generator was trained on the training split (counts of model passes in samples)."""
    return {
        "mode": result.mode,
        "steps": int(result.steps),
        "seconds": float(result.seconds),
        "device": result.device,
        "holdout_success": float(result.holdout_success),
        "key": key,
        "forward_samples": int(result.forward_samples),
        "backward_samples": int(result.backward_samples),
        "cut_short": result.stop_reason == "max_seconds",
    }


def _through_cache(
    model,
    train_x,
    train_y,
    gcfg: GanConfig,
    ctx: AttackContext,
    key: str,
    family: str,
    arch: Dict[str, Any],
    parts: Dict[str, Any],
):
    from ..cache import GanCache

    cache = GanCache(ctx.cache_dir, warn=ctx.warn)
    with cache.lock(key):
        if not ctx.retrain:
            t0 = time.perf_counter()
            loaded = cache.load(key)
            if loaded is not None:
                state, meta = loaded
                gen = _rebuild(arch, state, ctx, f"cache entry {key}")
                if gen is not None:
                    cache.record_event("hit", key)
                    return gen, _hit_facts(key, meta, ctx, time.perf_counter() - t0)
        init_state = None
        if not ctx.retrain:
            warm = cache.find_warm_start(family, exclude_key=key)
            if warm is not None:
                w_key, w_state, w_meta = warm
                if _rebuild(arch, w_state, ctx, f"warm-start entry {w_key}") is not None:
                    init_state = w_state
        result = train_generator(
            model,
            train_x,
            train_y,
            gcfg,
            ctx.device,
            init_state=init_state,
            progress=_progress(ctx),
        )
        _store(cache, ctx, key, family, arch, gcfg, parts, result)
        return result.generator, _facts(result, key)


def _store(
    cache,
    ctx: AttackContext,
    key: str,
    family: str,
    arch: Dict[str, Any],
    gcfg: GanConfig,
    parts: Dict[str, Any],
    result,
) -> None:
    """Store a freshly trained generator (the bare network's weights) and record the event."""
    meta = {
        "format": FORMAT_VERSION,
        "family": family,
        "arch": arch,
        "gan": gcfg.to_dict(),
        "model_class": parts["model_class"],
        "mode": result.mode,
        "steps": int(result.steps),
        "user_model_class": parts.get("user_model_class", parts["model_class"]),
        "seconds": float(result.seconds),
        "device": result.device,
        "holdout_success": float(result.holdout_success),
        "created": time.time(),
        "facts": _facts(result, key),
    }
    if getattr(result, "world_size", 1) > 1:
        from .. import distributed

        meta["distributed"] = {
            "world_size": int(result.world_size),
            "backend": distributed.backend(),
            "samples_per_rank": [int(n) for n in result.rank_samples],
        }
    gen = getattr(result.generator, "module", result.generator)  # never a wrapper's prefixed names
    state = {k: v.detach().to("cpu").contiguous() for k, v in gen.state_dict().items()}
    try:
        cache.store(key, state, meta)
    except OSError as exc:
        _warn(
            ctx,
            f"advrobust: could not store the trained generator in the cache ({exc}); "
            "it will be trained again next run",
        )
    else:
        cache.record_event("warm" if result.mode == "warm" else "train", key)


def _hit_facts(key: str, meta: Any, ctx: AttackContext, seconds: float) -> Dict[str, Any]:
    """A cache hit reports the facts of the training that produced the entry."""
    if isinstance(meta, dict) and isinstance(meta.get("facts"), dict):
        return dict(
            meta["facts"],
            mode="cached",
            trained_mode=meta["facts"].get("mode"),
            load_seconds=seconds,
            key=key,
        )
    return {
        "mode": "cached",
        "steps": 0,
        "seconds": seconds,
        "device": str(meta.get("device", ctx.device))
        if isinstance(meta, dict)
        else str(ctx.device),
        "holdout_success": float(meta.get("holdout_success", float("nan")))
        if isinstance(meta, dict)
        else float("nan"),
        "key": key,
    }


# --------------------------------------------------------------------------- several processes
def _check_ranks_agree(key: str, device: Any) -> None:
    """Every rank must train the same generator, each on a device of its own type and index."""
    import socket

    from .. import distributed
    from ..gan.train import _resolve_device

    dev = _resolve_device(device)
    everyone = distributed.all_gather_object((key, socket.gethostname(), dev.type, dev.index))
    differ = [r for r, (k, _, _, _) in enumerate(everyone) if k != everyone[0][0]]
    if differ:
        ranks = ", ".join(map(str, differ))
        raise AdvRobustError(
            f"under torchrun every rank must train the same GAN generator, but rank(s) {ranks} "
            "computed another cache key than rank 0: the model's weights, the GAN training data "
            "or the settings "
            "differ between ranks (build and seed them the same way on every rank)"
        )
    types = sorted({t for _, _, t, _ in everyone})
    if len(types) > 1:
        raise AdvRobustError(
            f"under torchrun all ranks must train on the same kind of device, "
            f"but they use {' and '.join(types)}"
        )
    if types == ["cuda"]:
        seen: Dict[Tuple[str, Any], int] = {}
        for r, (_, host, _, index) in enumerate(everyone):
            if (host, index) in seen:
                raise AdvRobustError(
                    f"under torchrun ranks {seen[(host, index)]} and {r} would both train on "
                    f"cuda:{index} of {host}: give each rank its own GPU with "
                    "--advrobust-device=auto (or cuda), "
                    "which uses cuda:LOCAL_RANK, and start at most one rank per GPU"
                )
            seen[(host, index)] = r


def _obtain_distributed(
    model,
    train_x,
    train_y,
    gcfg: GanConfig,
    ctx: AttackContext,
    key: str,
    family: str,
    arch: Dict[str, Any],
    parts: Dict[str, Any],
):
    """:func:`obtain_generator` on every rank of the process group (same calls, same order)."""
    from .. import distributed

    _check_ranks_agree(key, ctx.device)
    memo = _MEMO.get(key)
    usable = memo is not None and (not ctx.retrain or memo[1]["mode"] in ("cold", "warm"))
    if distributed.all_true(usable):
        gen, facts = memo
        return gen.to(ctx.device).eval(), _memo_facts(facts)

    lead = distributed.rank() == 0
    use_cache = distributed.broadcast_object(ctx.cache_dir is not None)  # rank 0's view decides
    error: Optional[Exception] = None
    try:
        if not use_cache:
            result = train_generator(
                model,
                train_x,
                train_y,
                gcfg,
                ctx.device,
                progress=_progress(ctx) if lead else None,
                distributed=True,
            )
            gen, facts = result.generator, _facts(result, key)
        elif lead:
            gen, facts = _lead_through_cache(
                model, train_x, train_y, gcfg, ctx, key, family, arch, parts
            )
        else:
            gen, facts = _follow_through_cache(model, train_x, train_y, gcfg, ctx, key, arch)
    except Exception as exc:  # reach the closing collective anyway, so that no rank is left waiting
        error = exc
    # The closing sync: the entry is stored before any rank goes on, and all ranks fail together.
    everyone_ok = distributed.all_true(error is None)
    if error is not None:
        raise error
    if not everyone_ok:
        raise RuntimeError(
            "another rank failed to obtain the GAN generator (its error is in its own output)"
        )
    gen = gen.to(ctx.device).eval()
    _MEMO[key] = (gen, dict(facts))
    return gen, facts


def _lead_through_cache(
    model,
    train_x,
    train_y,
    gcfg: GanConfig,
    ctx: AttackContext,
    key: str,
    family: str,
    arch: Dict[str, Any],
    parts: Dict[str, Any],
):
    """Rank 0: look up under the lock, broadcast the decision, store what all ranks trained.

    Every path broadcasts exactly one decision (``hit``, ``train`` or ``error``), also when
    taking the lock or reading the cache fails, so that the other ranks never wait for it.
    """
    from .. import distributed
    from ..cache import GanCache

    cache = GanCache(ctx.cache_dir, warn=ctx.warn)
    with contextlib.ExitStack() as locked:
        try:
            locked.enter_context(cache.lock(key))
            hit, init_state, t0 = None, None, time.perf_counter()
            if not ctx.retrain:
                loaded = cache.load(key)
                if loaded is not None:
                    state, meta = loaded
                    gen = _rebuild(arch, state, ctx, f"cache entry {key}")
                    if gen is not None:
                        hit = (gen, _hit_facts(key, meta, ctx, time.perf_counter() - t0))
            if hit is None and not ctx.retrain:
                warm = cache.find_warm_start(family, exclude_key=key)
                if warm is not None:
                    w_key, w_state, _ = warm
                    if _rebuild(arch, w_state, ctx, f"warm-start entry {w_key}") is not None:
                        init_state = w_state
        except Exception as exc:  # let the other ranks stop too instead of waiting
            distributed.broadcast_object(
                {"action": "error", "message": f"{type(exc).__name__}: {exc}"}
            )
            raise
        if hit is not None:
            distributed.broadcast_object({"action": "hit", "facts": hit[1]})
            distributed.broadcast_state(hit[0].state_dict())
            cache.record_event("hit", key)
            return hit
        distributed.broadcast_object({"action": "train"})
        result = train_generator(
            model,
            train_x,
            train_y,
            gcfg,
            ctx.device,
            init_state=init_state,
            progress=_progress(ctx),
            distributed=True,
        )
        _store(cache, ctx, key, family, arch, gcfg, parts, result)
        return result.generator, _facts(result, key)


def _follow_through_cache(
    model, train_x, train_y, gcfg: GanConfig, ctx: AttackContext, key: str, arch: Dict[str, Any]
):
    """Ranks other than 0: do what rank 0 decided."""
    from .. import distributed

    decision = distributed.broadcast_object(None)
    action = decision.get("action") if isinstance(decision, dict) else None
    if action == "hit":
        state = distributed.broadcast_state(None)
        gen = _rebuild(arch, state, ctx, f"cache entry {key} from rank 0")
        if gen is None:  # cannot happen: rank 0 rebuilt the same architecture from it
            raise RuntimeError(
                f"the cache entry {key} broadcast by rank 0 does not fit this rank's generator"
            )
        return gen, dict(decision["facts"])
    if action == "train":
        result = train_generator(model, train_x, train_y, gcfg, ctx.device, distributed=True)
        return result.generator, _facts(result, key)
    message = decision.get("message") if isinstance(decision, dict) else repr(decision)
    raise RuntimeError(f"rank 0 could not look up GAN cache entry {key}: {message}")


def _rebuild(
    arch: Dict[str, Any], state: Dict[str, torch.Tensor], ctx: AttackContext, what: str
) -> Optional[Generator]:
    """A generator of ``arch`` with ``state`` loaded, or ``None`` (with a warning) on a misfit."""
    with torch.random.fork_rng(devices=[]):
        gen = generator_from_arch(arch)
    try:
        gen.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()}, strict=True)
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        _warn(
            ctx,
            f"advrobust: {what} does not fit the generator architecture and is ignored "
            f"({str(exc).splitlines()[0]})",
        )
        return None
    return gen.eval()


# --------------------------------------------------------------------------- the attack
def gan_attack(
    model: Model, x: torch.Tensor, y: torch.Tensor, cfg: AttackConfig, ctx: AttackContext
) -> torch.Tensor:
    """Adversarial inputs from the (cached or freshly trained) generators, optionally PGD-refined.

    ``x``: ``(N, *sample_shape)`` on ``ctx.device``; ``y``: ``(N,)``. Returns
    ``x_adv`` with the shape and dtype of ``x``, within ``cfg.eps`` in
    ``cfg.norm`` and inside ``cfg.bounds``. ``ctx.facts["training"]`` gets
    how the generator was obtained. Without ``ctx.train_x`` the generator is
    trained on ``x, y`` themselves.
    """
    if ctx.train_x is None or ctx.train_y is None:
        ctx = dataclasses.replace(ctx, train_x=x.detach().cpu(), train_y=y.detach().cpu())
    from .gan_fit import fitted_heads

    heads, facts = fitted_heads(model, x, y, cfg, ctx)
    ctx.facts["training"] = facts
    for gen in heads:
        if tuple(x.shape[1:]) != gen.sample_shape:
            raise ValueError(
                f"the generator was trained on samples of shape {gen.sample_shape}, "
                f"but the evaluation inputs have shape {tuple(x.shape[1:])}"
            )
    out = torch.empty_like(x)
    bs = max(1, int(cfg.batch_size))
    for s in range(0, x.shape[0], bs):
        out[s : s + bs] = _best_of(model, heads, x[s : s + bs], y[s : s + bs], cfg)
    if cfg.refine > 0:
        from .gradient import pgd_from

        out = pgd_from(model, x, y, out, cfg, ctx)
    return out


def _best_of(
    model: Model, heads, x: torch.Tensor, y: torch.Tensor, cfg: AttackConfig
) -> torch.Tensor:
    """Per sample, the first head's output that the model misclassifies, else the lowest margin.

    Costs one forward and one backward pass (the gradient direction) and one
    forward pass per head.
    """
    from ..gan.networks import input_direction
    from ..gan.train import margin

    direction = None
    if any(h.grad_input for h in heads):
        direction = input_direction(model, x, y, cfg.norm)
    best, best_m = None, None
    with torch.no_grad():
        for h in heads:
            cand = bound(
                x, h(x, direction if h.grad_input else None), cfg.eps, cfg.norm, cfg.bounds
            )
            m = margin(model(cand), y)
            m = torch.where(m < 0, torch.full_like(m, -1.0), m)  # fooled is fooled: first one wins
            if best is None:
                best, best_m = cand, m
            else:
                take = m < best_m
                best = torch.where(take.view(-1, *([1] * (x.dim() - 1))), cand, best)
                best_m = torch.minimum(best_m, m)
    return best


gan_attack.name = "gan"  # type: ignore[attr-defined]
