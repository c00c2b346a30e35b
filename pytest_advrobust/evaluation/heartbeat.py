"""Progress lines for long evaluations: at least one every ``every`` seconds.

An evaluation names its stage (reading the data, the clean predictions, each
attack, the sanity checks) and ticks as it works: the model guard ticks on
every call of the model, the data reader on every sample. When ``every``
seconds (30 by default, ``--advrobust-progress-seconds``) have passed since
the last line, the next tick prints one, so a stage that lasts minutes says
so at least that often, under ``-q`` and under xdist alike (the lines go
where the GAN training's lines go). A stage shorter than that prints nothing.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator, Optional

__all__ = ["Heartbeat"]


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class Heartbeat:
    """``tick()`` prints a line about the current stage when ``every`` seconds have passed.

    ``say`` receives whole lines (``None``: nothing is printed); ``label``
    names what is evaluated (the test's node id); ``clock`` is the time source.
    """

    def __init__(
        self,
        say: Optional[Callable[[str], None]],
        every: float = 30.0,
        label: str = "",
        clock: Callable[[], float] = time.monotonic,
    ):
        self.say, self.every, self.label, self.clock = say, float(every), label, clock
        self.start = self.last = clock()
        self.stage_name, self.stage_start = "preparing", self.start
        self.calls = self.samples = 0

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """The block is stage ``name``; its calls and samples are counted afresh."""
        previous = (self.stage_name, self.stage_start, self.calls, self.samples)
        self.stage_name, self.stage_start = name, self.clock()
        self.calls = self.samples = 0
        try:
            yield
        finally:
            self.stage_name, self.stage_start, self.calls, self.samples = previous

    def tick(self, samples: int = 0) -> None:
        """One model call (``samples == 0``) or ``samples`` samples read; maybe a line."""
        if samples:
            self.samples += int(samples)
        else:
            self.calls += 1
        if self.say is None:
            return
        now = self.clock()
        if now - self.last < self.every:
            return
        self.last = now
        done = []
        if self.calls:
            done.append(f"{self.calls:,} model calls")
        if self.samples:
            done.append(f"{self.samples:,} samples read")
        what = f" ({', '.join(done)})" if done else ""
        where = f"{self.label}: " if self.label else ""
        self.say(
            f"advrobust: {where}{self.stage_name} for {_duration(now - self.stage_start)}{what}, "
            f"{_duration(now - self.start)} in all"
        )
