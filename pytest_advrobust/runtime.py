"""What an evaluation, an attack or a generator look-up borrows from the run around it.

The plugin's session, the ``advrobust`` command and the tests make one
:class:`Runtime` and hand it down: to
:func:`~pytest_advrobust.evaluation.run.run_evaluation`, into each attack's context
(:class:`~pytest_advrobust.attacks.base.AttackContext`), to the cache's one obtain
routine. Torch-free.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

__all__ = ["Runtime"]


@dataclass(frozen=True)
class Runtime:
    """``cache_dir``: the cache folder (``None``: generators live in memory and no
    evaluation is stored); ``retrain``: train again and replace cache entries
    (``--advrobust-retrain``); ``progress``/``warn``: where progress lines and warnings
    go; ``quiet``: no progress lines from the attacks; ``sanity_level``: overrides the
    settings' sanity level; ``store``: the session's data conversions
    (:class:`~pytest_advrobust.inputs.session_data.SessionData`); ``label``: what the
    progress lines name (the test); ``progress_every``: the longest time in seconds
    between two progress lines of a long evaluation."""

    cache_dir: Optional[Path] = None
    retrain: bool = False
    progress: Optional[Callable[[str], None]] = None
    warn: Optional[Callable[[str], None]] = None
    quiet: bool = False
    sanity_level: Optional[str] = None
    store: Any = None
    label: str = ""
    progress_every: float = 30.0

    @property
    def shown_progress(self) -> Optional[Callable[[str], None]]:
        """Where an attack's progress lines go: ``progress``, or nowhere when quiet."""
        return None if self.quiet else self.progress

    def warning(self, message: str) -> None:
        """Hand ``message`` to ``warn`` (nothing without one)."""
        if self.warn is not None:
            self.warn(message)

    def but(self, **changes: Any) -> Runtime:
        """This runtime with ``changes`` (field names as above)."""
        return dataclasses.replace(self, **changes)
