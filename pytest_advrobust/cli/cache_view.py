"""What ``advrobust cache list`` and ``info`` say about an entry, from its metadata.

An entry's metadata (written by the ``gan`` attack) names the model class
(``user_model_class``: the user's class, also when the plugin wrapped it for
``preprocessing``; ``model_class`` in older entries), the GAN settings
(``gan``: eps, norm, step budget) and what training reached (``steps``,
``holdout_success``: the share of held-out samples, right before the attack,
that the generator turned).
"""

from __future__ import annotations

import datetime as _dt
import math
from typing import Any, List, Mapping, Tuple

__all__ = [
    "attack_text",
    "created_text",
    "describe",
    "entry_row",
    "header",
    "model_text",
    "size_text",
    "sort_time",
    "strength_text",
]

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
    er = gan.get("eps_range")
    if isinstance(er, (list, tuple)) and len(er) == 2:
        parts.append(f"eps {er[0]:.3g}-{er[1]:.3g}")
    elif isinstance(gan.get("eps"), (int, float)):
        parts.append(f"eps={gan['eps']:g}")
    steps = meta.get("steps")
    budget = meta.get("budget", gan.get("max_steps"))
    if isinstance(steps, int):
        parts.append(f"{steps}/{budget} steps" if isinstance(budget, int) else f"{steps} steps")
    if meta.get("mode") == "warm":
        parts.append("(retrained)")
    return " ".join(parts)


def strength_text(meta: Mapping[str, Any]) -> str:
    value = meta.get("holdout_success")
    if not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        return "?"
    return f"{float(value):.3f} held-out success"


def size_text(num: Any) -> str:
    """``"512 B"``, ``"1.5 KiB"`` ... up to GiB; ``"?"`` for what is not a number."""
    try:
        value = float(num)
    except (TypeError, ValueError):
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return "?"  # pragma: no cover


def created_text(created: Any) -> str:
    """A creation time (seconds since the epoch) as local ``YYYY-MM-DD HH:MM:SS``."""
    if created is None:
        return "?"
    if isinstance(created, (int, float)) and not isinstance(created, bool):
        try:
            return _dt.datetime.fromtimestamp(created).strftime("%Y-%m-%d %H:%M:%S")
        except (OverflowError, OSError, ValueError):
            return str(created)
    return str(created)


def sort_time(created: Any) -> float:
    """A creation time (seconds, or ISO text) as seconds to sort by; 0 when unknown."""
    if isinstance(created, (int, float)) and not isinstance(created, bool):
        return float(created)
    if isinstance(created, str):
        try:
            return _dt.datetime.fromisoformat(created).timestamp()
        except ValueError:
            return 0.0
    return 0.0


def entry_row(entry: Any) -> List[str]:
    """The ``cache list`` row of one entry, in the order of :func:`header`."""
    meta = entry.meta if isinstance(entry.meta, Mapping) else {}
    return [
        str(entry.key)[:KEY_CHARS],
        model_text(meta),
        attack_text(meta),
        strength_text(meta),
        created_text(entry.created),
        size_text(entry.size),
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
