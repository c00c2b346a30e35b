"""The ``generated`` evaluation: real accuracy against accuracy on valid generated samples.

Steps, all seeded by the test's seed:

1. Split the user's data as every evaluation does (``n_samples`` real
   samples); the generator and the reference train on ``robust_train_data``
   (or on the rest of ``robust_data``).
2. Obtain the class-conditional generator and the reference classifier
   (memo, cache or training; :mod:`.store`).
3. Draw ``n_samples`` generated samples, balanced over the classes of the
   real evaluation samples.
4. Validity: a generated sample is *accepted* when the reference gives its
   intended class a softmax probability of at least ``settings.validity``.
   The same filter applies to the real samples: a real sample is *valid*
   when the reference gives its true class that probability.
5. The model's accuracy on the valid real samples and on the accepted
   generated samples (Wilson 95% intervals); ``gap = real - generated`` (or
   relative) on these matched sets, and the threshold applies to it.

Why the real side is filtered too: the validity check keeps only the
generated samples that a classifier finds clear, while the real set holds
hard samples too, so comparing all real samples with accepted generated
ones flatters the generated side (a normal model then shows a negative gap
that is selection, not generalisation). Judging both sides with one filter
compares like with like. The report keeps the accuracy on all real samples
and the real acceptance rate beside it.

The report also carries the acceptance rate and the reference's accuracy
on all generated samples (the generator's own quality, the "GAN-test" of
Shmelkov et al. 2018), and the reference's accuracy on the real samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, NamedTuple, Optional, Tuple

import torch

from ..errors import AdvRobustError
from ..inputs.model import borrowed
from ..inputs.prepare import InputSpec, with_preprocessing
from ..metrics.accuracy import Predictions, accuracy_numbers, gap_of, predict, wilson_interval
from ..runtime import Runtime
from .store import obtain
from .training import ClassData, default_config

__all__ = [
    "MIN_PER_CLASS",
    "Generated",
    "Sampling",
    "check_training_data",
    "evaluate_generated",
    "obtain_networks",
    "real_and_generated_numbers",
]

#: Fewest training samples of each class the generator accepts.
MIN_PER_CLASS = 5


@dataclass(frozen=True)
class Sampling:
    """What the generated evaluation draws and judges: samples read as ``inputs`` says
    (``n_samples`` of them drawn with its ``seed``, inside its ``bounds``), in batches of
    ``batch_size``, valid at reference confidence ``validity``; the gap in ``metric``;
    the generator's step budget ``gan_steps`` (``None``: its default); the training
    data's fixture name ``train_fixture`` (``None``: ``inputs.train_data``)."""

    inputs: InputSpec
    batch_size: int = 256
    validity: float = 0.9
    metric: str = "absolute"
    gan_steps: Optional[int] = None
    train_fixture: Optional[str] = None

    @property
    def trained_on(self) -> str:
        return self.train_fixture or self.inputs.train_data


class Generated(NamedTuple):
    """What the generated evaluation found, in the outcome's terms: the accepted generated
    samples ``x_adv`` and their labels ``y_adv``, the model's predictions on the valid real
    (``clean``) and the accepted generated samples (``adv``), the ``numbers``, the
    generator's ``training`` facts, the report's ``generated`` object and which real
    samples are valid (``real_valid``)."""

    x_adv: torch.Tensor
    y_adv: torch.Tensor
    clean: Predictions
    adv: Predictions
    numbers: Dict[str, Any]
    training: Dict[str, Any]
    generated: Dict[str, Any]
    real_valid: torch.Tensor


