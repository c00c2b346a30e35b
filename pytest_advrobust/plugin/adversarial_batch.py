"""The object behind the ``adversarial_batch`` fixture."""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from ..inputs.calls import guarded, probe_min_batch
from ..inputs.model import Preprocessed, borrowed, resolve_device
from ..metrics.accuracy import predict, summarize

__all__ = ["AdversarialBatch"]


class AdversarialBatch:
    """The evaluation batch and its adversarial twin (CPU tensors).

    Attributes: ``x``, ``y``, ``x_adv``, ``settings`` (the attack's settings as
    a dict: attack, eps, norm, steps, ...), ``report`` (the numbers the marker
    judges), ``training`` (how the generator was obtained, for the GAN).
    Under ``attack="generated"``: ``x_adv`` holds the accepted generated
    samples, labelled ``y_adv``; ``real_valid`` (bool, (N,)) marks the real
    samples the validity judge accepts; ``eps`` is ``None``.

    For a model with several inputs, ``x`` and ``x_adv`` are the input the
    attack perturbed (``attack_input``); :meth:`inputs` gives all of them.
    """

    def __init__(self, outcome: Any, report: Dict[str, Any]):
        self._outcome = outcome
        self.x: torch.Tensor = outcome.x
        self.y: torch.Tensor = outcome.y
        self.x_adv: torch.Tensor = outcome.x_adv
        self.settings: Dict[str, Any] = outcome.settings.to_dict()
        self.report: Dict[str, Any] = report
        self.training: Optional[Dict[str, Any]] = outcome.training
        # attack="generated": x_adv holds the accepted generated samples, labelled y_adv.
        self.y_adv: torch.Tensor = outcome.y_adv if outcome.y_adv is not None else outcome.y
        self.real_valid: Optional[torch.Tensor] = getattr(outcome, "real_valid", None)

    @property
    def eps(self) -> Optional[float]:
        """The attack's eps in input units; ``None`` for ``attack="generated"``."""
        eps = self.report["eps"]
        return None if eps is None else float(eps)

    @property
    def attack(self) -> str:
        return self._outcome.settings.attack_label

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def inputs(self, adversarial: bool = False) -> Any:
        """What the model takes for these samples: ``x`` (or ``x_adv``), or, for a model
        with several inputs, the list or dict of them with ``x`` (``x_adv``) in the place
        of the attacked one (``model(*inputs)`` or ``model(**inputs)``)."""
        x = self.x_adv if adversarial else self.x
        extras = self._outcome.extras
        if extras is None:
            return x
        rows = torch.arange(len(self))
        values = {slot: t[rows] for slot, t in extras.table.items()}
        values[extras.slot] = x
        if extras.kind == "kwargs":
            return {str(slot): values[slot] for slot in extras.order}
        return [values[slot] for slot in extras.order]

    def _tagged(self, x: torch.Tensor) -> torch.Tensor:
        extras = self._outcome.extras
        if extras is None:
            return x
        from ..inputs.rows import tag

        return tag(x, torch.arange(x.shape[0]), extras)

    def evaluate(self, model: Any, batch_size: Optional[int] = None) -> Dict[str, Any]:
        """Clean and adversarial numbers of ``model`` on this batch.

        Returns the numeric part of the marker's report (accuracies with 95%
        intervals, gap, losses, per-class accuracy, success rate). The model
        is restored afterwards, like every model the plugin touches.
        """
        s = self._outcome.settings
        device = resolve_device(s.device)
        bs = batch_size or s.batch_size
        with borrowed(model, device) as m:
            net = guarded(m, s.model)
            if s.preprocessing:
                net = Preprocessed(net, *s.preprocessing, channel_axis=s.channel_axis).to(device)
            probe_min_batch(net, self._tagged(self.x).to(device))
            y = self.y.to(device)
            clean = predict(net, self._tagged(self.x).to(device), y, bs, s.model)
            x_adv = self._tagged(self.x_adv).to(device)
            adv = predict(net, x_adv, self.y_adv.to(device), bs, s.model)
        if self._outcome.generated is not None:
            from ..conditional.evaluation import real_and_generated_numbers

            return real_and_generated_numbers(
                self.y, clean, self.y_adv, adv, s.metric, self.real_valid
            )
        out = summarize(self.y, clean, adv, s.metric)
        out.update(eps=self.eps, attack=self.attack, norm=s.norm)
        return out

    def __repr__(self) -> str:
        eps = "None" if self.eps is None else f"{self.eps:g}"
        return (
            f"AdversarialBatch(n={len(self)}, attack={self.attack!r}, eps={eps}, "
            f"clean={self.report['clean_accuracy']:.3f}, "
            f"adversarial={self.report['adversarial_accuracy']:.3f})"
        )
