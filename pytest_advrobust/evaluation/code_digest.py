"""A digest of the code a model or an attack runs, for the keys of stored evaluations.

A stored evaluation may only be reused when the model is the same model: the same
weights, and the same code around them. Weights are digested by
:func:`~pytest_advrobust.cache.keys.digest_module`; :func:`code_digest` adds the compiled code (the
bytecode, its constants and names, not the source text) of every function defined in
the Python modules that define the model's classes (or the attack function), so an
edit to ``forward`` or to a helper in the same file changes the key. Code outside
those modules (another package the model calls into) is not covered: pass
``--advrobust-retrain`` after changing it. Modules of torch and of the standard
library are left out: a new torch version is keyed on its version instead.
"""

from __future__ import annotations

import hashlib
import sys
import types
from typing import Any, Iterable, Set

__all__ = ["code_digest"]

#: Top-level packages whose code the digest leaves out (versioned separately or stable).
_SKIPPED = ("torch", "torchvision", "builtins", "functools", "typing", "abc", "collections")


def _update_const(h: "hashlib._Hash", const: Any) -> None:
    """A constant of compiled code, the same in every process (sets in sorted order)."""
    if isinstance(const, types.CodeType):
        _update_code(h, const)
    elif isinstance(const, (tuple, frozenset)):
        items = sorted(const, key=repr) if isinstance(const, frozenset) else const
        h.update(b"(")
        for item in items:
            _update_const(h, item)
        h.update(b")")
    else:
        h.update(repr(const).encode() + b"\0")


def _update_code(h: "hashlib._Hash", code: types.CodeType) -> None:
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    for const in code.co_consts:
        _update_const(h, const)


def _functions(module: types.ModuleType) -> Iterable[tuple]:
    """``(qualified name, code)`` of the functions and methods defined in ``module``."""
    for name, value in sorted(vars(module).items()):
        if isinstance(value, types.FunctionType) and value.__module__ == module.__name__:
            yield name, value.__code__
        elif isinstance(value, type) and value.__module__ == module.__name__:
            for attr, member in sorted(vars(value).items()):
                func = getattr(member, "__func__", member)  # staticmethod, classmethod
                if isinstance(func, types.FunctionType):
                    yield f"{name}.{attr}", func.__code__


def _modules_of(obj: Any) -> Set[str]:
    """Names of the modules that define ``obj``'s classes (and its submodules')."""
    names = set()
    subs = obj.modules() if callable(getattr(obj, "modules", None)) else [obj]
    for sub in subs:
        for cls in type(sub).__mro__:
            names.add(cls.__module__)
    if isinstance(obj, types.FunctionType):
        names.add(obj.__module__)
    return {n for n in names if n and n.split(".")[0] not in _SKIPPED}


def _scripted_code(obj: Any) -> str:
    """The TorchScript code of a scripted model and its submodules ('' for others)."""
    parts = []
    subs = obj.modules() if callable(getattr(obj, "modules", None)) else [obj]
    for sub in subs:
        try:
            code = getattr(sub, "code", None)
        except Exception:  # a scripted module without a forward
            code = None
        if isinstance(code, str):
            parts.append(code)
    return "\0".join(parts)


def code_digest(obj: Any) -> str:
    """SHA-256 (hex) of the compiled code of the modules defining ``obj``'s classes
    (an ``nn.Module`` and its submodules) or ``obj`` itself (a function); for a
    TorchScript model, of its scripted code too."""
    h = hashlib.sha256(b"advrobust-code\0")
    h.update(_scripted_code(obj).encode() + b"\0")
    for module_name in sorted(_modules_of(obj)):
        module = sys.modules.get(module_name)
        h.update(module_name.encode() + b"\0")
        if module is None:
            continue
        for name, code in _functions(module):
            h.update(name.encode() + b"\0")
            _update_code(h, code)
    return h.hexdigest()