def check_training_data(y: torch.Tensor, fixture: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(labels (K,), class index (N,))`` of integer labels ``y``, or one-sentence errors."""
    if y.dim() != 1 or y.dtype.is_floating_point or y.dtype == torch.bool:
        raise AdvRobustError(
            f"attack='generated' needs integer class labels of shape (N,) from "
            f"fixture {fixture!r}, got {y.dtype!s} of shape {tuple(y.shape)}"
        )
    labels, index, counts = torch.unique(
        y.long(), sorted=True, return_inverse=True, return_counts=True
    )
    if labels.numel() < 2:
        raise AdvRobustError(
            f"attack='generated' needs training data with at least 2 classes, "
            f"but fixture {fixture!r} has only class {int(labels[0])}; "
            "give it labelled samples of every class"
        )
    few = int(counts.argmin())
    if int(counts[few]) < MIN_PER_CLASS:
        raise AdvRobustError(
            f"attack='generated' needs at least {MIN_PER_CLASS} training "
            f"samples of every class, but fixture {fixture!r} has "
            f"{int(counts[few])} of class {int(labels[few])}; give it more"
        )
    return labels, index


def _check_eval_classes(
    y: torch.Tensor, labels: torch.Tensor, fixture: str, train_fixture: str
) -> torch.Tensor:
    present = torch.unique(y.long(), sorted=True)
    unknown = [int(c) for c in present if not bool((labels == c).any())]
    if unknown:
        raise AdvRobustError(
            f"evaluation data from fixture {fixture!r} has class {unknown[0]}, which the "
            f"sample generator's training data (fixture {train_fixture!r}) lacks; add samples "
            "of that class to the training data or drop it from the evaluation data"
        )
    return present


def obtain_networks(
    train_x: torch.Tensor, train_y: torch.Tensor, sampling: Sampling, device: Any, runtime: Runtime
) -> Tuple[Any, Any, Dict[str, Any]]:
    """``(generator, reference, {"generator": facts, "reference": facts})`` for this data."""
    labels, index = check_training_data(train_y, sampling.trained_on)
    spec = sampling.inputs
    cfg = default_config(train_x.shape[0], spec.seed, sampling.gan_steps)
    data = ClassData(train_x.float().contiguous(), index, labels)
    gen, gfacts = obtain("generator", data, cfg, spec.bounds, device, runtime)
    ref, rfacts = obtain("reference", data, cfg, spec.bounds, device, runtime)
    return gen, ref, {"generator": gfacts, "reference": rfacts}


def _judge(ref, gen, x: torch.Tensor, y: torch.Tensor, validity: float, batch: int):
    """Reference predictions and acceptance of samples ``x`` with labels ``y``."""
    with torch.no_grad():
        probs = torch.cat(
            [torch.softmax(ref(x[s : s + batch]).float(), 1) for s in range(0, x.shape[0], batch)]
        ).cpu()
    idx = gen.index_of(y.cpu())
    own = probs.gather(1, idx[:, None]).squeeze(1)
    return probs.argmax(1) == idx, own >= validity


def _rate(k: int, n: int) -> Dict[str, Any]:
    return {
        "value": round(k / n, 6) if n else None,
        "ci": [round(v, 6) for v in wilson_interval(k, n)],
    }


def real_and_generated_numbers(
    y_real, clean: Predictions, y_acc, adv: Predictions, metric: str, real_valid=None
) -> Dict[str, Any]:
    """The report's numbers: ``clean_*`` on the valid real samples (bool mask
    ``real_valid`` (N,), all when ``None``), ``adversarial_*`` on the accepted
    generated ones (labels ``y_acc``), and the gap between them. ``real`` holds
    the accuracy on all real samples and on the valid ones, and the real
    acceptance rate, each ``{"value", "ci"}`` (Wilson 95%).

    Raises :class:`AdvRobustError` when no real sample is valid."""
    n, m = int(y_real.numel()), int(y_acc.numel())
    valid = torch.ones(n, dtype=torch.bool) if real_valid is None else real_valid.cpu().bool()
    n_valid = int(valid.sum())
    if n_valid == 0:
        raise AdvRobustError(
            f"none of the {n} real evaluation samples passed the validity check that the "
            "generated samples pass too (reference confidence in the true class); lower "
            "robust(validity=...) or train the reference on data like the evaluation data"
        )
    right = clean.correct.cpu()
    k_all, k_real, k_gen = int(right.sum()), int(right[valid].sum()), int(adv.correct.sum())
    losses = (float(clean.loss.cpu()[valid].mean()), float(adv.loss.mean()))
    per_class = {
        str(c): round(float(adv.correct[y_acc.cpu() == c].double().mean()), 6)
        for c in sorted(set(y_acc.tolist()))
    }
    real = {
        "accuracy_all": _rate(k_all, n),
        "accuracy_valid": _rate(k_real, n_valid),
        "accepted": n_valid,
        "acceptance_rate": _rate(n_valid, n),
        "gap_all": round(gap_of(k_all / n, k_gen / m, metric), 6),
    }
    return {
        "n": n,
        "eps": None,
        **accuracy_numbers((k_real, k_gen), (n_valid, m), losses, metric),
        "per_class": per_class,
        "attack_success_rate": None,
        "real": real,
    }


def _facts(
    sampling: Sampling,
    split,
    classes,
    ref_facts: Dict[str, Any],
    judged,
    real: Dict[str, Any],
    every: Predictions,
) -> Dict[str, Any]:
    """The report's ``generated`` object; ``judged`` is the reference's
    ``(right on generated, accepted, right on real)``."""
    ref_right, accepted, real_right = judged
    n, m = int(accepted.numel()), int(accepted.sum())
    return {
        "validity": {"judge": "reference classifier", "min_confidence": sampling.validity},
        "drawn": n,
        "accepted": m,
        "acceptance_rate": _rate(m, n),
        "reference_accuracy": _rate(int(ref_right.sum()), n),
        "reference_accuracy_accepted": _rate(int((ref_right & accepted).sum()), m),
        "reference_real_accuracy": _rate(int(real_right.sum()), int(split.y.numel())),
        "real_accuracy_all": real["accuracy_all"],
        "real_accuracy_valid": real["accuracy_valid"],
        "real_accepted": real["accepted"],
        "real_acceptance_rate": real["acceptance_rate"],
        "gap_all_real": real["gap_all"],
        "model_accuracy_all_generated": _rate(int(every.correct.sum()), n),
        "classes": [int(c) for c in classes],
        "reference": ref_facts,
        "trained_on_eval": bool(split.train_is_eval),
    }


class _Drawn(NamedTuple):
    """Generated samples and the reference's judgement of them and of the real samples."""

    x_gen: torch.Tensor
    y_gen: torch.Tensor
    ref_right: torch.Tensor  # the reference classifies the generated sample as intended
    accepted: torch.Tensor  # ... with at least the validity confidence
    real_right: torch.Tensor
    real_valid: torch.Tensor

    def accepted_samples(self) -> Tuple[torch.Tensor, torch.Tensor]:
        acc = self.accepted.to(self.x_gen.device)
        return self.x_gen[acc], self.y_gen[acc]


