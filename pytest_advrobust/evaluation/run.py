"""One robustness evaluation: data split, attacks (worst case per sample), eps sweep, metrics.

The plugin calls :func:`run_evaluation` from a fixture; everything it needs
arrives as arguments, so the same function serves the fixtures, the marker
and the ``advrobust warm`` command. The settings are read once, into a
:class:`~.plan.Plan`; preparing the model and data lives in
:mod:`pytest_advrobust.inputs.prepare`, the result in :mod:`.outcome`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import torch

from ..attack_table import alone_error, makes_samples
from ..attacks import get_attack
from ..attacks.base import AttackContext, check_bound
from ..attacks.counting import counted
from ..inputs.calls import find_guard, probe_min_batch, run_model_safely
from ..inputs.data import Split
from ..inputs.gradcheck import require_input_gradient
from ..inputs.model import borrowed
from ..inputs.precision import into_dtype, working_copy
from ..inputs.prepare import prepare, with_preprocessing
from ..inputs.rows import same_samples
from ..metrics.accuracy import Predictions, merge_worst_case, predict, summarize
from ..runtime import Runtime
from ..settings.robust import RobustSettings
from .heartbeat import Heartbeat
from .outcome import Outcome
from .plan import Plan, plan_of, sampling_for
from .store import stored_or_computed

__all__ = ["Outcome", "run_evaluation"]

#: What each point of an eps sweep's curve keeps of that eps's numbers.
CURVE_KEYS = ("adversarial_accuracy", "adversarial_ci", "gap", "clean_accuracy")


def run_evaluation(
    model: Any,
    data: Any,
    settings: RobustSettings,
    *,
    train_data: Any = None,
    runtime: Optional[Runtime] = None,
) -> Outcome:
    """Evaluate ``model`` on ``data`` under ``settings``; restore the model afterwards.

    ``runtime`` (:class:`~pytest_advrobust.runtime.Runtime`): the cache folder,
    ``retrain``, where progress lines and warnings go, the sanity level, and the
    session's data conversions. Torch's global random state is seeded from
    ``settings.seed`` for the evaluation and given back unchanged afterwards, so
    the tests that run later see the random state they would have seen without
    this one. With a ``cache_dir``, an evaluation of the same model, data and
    settings stored by an earlier run is read back instead of computed
    (:mod:`.store`; the outcome's ``reused`` says so), and a computed one
    is stored.
    """
    runtime = runtime or Runtime()
    plan = plan_of(settings, runtime.sanity_level)
    if makes_samples(plan.attacks):
        return _generated(model, data, train_data, plan, runtime)
    beat = Heartbeat(runtime.shown_progress, runtime.progress_every, runtime.label)
    with beat.stage(f"reading fixture {plan.inputs.data!r}"):
        device, split = prepare(
            model, data, plan.inputs, train_data, store=runtime.store, tick=beat.tick
        )

    def compute() -> Outcome:
        cuda = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(plan.inputs.seed)
            with borrowed(model, device) as m:
                return _evaluate(_start(m, (device, split), plan, runtime, beat))

    return stored_or_computed(compute, model, (device, split), plan, runtime)


def _generated(model: Any, data: Any, train_data: Any, plan: Plan, runtime: Runtime) -> Outcome:
    """``attack="generated"``: real accuracy against accuracy on valid generated samples
    (:mod:`pytest_advrobust.conditional.evaluation`)."""
    from ..conditional.evaluation import evaluate_generated

    if len(plan.attacks) > 1:
        raise alone_error("generated")
    sampling = sampling_for(plan, train_data is not None)
    device, split = prepare(model, data, sampling.inputs, train_data, store=runtime.store)
    found = evaluate_generated(
        model, split, device, sampling, runtime.but(progress=runtime.shown_progress)
    )
    return Outcome.of_split(plan.settings, split, device, curve=None, sanity=[], **found._asdict())


@dataclass
class _Evaluation:
    """One evaluation under way: the model as the attacks see it, the batch, what is found."""

    plan: Plan
    split: Split
    device: Any
    ctx: AttackContext  # device, training samples, runtime; a fresh copy per attack call
    net: Any  # the user's model with its preprocessing
    x: torch.Tensor
    y: torch.Tensor
    clean: Predictions
    net_work: Any  # float32 twins of net and x for float16/bfloat16 inputs
    x_work: torch.Tensor
    beat: Any  # the heartbeat: progress lines of long stages
    cost: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    training: Optional[Dict[str, Any]] = None
    gan: Optional[Dict[str, Any]] = None  # the cascade's facts, then the strength check's
    gan_passes: Optional[torch.Tensor] = None  # (N, 2) passes per sample of the gan attack
    gan_robust: Optional[torch.Tensor] = None  # (N,) bool: the samples it left standing


class _Worst(NamedTuple):
    """The worst case over the attacks at one eps."""

    x_adv: torch.Tensor  # clean inputs where the model is already wrong
    adv: Predictions
    raw_x_adv: torch.Tensor  # the attacks' own worst case
    raw_counts: Tuple[int, int]  # clean and raw adversarial correct counts
    per_attack: Dict[str, torch.Tensor]


def _start(model, prepared, plan: Plan, runtime: Runtime, beat: Any):
    """Clean predictions and the input-gradient check of the borrowed ``model``;
    ``prepared``: ``(device, split)``."""
    device, split = prepared
    net = with_preprocessing(model, plan.inputs, device)
    find_guard(net).beat = beat.tick  # every call of the model ticks the heartbeat
    x, y = split.x.to(device), split.y.to(device)
    bs, fixture = plan.main.batch_size, plan.fixture
    probe_min_batch(net, x)  # no call gets a batch smaller than the model takes
    with beat.stage("clean predictions"):
        clean = run_model_safely(
            lambda: predict(net, x, y, bs, fixture, plan.inputs.data), fixture, x.shape
        )
    with find_guard(net).raw_gradients():  # judged as the model gives them
        run_model_safely(
            lambda: require_input_gradient(net, x, y, plan.attacks, fixture, plan.main.refine),
            fixture,
            x.shape,
        )
    net_work, x_work = working_copy(net, x)  # float32 attacks for float16/bfloat16 inputs
    train_x = split.train_x
    if train_x is not None and x_work is not x:
        train_x = train_x.float()
    ctx = AttackContext(device, train_x, split.train_y, runtime)
    return _Evaluation(plan, split, device, ctx, net, x, y, clean, net_work, x_work, beat)


def _evaluate(ev: _Evaluation) -> Outcome:
    settings = ev.plan.settings
    per_eps: Dict[float, Dict[str, Any]] = {}
    for cfg in ev.plan.configs:
        per_eps[cfg.eps], worst = _at_eps(ev, cfg)
        if math.isclose(cfg.eps, settings.main_eps):
            main = worst
    numbers = per_eps[min(per_eps, key=lambda e: abs(e - settings.main_eps))]
    curve = None
    if settings.is_sweep:
        curve = [{"eps": e, **{k: p[k] for k in CURVE_KEYS}} for e, p in sorted(per_eps.items())]
    flags = _sanity(ev, main, curve)
    return Outcome.of_split(
        ev.plan.settings,
        ev.split,
        ev.device,
        x_adv=main.x_adv.cpu(),
        clean=ev.clean,
        adv=main.adv,
        numbers=numbers,
        curve=curve,
        training=ev.training,
        gan=ev.gan,
        sanity=flags,
        class_names=ev.split.class_names,
        cost=ev.cost,
    )


def _at_eps(ev: _Evaluation, cfg) -> Tuple[Dict[str, Any], _Worst]:
    """Every attack at ``cfg.eps``: the numbers of the worst case per sample, and that case."""
    eps = cfg.eps
    results = []
    for name in ev.plan.attacks:
        with ev.beat.stage(f"attack {name!r} at eps={eps:g}"):
            results.append(_attack(ev, name, cfg))
    raw_x_adv, raw = merge_worst_case(results)
    # A sample the model gets wrong without any attack counts as not
    # robust (as in AutoAttack): its adversarial example is itself.
    x_adv, adv = merge_worst_case([(ev.x, ev.clean)] + results)
    point = summarize(ev.split.y, ev.clean, adv, ev.plan.sampling.metric)
    point["eps"] = eps
    counts = (int(ev.clean.correct.sum()), int(raw.correct.sum()))
    per_attack = {name: r[0] for name, r in zip(ev.plan.attacks, results)}
    return point, _Worst(x_adv, adv, raw_x_adv, counts, per_attack)


def _attack(ev: _Evaluation, name: str, cfg) -> Tuple[torch.Tensor, Predictions]:
    """One attack's adversarial batch, checked against the bound, and the model on it."""
    attack = get_attack(name)
    ctx = ev.ctx.fresh()
    x_adv, count = counted(attack, ev.net_work, ev.x_work, ev.y, cfg, ctx)
    headline = math.isclose(cfg.eps, ev.plan.settings.main_eps)
    costs = _attack_cost(name, count, ctx.facts, ev.x.shape[0])
    trained = f"{name}_training"
    if trained in costs:  # whichever eps of a sweep trained the generator, it is counted
        ev.cost[trained] = _sum_passes(ev.cost.get(trained), costs.pop(trained))
    if headline:
        ev.cost.update(costs)
    guard = find_guard(ev.net)
    check_bound(name, ev.x_work, x_adv, cfg, guard.record if guard else None, ev.plan.fixture)
    # then the bound holds after rounding to the input dtype, to the last bit
    x_adv = into_dtype(ev.x, x_adv, cfg.eps, cfg.norm, cfg.bounds)
    check_bound(name, ev.x, x_adv, cfg)
    x_adv = same_samples(x_adv.detach(), ev.x)  # row i of x_adv is sample i of x
    bs, fixture = cfg.batch_size, ev.plan.fixture
    preds = run_model_safely(lambda: predict(ev.net, x_adv, ev.y, bs, fixture), fixture, ev.x.shape)
    if "training" in ctx.facts and (ev.training is None or _trained(ctx.facts["training"])):
        # the first eps of a sweep obtains the generator (later ones find it in memory);
        # a training in this run is what the report says
        ev.training = dict(ctx.facts["training"])
        if ev.split.train_is_eval:
            ev.training["trained_on_eval"] = True
    if "cascade" in ctx.facts and headline:
        ev.gan, ev.gan_passes = dict(ctx.facts["cascade"]), ctx.facts["cascade_passes"]
        ev.gan_robust = ev.clean.correct & preds.correct
    return x_adv, preds


def _trained(facts: Dict[str, Any]) -> bool:
    """Whether the generator these facts describe was trained in this call."""
    return facts.get("mode") in ("cold", "warm")


def _sum_passes(a: Optional[Dict[str, Any]], b: Dict[str, Any]) -> Dict[str, Any]:
    """Two ``{"forward_passes", "backward_passes", "seconds"}`` added up (``a`` may be None)."""
    return b if a is None else {k: a[k] + b[k] for k in b}


def _attack_cost(name: str, count, facts: Dict[str, Any], n: int) -> Dict[str, Dict[str, Any]]:
    """``cost`` entries of one attack call: its own passes per sample (and, for the ``gan``
    attack, per stage) and, apart, the passes it spent training a generator."""
    trained = facts.get("training_passes")
    if trained is None:
        return {name: count.per_sample(n)}
    fwd, bwd, seconds = trained
    count.forward, count.backward = count.forward - fwd, count.backward - bwd
    count.seconds = max(count.seconds - seconds, 0.0)
    own = count.per_sample(n)
    if "cascade" in facts:
        own["stages"] = facts["cascade"]["stages"]
    training = {"forward_passes": int(fwd), "backward_passes": int(bwd), "seconds": seconds}
    return {name: own, f"{name}_training": training}


def _sanity(ev: _Evaluation, main: _Worst, curve: Optional[List[Dict[str, Any]]]) -> List:
    """The sanity flags of the headline eps (``[]`` at level off)."""
    if ev.plan.sanity == "off":
        return []
    runtime = ev.ctx.runtime.but(retrain=False, quiet=True)
    with ev.beat.stage("sanity checks"):
        return _sanity_flags(ev, main, curve, ev.ctx.fresh(runtime=runtime))


def _sanity_flags(ev: _Evaluation, main: _Worst, curve, ctx: AttackContext) -> List:
    from ..sanity import Evaluated, run_sanity

    guard = find_guard(ev.net)
    found = Evaluated(
        ev.x_work,
        ev.y,
        main.raw_x_adv.to(ev.x_work.dtype),
        attacks=list(ev.plan.attacks),
        curve=curve,
        num_classes=ev.clean.num_classes,
        adversarial=main.per_attack,
        correct_counts=main.raw_counts,
        fixture=ev.plan.fixture,
        record=guard.record if guard is not None else None,
        min_batch=guard.min_batch if guard is not None else 1,
        gan=_gan_record(ev, main),
    )
    flags = run_sanity(ev.net_work, found, ev.plan.main, ctx, ev.plan.sanity)
    if "strength_check" in ctx.facts:
        ev.gan = dict(ev.gan or {}, strength_check=ctx.facts["strength_check"])
        ev.cost["strength_check"] = ctx.facts["strength_check_cost"]
        if ctx.facts["strength_check"]["weaker"]:
            _retrain_after_check(ev)
    return flags


def _gan_record(ev: _Evaluation, main: _Worst):
    """What the ``gan`` attack left at the headline eps, for its strength check."""
    if ev.gan_passes is None or "gan" not in main.per_attack:
        return None
    from ..attacks.cascade import CascadeBudget
    from ..sanity import GanRecord

    dev = ev.y.device
    x_gan = main.per_attack["gan"].to(ev.x_work.dtype)
    budget = CascadeBudget(**ev.gan["budget"])
    return GanRecord(x_gan, ev.clean.correct.to(dev), ev.gan_robust.to(dev), ev.gan_passes, budget)


def _retrain_after_check(ev: _Evaluation) -> None:
    """The strength check found the ``gan`` attack weak: train its generator further now, for
    the runs to come (this run's numbers stay those measured)."""
    from ..attacks.gan import retrain_generator

    facts = retrain_generator(
        ev.net_work,
        ev.plan.main,
        ev.ctx.fresh(),
        "the strength check found the attack weaker than its reference",
    )
    if ev.training is not None:
        ev.training["retrained_after_check"] = facts
