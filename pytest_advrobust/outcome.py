"""The result of one robustness evaluation, as the report, the gate and the fixtures read it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch

from .metrics import Predictions
from .settings import RobustSettings

__all__ = ["Outcome"]


@dataclass
class Outcome:
    """The result of one evaluation; tensors are on the CPU."""

    settings: RobustSettings
    x: torch.Tensor
    y: torch.Tensor
    x_adv: torch.Tensor
    clean: Predictions
    adv: Predictions
    numbers: Dict[str, Any]
    curve: Optional[List[Dict[str, Any]]]
    training: Optional[Dict[str, Any]]
    sanity: List[Dict[str, str]] = field(default_factory=list)
    # attack="gan": the cascade (budget, generator-alone accuracy, passes per stage) and
    # its strength check (with the clean-start control)
    gan: Optional[Dict[str, Any]] = None
    device: str = "cpu"
    train_is_eval: bool = False
    class_names: Optional[List[str]] = None
    cost: Dict[str, Dict[str, float]] = field(default_factory=dict)
    # attack="generated": its numbers (acceptance, reference) and the labels of x_adv,
    # which then holds the accepted generated samples rather than perturbed copies of x.
    generated: Optional[Dict[str, Any]] = None
    y_adv: Optional[torch.Tensor] = None
    # attack="generated": which real samples the validity judge accepts (bool, (N,)); the
    # real accuracy of the gap is measured on them.
    real_valid: Optional[torch.Tensor] = None

    @classmethod
    def of_split(cls, settings: RobustSettings, split: Any, device: Any, **fields: Any) -> Outcome:
        """An outcome on the evaluation samples of ``split`` (a :class:`~.data.Split`)."""
        return cls(
            settings=settings,
            x=split.x,
            y=split.y,
            device=str(device),
            train_is_eval=split.train_is_eval,
            **fields,
        )

    def for_test(self, settings: RobustSettings) -> Outcome:
        """This evaluation under another test's ``settings`` (same numbers; its own
        threshold and tolerance). Nothing was trained for that test: its training facts
        say the generator came from memory or the cache."""
        training = self.training
        if training is not None:
            mode = "memory" if training.get("cache") == "not cached" else "cached"
            training = dict(
                training,
                mode=mode,
                trained_mode=training.get("trained_mode", training.get("mode")),
            )
        return dataclasses.replace(self, settings=settings, training=training)

    def kept_in_memory(self) -> None:
        """Mark the generator's training facts as not cached (the cache folder could not
        be written); "cached" then means this session's memory."""
        if self.training is not None:
            mode = self.training.get("mode")
            self.training = dict(
                self.training, cache="not cached", mode="memory" if mode == "cached" else mode
            )

    def verdict_at(self, point: Dict[str, Any]) -> bool:
        t = self.settings.threshold
        return t is None or point["gap"] <= t + 1e-12

    def failing_points(self) -> List[Dict[str, Any]]:
        """Points (eps) whose gap is over the threshold, as the threshold applies."""
        if self.settings.threshold is None:
            return []
        if self.curve is None or self.settings.threshold_eps is not None:
            return [] if self.verdict_at(self.numbers) else [self.numbers]
        return [p for p in self.curve if not self.verdict_at(p)]