def _draw(gen, ref, split, classes, sampling: Sampling, device) -> _Drawn:
    """``n_samples`` generated samples balanced over ``classes``, judged by ``ref``."""
    spec, bs, validity = sampling.inputs, sampling.batch_size, sampling.validity
    x_gen, y_gen = gen.sample(spec.n_samples, spec.seed, classes.tolist(), bs)
    ref_right, accepted = _judge(ref, gen, x_gen, y_gen, validity, bs)
    real_right, real_valid = _judge(ref, gen, split.x.to(device), split.y, validity, bs)
    if int(accepted.sum()) == 0:
        raise AdvRobustError(
            f"none of the {x_gen.shape[0]} generated samples passed the validity check "
            f"(reference confidence >= {validity:g}); train the sample generator "
            "longer with --advrobust-gan-steps or lower robust(validity=...)"
        )
    return _Drawn(x_gen, y_gen, ref_right, accepted, real_right, real_valid)


def _model_on(model, device, sampling: Sampling, split, drawn: _Drawn):
    """The model's predictions on the real, the accepted and all generated samples."""
    x_acc, y_acc = drawn.accepted_samples()
    with borrowed(model, device) as mod:
        net = with_preprocessing(mod, sampling.inputs, device)
        bs, name = sampling.batch_size, sampling.inputs.model
        clean = predict(net, split.x.to(device), split.y.to(device), bs, name)
        adv = predict(net, x_acc, y_acc, bs, name)
        every = predict(net, drawn.x_gen, drawn.y_gen, bs, name)
    return clean, adv, every


def evaluate_generated(
    model: Any, split: Any, device: Any, sampling: Sampling, runtime: Runtime
) -> Generated:
    """Evaluate ``model`` on the real samples of ``split`` and on accepted generated ones.

    Raises :class:`AdvRobustError` (one sentence) for training data with one class or
    fewer than :data:`MIN_PER_CLASS` samples of a class, evaluation classes the
    training data lacks, and when no generated (or no real) sample is valid.
    """
    train_fixture = sampling.trained_on
    labels, _ = check_training_data(split.train_y, train_fixture)
    classes = _check_eval_classes(split.y, labels, sampling.inputs.data, train_fixture)
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(sampling.inputs.seed)
        gen, ref, facts = obtain_networks(split.train_x, split.train_y, sampling, device, runtime)
        drawn = _draw(gen, ref, split, classes, sampling, device)
        clean, adv, every = _model_on(model, device, sampling, split, drawn)
    x_acc, y_acc = drawn.accepted_samples()
    numbers = real_and_generated_numbers(
        split.y, clean, y_acc, adv, sampling.metric, drawn.real_valid
    )
    judged = (drawn.ref_right, drawn.accepted, drawn.real_right)
    generated = _facts(sampling, split, classes, facts["reference"], judged, numbers["real"], every)
    return Generated(
        x_adv=x_acc.cpu(),
        y_adv=y_acc.cpu(),
        clean=clean,
        adv=adv,
        numbers=numbers,
        training=facts["generator"],
        generated=generated,
        real_valid=drawn.real_valid.cpu(),
    )
