"""Channel layout of image batches, for drawing them: (N, H, W, C) -> (N, C, H, W).

The gallery draws (N, C, H, W) images. A 4-D batch is read as channels-last
when the test says so (``channel_axis=-1`` or ``3``), when its preprocessing
fits only the last axis, or, without either, when axis 1 cannot be a channel
axis (not 1 or 3 long) while the last one can (1, 3 or 4 long).
"""

from __future__ import annotations

from typing import Any, Optional

__all__ = ["channel_axis_of", "channels_first"]


def channel_axis_of(x: Any, settings: Any) -> Optional[int]:
    """The channel axis (1 or 3) of a 4-D image batch ``x`` under ``settings``, or None."""
    if x.dim() != 4:
        return None
    if settings.channel_axis is not None:
        return settings.channel_axis % 4
    if settings.preprocessing is not None:
        from ..inputs.model import Preprocessed

        try:
            axis = Preprocessed(lambda t: t, *settings.preprocessing).axis_for(tuple(x.shape))
        except Exception:  # already reported as one sentence by the evaluation
            axis = None
        if axis is not None:
            return axis
    if x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3, 4):
        return 3
    return 1


def channels_first(x: Any, settings: Any) -> Any:
    """``x`` with its channel axis moved to 1 (a view); other shapes unchanged."""
    axis = channel_axis_of(x, settings)
    if axis is None or axis == 1:
        return x
    return x.movedim(axis, 1)
