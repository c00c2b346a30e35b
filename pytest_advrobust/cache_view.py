"""What ``advrobust cache list`` and ``info`` say about an entry, from its metadata.

An entry's metadata (written by the ``gan`` attack) names the model class
(``user_model_class``: the user's class, also when the plugin wrapped it for
``preprocessing``; ``model_class`` in older entries), the GAN settings
(``gan``: eps, norm, step budget) and what training reached (``steps``,
``holdout_success``: the share of held-out samples, right before the attack,
that the generator turned).
"""

from __future__ import annotations

import math
from typing import Any, List, Mapping, Tuple

__all__ = ["attack_text", "describe", "entry_row", "header", "model_text", "strength_text"]

KEY_CHARS = 12


def header() -> List[str]:
    return ["KEY", "MODEL", "ATTACK", "STRENGTH", "CREATED", "SIZE", "FAMILY", "VALID"]


def model_text(meta: Mapping[str, Any]) -> str:
    name = meta.get("user_model_class") or meta.get("model_class")
    return str(name) if name else "?"


def attack_text(meta: Mapping[str, Any]) -> str:
    gan = meta.get("gan")
    if not isinstance(gan, Mapping):
        return "?"
    parts = ["gan", str(gan.get("norm", "?"))]
    if isinstance(gan.get("eps"), (int, float)):
        parts.append(f"eps={gan['eps']:g}")
    steps, budget = meta.get("steps"), gan.get("max_steps")
    if isinstance(steps, int):
        parts.append(f"{steps}/{budget} steps" if isinstance(budget, int) else f"{steps} steps")
    return " ".join(parts)


def strength_text(meta: Mapping[str, Any]) -> str:
    value = meta.get("holdout_success")
    if not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        return "?"
    return f"{float(value):.3f} held-out success"


def entry_row(entry: Any, created: str, size: str) -> List[str]:
    meta = entry.meta if isinstance(entry.meta, Mapping) else {}
    return [
        str(entry.key)[:KEY_CHARS],
        model_text(meta),
        attack_text(meta),
        strength_text(meta),
        created,
        size,
        str(entry.family or "-")[:KEY_CHARS],
        "yes" if entry.valid else "NO",
    ]


def describe(meta: Mapping[str, Any]) -> List[Tuple[str, str]]:
    """``(label, text)`` lines for ``cache info``."""
    return [
        ("model", model_text(meta)),
        ("attack", attack_text(meta)),
        ("strength", strength_text(meta)),
    ]
