"""What an evaluation or a generator look-up borrows from the run around it.

The plugin's session, the ``advrobust`` command and the tests pass these as
keyword arguments (``cache_dir=..., progress=...``) to
:func:`~.run.run_evaluation`, :func:`~.warm.generator_for` and
:func:`~.warm.warm_generators`; :class:`RunTools` is their one list.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

__all__ = ["RunTools"]


@dataclass(frozen=True)
class RunTools:
    """``cache_dir``: the GAN cache folder (``None``: generators live in memory);
    ``retrain``: train again and replace cache entries; ``progress``/``warn``: where
    progress lines and warnings go; ``quiet``: no progress lines from the attacks;
    ``sanity_level``: overrides the settings' sanity level; ``store``: the session's
    data conversions (:class:`~pytest_advrobust.inputs.session_data.SessionData`);
    ``label``: what the progress lines name (the test); ``progress_every``: the longest
    time in seconds between two progress lines of a long evaluation (:mod:`.heartbeat`)."""

    cache_dir: Optional[Path] = None
    retrain: bool = False
    progress: Optional[Callable[[str], None]] = None
    warn: Optional[Callable[[str], None]] = None
    quiet: bool = False
    sanity_level: Optional[str] = None
    store: Any = None
    label: str = ""
    progress_every: float = 30.0

    def heartbeat(self) -> Any:
        """A :class:`~.heartbeat.Heartbeat` printing to ``progress`` (none when quiet)."""
        from .heartbeat import Heartbeat

        say = None if self.quiet else self.progress
        return Heartbeat(say, self.progress_every, self.label)

    def attack_context(self, device: Any, train_x: Any, train_y: Any, **fields: Any):
        """An :class:`~pytest_advrobust.attacks.base.AttackContext` with these tools
        (``fields`` override)."""
        from ..attacks.base import AttackContext

        tools = dict(
            cache_dir=self.cache_dir,
            retrain=self.retrain,
            progress=self.progress,
            warn=self.warn,
            quiet=self.quiet,
        )
        return AttackContext(device=device, train_x=train_x, train_y=train_y, **{**tools, **fields})
