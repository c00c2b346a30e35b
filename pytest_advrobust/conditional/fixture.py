"""The object behind the ``conditional_generator`` fixture and ``--advrobust-warm``."""

from __future__ import annotations

from typing import Any, Dict, List

__all__ = ["conditional_generator_for", "warm_sample_generator"]


def _networks(model: Any, data: Any, settings, train_data: Any, store: Any = None, **kwargs):
    import torch

    from ..evaluation.run import prepare

    device, split = prepare(model, data, settings, train_data, store=store)
    train_fixture = settings.train_data if train_data is not None else settings.data
    from .evaluation import obtain_networks

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        return obtain_networks(
            split.train_x, split.train_y, settings, train_fixture, device=device, **kwargs
        )


def conditional_generator_for(
    model: Any, data: Any, settings, *, train_data: Any = None, store: Any = None, **kwargs
) -> Any:
    """The trained (or cached) :class:`~.networks.ConditionalGenerator` for this data.

    It carries ``reference`` (the validity judge, a
    :class:`~.networks.ReferenceClassifier` whose logits index ``labels``)
    and ``training_facts`` (``{"generator": ..., "reference": ...}``).
    ``store``: the session's data conversions (as for ``prepare``); ``kwargs``:
    ``cache_dir``, ``retrain``, ``progress``, ``warn``.
    """
    gen, ref, facts = _networks(model, data, settings, train_data, store, **kwargs)
    # A plain attribute, not a registered submodule: the generator's parameters and
    # state dict stay its own.
    gen.__dict__["reference"] = ref
    gen.training_facts = facts
    return gen.eval()


def warm_sample_generator(
    model: Any, data: Any, settings, *, train_data: Any = None, store: Any = None, **kwargs
) -> List[Dict[str, Any]]:
    """Obtain the sample generator and reference a ``generated`` test needs; their facts."""
    _, _, facts = _networks(model, data, settings, train_data, store, **kwargs)
    return [
        dict(facts["generator"], role="sample generator"),
        dict(facts["reference"], role="reference classifier"),
    ]
