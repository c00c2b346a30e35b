"""Stored evaluations: an unchanged model, data and settings cost nothing.

Evaluation is deterministic, so its result is kept in the cache folder
(``<cache>/evaluations/``, beside the generators) and read back the next time the
same evaluation is asked for. The key digests everything the numbers depend on:

* the model: its class, structure and ``state_dict`` (weights and buffers), and the
  compiled code of the modules defining its classes (:mod:`.code_digest`);
* the data: the evaluation samples (inputs, labels, their positions in the data
  fixture) and, for attacks that train (``gan``, custom ones), the training samples;
* the settings that decide the numbers (every marker argument and option except
  ``threshold``, ``tolerance``, ``significance`` and ``min_clean_accuracy``, which
  only judge them), the sanity level, the device, the torch version;
* :data:`~.attack_version.ATTACK_VERSION` and the plugin's version; for a custom
  attack, its name and the compiled code of the module defining it.

An entry holds the tensors (the adversarial batch ``x_adv``, each sample's clean and
adversarial prediction, loss and verdict) as safetensors weights and the rest (the
numbers, curve, training facts, sanity flags, cost) in its JSON, with the cache's
guarantees: checksummed, written atomically, one lock per key, never unpickled. A
damaged entry is set aside and the evaluation runs again. ``--advrobust-retrain``
evaluates again and replaces the entry. Of one test's evaluations (same data and
settings, other models: earlier commits) the newest :data:`KEEP_PER_TEST` are kept.
A model that is a plain function (no ``state_dict``) is always evaluated.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Optional, Tuple

import torch

from .. import __version__
from ..cache import protocol
from ..metrics.accuracy import Predictions
from ..runtime import Runtime
from ..settings.cache_folder import EVALUATIONS_FOLDER
from .attack_version import ATTACK_VERSION
from .outcome import Outcome

__all__ = ["EVALUATIONS", "evaluation_key", "stored_or_computed"]

#: Folder of stored evaluations inside the cache folder.
EVALUATIONS = EVALUATIONS_FOLDER
#: Stored evaluations kept per test (its data and settings): the newest models' ones.
KEEP_PER_TEST = 2
#: Settings that judge the numbers without changing them (left out of the key).
_JUDGING = ("threshold", "tolerance", "significance", "min_clean_accuracy")
_TENSORS = (
    "x_adv",
    "clean_pred",
    "clean_loss",
    "clean_correct",
    "adv_pred",
    "adv_loss",
    "adv_correct",
)
_META = ("numbers", "curve", "training", "gan", "sanity", "cost", "class_names", "device")


def _attack_parts(names) -> Dict[str, Any]:
    """How each attack is identified: built-ins by the attack version, custom ones by
    their name, qualified name and code."""
    from ..attack_table import is_builtin
    from ..attacks import get_attack
    from .code_digest import code_digest

    parts: Dict[str, Any] = {}
    for name in names:
        if is_builtin(name):
            parts[name] = "built-in"
            continue
        attack = get_attack(name)
        qualname = getattr(attack, "__qualname__", type(attack).__qualname__)
        parts[name] = [getattr(attack, "__module__", "?"), qualname, code_digest(attack)]
    return parts


def evaluation_key(
    model: Any, split: Any, settings: Any, device: Any, sanity_level: str
) -> Optional[Tuple[str, str]]:
    """``(key, family)`` of this evaluation, or ``None`` when the model cannot be digested.

    The family is the key without the model: the same test's evaluations of other
    models (earlier commits), of which the store keeps only the newest few."""
    from ..cache.keys import canonical_key, digest_module, digest_tensors
    from .code_digest import code_digest

    try:
        model_digest = digest_module(model)
    except TypeError:  # a plain function: nothing to key its weights on
        return None
    settings_dict = {k: v for k, v in settings.to_dict().items() if k not in _JUDGING}
    train = None
    if split.train_x is not None:
        train = digest_tensors(split.train_x, split.train_y)
    parts = {
        "kind": "evaluation",
        "attack_version": ATTACK_VERSION,
        "plugin": __version__,
        "eval": digest_tensors(split.x, split.y, split.eval_indices),
        "train": train,
        "settings": settings_dict,
        "sanity": sanity_level,
        "attacks": _attack_parts(settings.attacks),
        "device": str(device),
        "torch": torch.__version__,
    }
    family = canonical_key(parts)
    return canonical_key(dict(parts, model=model_digest, code=code_digest(model))), family


def _state(outcome: Outcome) -> Dict[str, torch.Tensor]:
    return {
        "x_adv": outcome.x_adv,
        "clean_pred": outcome.clean.pred,
        "clean_loss": outcome.clean.loss,
        "clean_correct": outcome.clean.correct,
        "adv_pred": outcome.adv.pred,
        "adv_loss": outcome.adv.loss,
        "adv_correct": outcome.adv.correct,
    }


def _meta(outcome: Outcome) -> Dict[str, Any]:
    meta = {name: getattr(outcome, name) for name in _META}
    meta.update(
        num_classes=outcome.clean.num_classes,
        attack_version=ATTACK_VERSION,
        attacks=list(outcome.settings.attacks),
    )
    return meta


def _rebuild(state: Dict[str, torch.Tensor], meta: Any, split, settings) -> Optional[Outcome]:
    """The stored outcome on ``split``, or ``None`` when the entry does not fit it."""
    if not isinstance(meta, dict) or not set(_TENSORS) <= set(state):
        return None
    if state["x_adv"].shape != split.x.shape:
        return None
    if state["x_adv"].dtype != split.x.dtype or state["clean_pred"].shape[0] != split.x.shape[0]:
        return None
    k = int(meta["num_classes"])
    clean = Predictions(state["clean_pred"], state["clean_loss"], state["clean_correct"], k)
    adv = Predictions(state["adv_pred"], state["adv_loss"], state["adv_correct"], k)
    fields = {name: meta.get(name) for name in _META if name != "device"}
    outcome = Outcome.of_split(
        settings,
        split,
        meta.get("device", "cpu"),
        x_adv=state["x_adv"],
        clean=clean,
        adv=adv,
        **fields,
    )
    return dataclasses.replace(outcome.for_test(settings), reused=True)


def stored_or_computed(
    compute: Callable[[], Outcome], model: Any, prepared: Any, plan: Any, runtime: Runtime
) -> Outcome:
    """The stored evaluation of this model, data (``prepared``: ``(device, split)``) and
    plan (:class:`~.plan.Plan`), else ``compute()``'s, stored for the next run, through
    the cache's one obtain routine (:func:`pytest_advrobust.cache.protocol.obtain`).
    Without ``runtime.cache_dir`` it is always computed and not stored; under
    ``runtime.retrain`` computed and stored."""
    device, split = prepared
    settings = plan.settings
    if runtime.cache_dir is None:
        return compute()
    keys = evaluation_key(model, split, settings, device, plan.sanity)
    if keys is None:
        return compute()
    key, family = keys

    def computed(init: Any) -> protocol.Trained:
        outcome = compute()
        return protocol.Trained(outcome, None, _state(outcome), _meta(outcome), "computed")

    recipe = protocol.Recipe(
        key=key,
        rebuild=lambda state, meta, what: _rebuild(state, meta, split, settings),
        hit_facts=lambda meta, seconds: None,
        train=computed,
        family=family,
        keep=KEEP_PER_TEST,
        events=("reused", "stored"),
        what=("evaluation", "computed"),
        folder=EVALUATIONS,
    )
    return protocol.obtain(recipe, runtime)[0]
