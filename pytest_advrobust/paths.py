"""Where the GAN cache lives (torch-free, so the plugin can resolve it at load time)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional

ENV_CACHE_DIR = "ADVROBUST_CACHE_DIR"
#: The folder of stored evaluations inside the cache folder (see ``evaluation_store``).
EVALUATIONS_FOLDER = "evaluations"

__all__ = ["ENV_CACHE_DIR", "EVALUATIONS_FOLDER", "resolve_cache_dir", "unwritable_reason"]


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
