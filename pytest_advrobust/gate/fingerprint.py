"""The environment fingerprint: what a run's numbers depend on beyond the model and the data.

A baseline records the fingerprint of the run that wrote it (torch and Python
versions, the device kind, the seed, the plugin's version); a later run, or
``advrobust compare``, lists the differences so that a change of numbers can be
told from a change of environment. Torch is imported only when a fingerprint is
taken.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, List, Mapping, Optional

__all__ = ["environment_fingerprint", "fingerprint_differences"]

#: Order in which fingerprint differences are listed.
_FINGERPRINT_ORDER = ("torch", "device_kind", "python", "plugin", "seed")


def _plugin_version() -> str:
    try:
        import pytest_advrobust

        version = getattr(pytest_advrobust, "__version__", None)
        if version:
            return str(version)
    except ImportError:  # pragma: no cover - we are inside the package
        pass
    try:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as dist_version

        return dist_version("pytest-advrobust")
    except (ImportError, PackageNotFoundError):
        return "unknown"


def _device_kind(device: Any) -> str:
    import torch

    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dev.type == "cpu":
        return "cpu"
    if dev.type == "cuda":
        try:
            name = torch.cuda.get_device_name(dev)
        except Exception:  # no CUDA runtime, bad index: still a usable fingerprint
            name = "unknown"
        return f"cuda:{name}"
    return dev.type


def environment_fingerprint(device: Any, seed: int) -> Dict[str, Any]:
    """Describe what the numbers depend on beyond the model and the data.

    ``device`` is anything ``torch.device`` accepts (``"cpu"``, ``"cuda:0"``);
    a CUDA device is named by its card (``"cuda:NVIDIA H200"``), so two runs on
    the same kind of card match whatever their device index.
    """
    import torch

    return {
        "torch": str(torch.__version__),
        "device_kind": _device_kind(device),
        "seed": int(seed),
        "plugin": _plugin_version(),
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
    }


def fingerprint_differences(
    baseline_env: Optional[Mapping[str, Any]], current_env: Optional[Mapping[str, Any]]
) -> List[str]:
    """Human-readable differences between two fingerprints.

    ``["torch 2.13.0 -> 2.14.1", "device_kind cpu -> cuda:NVIDIA H200"]``;
    an empty list when they agree. A key recorded on one side only shows as
    ``(not recorded)`` on the other.
    """
    old = dict(baseline_env or {})
    new = dict(current_env or {})
    keys = [k for k in _FINGERPRINT_ORDER if k in old or k in new]
    keys += sorted((set(old) | set(new)) - set(_FINGERPRINT_ORDER))
    out = []
    for key in keys:
        before = old.get(key, _NOT_RECORDED)
        after = new.get(key, _NOT_RECORDED)
        if before != after:
            out.append(f"{key} {_show(before)} -> {_show(after)}")
    return out


_NOT_RECORDED = object()


def _show(value: Any) -> str:
    if value is _NOT_RECORDED:
        return "(not recorded)"
    return str(value)
