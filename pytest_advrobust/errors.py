"""Errors that reach the user as one sentence, never as a deep traceback."""

from __future__ import annotations


class AdvRobustError(Exception):
    """A problem with the user's input (model, data, marker, option).

    The message is one sentence that names the user's own word (the option,
    the marker argument or the fixture) and is shown without a traceback.
    """


class ModelError(AdvRobustError):
    """The user's model raised on a batch: one sentence naming its fixture and the batch
    shape (the model guard may retry a batch the model found too small)."""


class CacheIntegrityError(Exception):
    """A cache entry failed verification; callers set it aside and retrain."""


class MissingPackage(AdvRobustError):
    """An optional package (matplotlib for curves) is not installed; callers that draw
    pictures beside a verdict warn once and go on without the picture."""


class AdvRobustWarning(UserWarning):
    """A robustness evaluation needs a human look (sanity flag, baseline, environment)."""


def warn(message: str) -> None:
    """Issue ``message`` as an AdvRobustWarning at the caller's line."""
    import warnings

    warnings.warn(AdvRobustWarning(message), stacklevel=2)
