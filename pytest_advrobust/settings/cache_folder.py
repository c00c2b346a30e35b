"""Where the GAN cache lives: chosen from the options without touching the disk, then made
and probed on first use (torch-free: the plugin chooses it at configure time)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Tuple

ENV_CACHE_DIR = "ADVROBUST_CACHE_DIR"
#: The folder of stored evaluations inside the cache folder
#: (:mod:`pytest_advrobust.evaluation.store`).
EVALUATIONS_FOLDER = "evaluations"

__all__ = [
    "ENV_CACHE_DIR",
    "EVALUATIONS_FOLDER",
    "choose_cache_dir",
    "open_cache_folder",
    "resolve_cache_dir",
    "unwritable_reason",
]


def resolve_cache_dir(
    option_value: Optional[str],
    ini_value: Optional[str],
    env: Optional[Mapping[str, str]] = None,
    rootdir: Optional[str | os.PathLike[str]] = None,
) -> Path:
    """Where the GAN cache lives: option > ini > ``$ADVROBUST_CACHE_DIR`` > default.

    The default is ``<rootdir>/.pytest_cache/d/advrobust``. Empty strings count
    as unset; ``~`` is expanded. A relative option or environment value is
    taken from the current directory, a relative ini value from ``rootdir``.
    ``env`` defaults to :data:`os.environ`, ``rootdir`` to the current directory.
    The folder is not created.
    """
    env = os.environ if env is None else env
    base = Path(rootdir) if rootdir is not None else Path.cwd()
    for value, relative_to in (
        (option_value, None),
        (ini_value, base),
        (env.get(ENV_CACHE_DIR), None),
    ):
        if value is None or not str(value).strip():
            continue
        path = Path(os.path.expandvars(str(value).strip())).expanduser()
        if not path.is_absolute():
            path = (relative_to / path) if relative_to is not None else path.absolute()
        return path
    return base / ".pytest_cache" / "d" / "advrobust"


def unwritable_reason(folder: Path) -> Optional[str]:
    """Why ``folder`` cannot hold cache entries (created if missing), or ``None``.

    Probes by creating the folder and a temporary file in it: mode bits alone
    say nothing for root or on a read-only mount.
    """
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".advrobust-probe-", dir=str(folder))
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


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
