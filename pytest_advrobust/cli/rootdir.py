"""Where pytest would keep the GAN cache, found from a folder as pytest finds it.

The ``advrobust`` command runs outside pytest, so it finds the rootdir and the
configuration file the way pytest does from the same folder (pytest's own
``determine_setup``), then applies the plugin's rule: ``--cache-dir`` >
ini ``advrobust_cache_dir`` (relative to the rootdir) > ``$ADVROBUST_CACHE_DIR``
> pytest's cache folder (ini ``cache_dir``, default ``.pytest_cache``) plus
``d/advrobust``.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

__all__ = ["pytest_setup", "pytest_cache_dir"]


def pytest_setup(args: Sequence[str], invocation_dir: Path) -> Tuple[Path, Dict[str, str]]:
    """``(rootdir, ini values)`` that ``pytest ARGS`` started in ``invocation_dir`` would use."""
    try:
        from _pytest.config.findpaths import determine_setup
    except ImportError:  # pragma: no cover - a pytest without it
        return Path(invocation_dir), {}
    given = {
        "inifile": None,
        "override_ini": None,
        "args": [str(a) for a in args],
        "rootdir_cmd_arg": None,
        "invocation_dir": Path(invocation_dir),
    }
    wanted = inspect.signature(determine_setup).parameters
    kwargs = {k: v for k, v in given.items() if k in wanted}
    old = os.getcwd()
    try:
        os.chdir(invocation_dir)  # older pytest versions read the current folder
        rootdir, _, inicfg, *_ = determine_setup(**kwargs)
    except Exception:  # an unreadable config file: pytest itself would say why
        return Path(invocation_dir), {}
    finally:
        os.chdir(old)
    values = {str(k): str(getattr(v, "value", v)) for k, v in dict(inicfg or {}).items()}
    return Path(rootdir), values


def pytest_cache_dir(
    option: Optional[str], env: Mapping[str, str], invocation_dir: Path, args: Sequence[str] = ()
) -> Path:
    """The GAN cache folder of a pytest run of ``args`` started in ``invocation_dir``."""
    from ..cache import resolve_cache_dir

    rootdir, ini = pytest_setup(args, invocation_dir)
    ini_value: Any = ini.get("advrobust_cache_dir") or None
    if option or ini_value or (env.get("ADVROBUST_CACHE_DIR") or "").strip():
        return Path(resolve_cache_dir(option, ini_value, env, rootdir))
    own = ini.get("cache_dir") or ".pytest_cache"
    base = Path(os.path.expandvars(own)).expanduser()
    return (base if base.is_absolute() else rootdir / base) / "d" / "advrobust"
