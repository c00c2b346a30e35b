"""The ``robust`` marker: its arguments, their help, and the check of each argument.

:data:`ARGUMENTS` is the one list of marker arguments: each with the default the
marker help shows and the check that turns the user's value into settings
fields. The marker help (:data:`MARKER_HELP`), the known-argument list of the
errors (:data:`MARKER_ARGS`) and :func:`from_marker` all read it. Every error
is one sentence naming the argument, ``robust marker argument eps=-1 must be
positive``. Nothing here imports torch.
"""

from __future__ import annotations

import math
import numbers
from argparse import ArgumentTypeError
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

from ..attack_table import is_builtin, readers_of
from ..errors import AdvRobustError
from .parsing import did_you_mean, number
from .robust import RobustSettings, check_eps
from .values import DEFAULT_EPS, METRICS, NORMS, SANITY_LEVELS

__all__ = ["ARGUMENTS", "MARKER_ARGS", "MARKER_HELP", "from_marker", "resolve_settings"]


@dataclass
class _Marker:
    """One marker being applied: its arguments, the settings under it, the fields set."""

    kwargs: Mapping[str, Any]
    base: RobustSettings
    known_attacks: Optional[Sequence[str]]
    update: Dict[str, Any]


def _bad(arg: str, value: Any, why: str) -> AdvRobustError:
    return AdvRobustError(f"robust marker argument {arg}={value!r} {why}")


def _number(arg: str, value: Any) -> float:
    if isinstance(value, str) and _reads_as_number(value):  # eps="8/255": quoted
        raise _bad(arg, value, f"is text, not a number: write it without quotes ({arg}={value})")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _bad(arg, value, "is not a number")
    out = float(value)
    if not math.isfinite(out):
        raise _bad(arg, value, "is not a finite number")
    return out


def _reads_as_number(text: str) -> bool:
    try:
        number(text)
    except ArgumentTypeError:
        return False
    return True


