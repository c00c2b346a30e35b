"""The result of one robustness evaluation, as the report, the gate and the fixtures read it."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch

from ..metrics.accuracy import Predictions
from ..settings.robust import RobustSettings

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
    # the evaluation samples' positions in the data fixture (int64, (N,))
    indices: Optional[torch.Tensor] = None
    # the numbers were read from a stored evaluation of the same model, data and settings
    reused: bool = False
    # several inputs per sample: the other inputs (an
    # :class:`~pytest_advrobust.inputs.several.Extras`), row i of
    # its table belonging to sample i of x
    extras: Any = None

    @classmethod
    def of_split(cls, settings: RobustSettings, split: Any, device: Any, **fields: Any) -> Outcome:
        """An outcome on the evaluation samples of ``split`` (a
        :class:`~pytest_advrobust.inputs.data.Split`); its tensors are plain (not tagged with
        their samples)."""
        from ..inputs.rows import plain

        if "x_adv" in fields:
            fields["x_adv"] = plain(fields["x_adv"])
        return cls(
            settings=settings,
            x=plain(split.x),
            y=split.y,
            device=str(device),
            train_is_eval=split.train_is_eval,
            indices=split.eval_indices,
            extras=getattr(split.x, "extras", None),
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

    def sample_record(self) -> Optional[Dict[str, Any]]:
        """Each evaluated sample's id and its clean and robust verdicts at the headline eps,
        in the JSON form of :mod:`pytest_advrobust.metrics.record`; ``None`` for
        ``attack="generated"``,
        whose adversarial samples are not perturbed copies of the evaluated ones."""
        from ..metrics.record import ID_BYTES, SampleRecord, encode

        if self.generated is not None:
            return None
        n = int(self.x.shape[0])
        x = self.x.detach().to("cpu").contiguous().reshape(n, -1)
        head = f"{str(x.dtype).replace('torch.', '')}:{list(self.x.shape[1:])}".encode()
        rows = x.view(torch.uint8).numpy() if x.numel() else [b""] * n
        ids = []
        for label, row in zip(self.y.tolist(), rows):
            h = hashlib.sha256(b"advrobust-sample\0" + head + int(label).to_bytes(8, "little"))
            h.update(bytes(row))
            ids.append(h.digest()[:ID_BYTES].hex())
        index = self.indices.tolist() if self.indices is not None else list(range(n))
        return encode(
            SampleRecord(ids, index, self.clean.correct.tolist(), self.adv.correct.tolist())
        )

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
