"""The run's GAN cache folder: chosen from the options without touching the disk, then
made and probed on first use (torch-free: the plugin chooses it at configure time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Tuple

from .paths import ENV_CACHE_DIR, resolve_cache_dir, unwritable_reason

__all__ = ["choose_cache_dir", "open_cache_folder"]


def choose_cache_dir(
    option: Optional[str],
    ini: Optional[str],
    environ: Mapping[str, str],
    rootpath: Any,
    has_pytest_cache: bool,
) -> Tuple[Optional[Path], bool]:
    """``(folder, default)``: ``default`` when neither ``--advrobust-cache-dir``, the ini key
    nor ``$ADVROBUST_CACHE_DIR`` names a folder and pytest's cache plugin is on; the folder
    is then pytest's own, ``None`` until it is made."""
    default = not (option or ini or environ.get(ENV_CACHE_DIR)) and has_pytest_cache
    if default:
        return None, True
    return resolve_cache_dir(option, ini or None, environ, rootpath), False


def open_cache_folder(
    folder: Optional[Path], make_default: Optional[Callable[[], Any]]
) -> Tuple[Optional[Path], Optional[str]]:
    """``(folder, None)`` when the folder can be written, else ``(None, note)`` with the
    warning to show once. ``make_default`` makes pytest's own cache folder and returns it
    (given when :func:`choose_cache_dir` chose the default)."""
    try:
        if make_default is not None:  # pytest's own cache folder, wherever its ini puts it
            folder = Path(make_default())
        reason = unwritable_reason(Path(folder))
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    if reason is None:
        return Path(folder), None
    where = folder if folder is not None else "pytest's cache folder"
    return None, (
        f"GAN cache folder {where} cannot be written ({reason}): "
        "generators are kept in memory for this session and not "
        "cached, and evaluations are not stored for reuse; point --advrobust-cache-dir "
        "or $ADVROBUST_CACHE_DIR at a writable folder to keep them"
    )