def _int(arg: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _bad(arg, value, "is not an integer")
    if int(value) < minimum:
        raise _bad(arg, value, f"must be at least {minimum}")
    return int(value)


# Each check: (argument, value, marker) -> the settings fields it sets.
Check = Callable[[str, Any, _Marker], Dict[str, Any]]


def _in_range(low: float, high: float, high_open: bool = False, optional: bool = False) -> Check:
    """A number in [low, high] (or [low, high)); ``None`` passes through when ``optional``."""
    span = f"[{low:g}, {high:g}{')' if high_open else ']'}"

    def check(arg: str, value: Any, marker: _Marker) -> Dict[str, Any]:
        if optional and value is None:
            return {arg: None}
        out = _number(arg, value)
        if not (low <= out < high if high_open else low <= out <= high):
            raise _bad(arg, value, f"must lie in {span}")
        return {arg: out}

    return check


def _integer(minimum: int) -> Check:
    return lambda arg, value, marker: {arg: _int(arg, value, minimum)}


def _choice(choices: Sequence[str]) -> Check:
    words = " or ".join(repr(c) for c in choices) if len(choices) == 2 else ", ".join(choices)

    def check(arg: str, value: Any, marker: _Marker) -> Dict[str, Any]:
        if value not in choices:
            hint = did_you_mean(value, choices) if isinstance(value, str) else ""
            raise _bad(arg, value, f"must be {'' if len(choices) == 2 else 'one of '}{words}{hint}")
        return {arg: value}

    return check


def _fixture_name(arg: str, value: Any, marker: _Marker) -> Dict[str, Any]:
    if not isinstance(value, str) or not value.isidentifier():
        raise _bad(arg, value, "must be the name of a fixture")
    return {arg: value}


def _threshold(arg: str, value: Any, marker: _Marker) -> Dict[str, Any]:
    if value is None:
        return {}
    if _number(arg, value) > 1 and value <= 100:  # a percentage
        raise _bad(arg, value, f"must lie in [0, 1]: a gap of {value:g}% is {arg}={value / 100:g}")
    return _in_range(0.0, 1.0)(arg, value, marker)


def _known_attacks() -> Sequence[str]:
    from ..attack_table import available

    return list(available())


def _attack(arg: str, value: Any, marker: _Marker) -> Dict[str, Any]:
    names = [value] if isinstance(value, str) else value
    if (
        not isinstance(names, (list, tuple))
        or not names
        or not all(isinstance(n, str) for n in names)
    ):
        raise _bad(arg, value, "must be an attack name or a list of names")
    known = list(marker.known_attacks) if marker.known_attacks is not None else _known_attacks()
    for n in names:
        if n not in known:
            hint = did_you_mean(n, known)
            raise _bad(arg, value, f"names unknown attack {n!r}{hint}; known: {', '.join(known)}")
    return {"attacks": tuple(dict.fromkeys(names))}


def _eps(arg: str, value: Any, marker: _Marker) -> Dict[str, Any]:
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise _bad(arg, value, "must not be empty")
    eps = []
    for v in values:
        f = _number(arg, v)
        if f <= 0:
            raise _bad(arg, value, "must be positive")
        eps.append(f)
    return {"eps": tuple(sorted(set(eps)))}


def _norm(arg: str, value: Any, marker: _Marker) -> Dict[str, Any]:
    out = _choice(NORMS)(arg, value, marker)
    base = marker.base
    # A default eps follows the norm; an eps the user gave stays.
    if "eps" not in marker.kwargs and base.norm != value and base.eps == (DEFAULT_EPS[base.norm],):
        out["eps"] = (DEFAULT_EPS[value],)
    return out


def _step_size(arg: str, value: Any, marker: _Marker) -> Dict[str, Any]:
    if value is None:
        return {}
    if _number(arg, value) <= 0:
        raise _bad(arg, value, "must be positive")
    return {arg: float(value)}


def _random_start(arg: str, value: Any, marker: _Marker) -> Dict[str, Any]:
    if not isinstance(value, bool):
        raise _bad(arg, value, "must be True or False")
    return {arg: value}


def _threshold_eps(arg: str, value: Any, marker: _Marker) -> Dict[str, Any]:
    if value is None:
        return {}
    te = _number(arg, value)
    eps_list = marker.update.get("eps", marker.base.eps)
    if not any(math.isclose(te, e) for e in eps_list):
        raise _bad(arg, value, f"must be one of the swept eps values {list(eps_list)}")
    return {arg: te}


def _bounds(arg: str, value: Any, marker: _Marker) -> Dict[str, Any]:
    if value is None:
        return {arg: None}
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise _bad(arg, value, "must be a (low, high) pair or None")
    lo, hi = _number(arg, value[0]), _number(arg, value[1])
    if not lo < hi:
        raise _bad(arg, value, "must have low < high")
    return {arg: (lo, hi)}


def _preprocessing(arg: str, value: Any, marker: _Marker) -> Dict[str, Any]:
    if value is None:  # overrides --advrobust-preprocessing / the ini key
        return {arg: None}
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise _bad(arg, value, "must be a (mean, std) pair")
    parts = []
    for part in value:
        seq = list(part) if isinstance(part, (list, tuple)) else [part]
        parts.append(tuple(_number(arg, v) for v in seq))
    if any(s <= 0 for s in parts[1]):
        raise _bad(arg, value, "must have a positive std")
    return {arg: (parts[0], parts[1])}


def _significance(arg: str, value: Any, marker: _Marker) -> Dict[str, Any]:
    out = _number(arg, value)
    if not 0.0 < out < 1.0:
        raise _bad(arg, value, "must lie strictly between 0 and 1 (a significance level, 0.05)")
    return {arg: out}


def _channel_axis(arg: str, value: Any, marker: _Marker) -> Dict[str, Any]:
    if value is not None and _int(arg, value, -64) == 0:
        raise _bad(
            arg,
            value,
            "is the batch axis; give the channel axis (1 for (N, C, H, W), -1 for (N, H, W, C))",
        )
    return {arg: None if value is None else int(value)}


def _attack_input(arg: str, value: Any, marker: _Marker) -> Dict[str, Any]:
    if value is None:
        return {arg: None}
    if isinstance(value, str) and value:
        return {arg: value}
    return {arg: _int(arg, value, 0)}


#: Every marker argument, in the order of the marker help: (default shown, check).
ARGUMENTS: Dict[str, Tuple[Optional[str], Check]] = {
    "threshold": (None, _threshold),  # the one positional argument
    "attack": ("'gan'", _attack),
    "eps": ("None", _eps),
    "norm": ("'linf'", _norm),
    "steps": ("40", _integer(1)),
    "step_size": ("None", _step_size),
    "restarts": ("1", _integer(1)),
    "random_start": ("False", _random_start),
    "n_samples": ("None", _integer(1)),
    "metric": ("'absolute'", _choice(METRICS)),
    "seed": ("None", _integer(0)),
    "model": ("'robust_model'", _fixture_name),
    "data": ("'robust_data'", _fixture_name),
    "bounds": ("(0, 1)", _bounds),
    "preprocessing": ("None", _preprocessing),
    "refine": ("0", _integer(0)),
    "tolerance": ("None", _in_range(0.0, 1.0)),
    "significance": ("None", _significance),
    "sanity": ("None", _choice(SANITY_LEVELS)),
    "threshold_eps": ("None", _threshold_eps),
    "batch_size": ("None", _integer(1)),
    "targets": ("0", _integer(0)),
    "channel_axis": ("None", _channel_axis),
    "min_clean_accuracy": ("None", _in_range(0.0, 1.0, optional=True)),
    "validity": ("0.9", _in_range(0.5, 1.0, high_open=True)),
    "attack_input": ("None", _attack_input),
}
MARKER_ARGS = tuple(ARGUMENTS)
#: The line ``pytest --markers`` shows for the marker.
MARKER_HELP = (
    "robust("
    + ", ".join(n if shown is None else f"{n}={shown}" for n, (shown, _) in ARGUMENTS.items())
    + "): fail the test when clean minus adversarial accuracy exceeds threshold "
    "(runs with --advrobust)"
)


def _arguments(kwargs: Mapping[str, Any], args: Sequence[Any]) -> Mapping[str, Any]:
    """The marker's arguments by name; the threshold may come as the one positional."""
    if args:
        if len(args) > 1 or "threshold" in kwargs:
            raise AdvRobustError(
                "robust marker takes one positional argument, the threshold; "
                "pass the others by name"
            )
        kwargs = dict(kwargs, threshold=args[0])
    unknown = sorted(set(kwargs) - set(MARKER_ARGS))
    if unknown:
        raise AdvRobustError(
            f"robust marker got unknown argument {unknown[0]!r}"
            f"{did_you_mean(unknown[0], MARKER_ARGS)}; "
            f"known arguments: {', '.join(MARKER_ARGS)}"
        )
    return kwargs


def from_marker(
    kwargs: Mapping[str, Any],
    args: Sequence[Any],
    base: RobustSettings,
    *,
    require_threshold: bool = True,
    known_attacks: Optional[Sequence[str]] = None,
) -> RobustSettings:
    """Apply the ``robust`` marker's arguments over ``base`` and validate them.

    Raises :class:`AdvRobustError` naming the first bad argument (in the order of
    :data:`ARGUMENTS`), an unknown argument, or a missing threshold when
    ``require_threshold``.
    """
    kwargs = _arguments(kwargs, args)
    if kwargs.get("threshold") is None and require_threshold:
        raise AdvRobustError(
            "robust marker needs a threshold, e.g. @pytest.mark.robust(threshold=0.1)"
        )
    marker = _Marker(kwargs, base, known_attacks, {})
    for arg, (_, check) in ARGUMENTS.items():
        if arg in kwargs:
            marker.update.update(check(arg, kwargs[arg], marker))
    out = replace(base, **marker.update)
    if out.threshold_eps is not None and not any(
        math.isclose(out.threshold_eps, e) for e in out.eps
    ):
        raise _bad("threshold_eps", out.threshold_eps, "must be one of the swept eps values")
    _check_applies(kwargs, out.attacks)
    return out


def _check_applies(kwargs: Mapping[str, Any], attacks: Sequence[str]) -> None:
    """Raise when the marker sets an argument that only some attacks read (such as
    ``refine``, which only ``gan`` reads) and none of the test's attacks reads it; an
    attack another plugin registered may read anything."""
    if not all(is_builtin(a) for a in attacks):
        return
    for arg, value in kwargs.items():
        readers = readers_of(arg)
        if readers and value and not set(readers) & set(attacks):
            quoted = [repr(r) for r in readers]
            names = ", ".join(quoted[:-1]) + " or " + quoted[-1] if len(quoted) > 1 else quoted[0]
            raise _bad(
                arg,
                value,
                f"has no effect with attack={_attack_words(attacks)}: only {names} "
                f"{'reads' if len(readers) == 1 else 'read'} it; "
                "remove it, or add such an attack to the list",
            )


def _attack_words(attacks: Sequence[str]) -> str:
    return repr(attacks[0]) if len(attacks) == 1 else repr(list(attacks))


def resolve_settings(
    marker: Any, base: RobustSettings, require_threshold: bool
) -> Tuple[RobustSettings, Optional[str]]:
    """A test's settings: the ``robust`` marker (``args``/``kwargs``; ``None`` without
    one) over ``base``, with its eps checked (:func:`check_eps`); ``(settings, warning)``.
    Raises :class:`AdvRobustError` naming the bad argument or eps."""
    if marker is None:
        settings = base
    else:
        settings = from_marker(
            marker.kwargs, marker.args, base, require_threshold=require_threshold
        )
    return settings, check_eps(settings, marker is not None and "eps" in marker.kwargs)
