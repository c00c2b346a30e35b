"""The package's shape: small modules, short functions, and imports that flow one way.

plugin -> settings -> data -> attack (-> gan -> cache) -> evaluate -> report.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pytest_advrobust"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60

#: Modules and functions still above the limits, each with the size it may not
#: exceed while it waits to be split. The list may only shrink: a module or
#: function that is not listed must keep to the limits.
MODULE_DEBT: dict = {}
FUNCTION_DEBT: dict = {}
#: Option tables and check catalogues: long by nature, exempt from the function limit.
TABLES = {"plugin/options.py:add_options", "plugin/__init__.py:pytest_addoption"}

#: Modules that import pytest because a pytest type or pytest itself is the point:
#: hooks, the session behind them, the pytest-html hooks, the CLI that runs pytest
#: (``advrobust warm``), and pytest's own rootdir rules.
PYTEST_USERS = {
    "plugin/__init__.py",
    "plugin/session.py",
    "plugin/judge.py",
    "plugin/options.py",
    "plugin/baseline_run.py",
    "plugin/terminal.py",
    "plugin/user_fixtures.py",
    "plugin/html_report.py",
    "cli/warm.py",
    "cli/rootdir.py",
}

#: The ``advrobust`` command: its entry point and one module per sub-command.
CLI = {"cli", "cli_cache", "cli_compare", "cli_warm", "cli_output"}

#: The only package modules a leaf ("*") may import: the leaves it is built from.
LEAF_BASES = {"option_types.py": {"parsing"}}

#: Lower layers that must not import the named upper ones.
NOT_ABOVE = {
    "geometry.py": {"*"},
    "errors.py": {"*"},
    "cache/": {"attacks", "gan", "evaluation", "plugin", "session", "report", *CLI, "sanity"},
    "gan/": {"attacks", "evaluation", "plugin", "session", "report", *CLI, "sanity"},
    "attacks/": {"evaluation", "plugin", "session", "report", *CLI, "sanity"},
    "report.py": {"plugin", "session", "evaluation", "attacks"},
    "parsing.py": {"*"},
    "option_types.py": {"*"},  # but the value parsers it is built from, see LEAF_BASES
    "marker.py": {"plugin", "session", "evaluation", "report", *CLI, "sanity", "gan", "cache"},
    "settings.py": {"plugin", "session", "evaluation", "report", *CLI, "sanity", "gan", "cache"},
    "cache_folder.py": {"plugin", "session", "evaluation", "attacks", "gan", "cache", *CLI},
    "run_tools.py": {"plugin", "session", "evaluation", "report", *CLI, "sanity", "gan", "cache"},
    "preparation.py": {
        "plugin",
        "session",
        "evaluation",
        "attacks",
        "gan",
        "cache",
        *CLI,
        "sanity",
    },
    "outcome.py": {"plugin", "session", "evaluation", "attacks", "gan", "cache", *CLI, "sanity"},
    "sanity/": {"evaluation", "plugin", "session", "report", "cli", "warm", "gan", "cache"},
}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE).as_posix(), path


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.end_lineno - node.lineno + 1


def test_no_module_or_function_grows_past_its_limit():
    too_big = []
    for rel, path in _modules():
        source = path.read_text()
        lines = source.count("\n")
        if lines > MODULE_DEBT.get(rel, MAX_MODULE_LINES):
            too_big.append(f"{rel}: {lines} lines")
        for name, length in _functions(ast.parse(source)):
            key = f"{rel}:{name}"
            if key in TABLES:
                continue
            if length > FUNCTION_DEBT.get(key, MAX_FUNCTION_LINES):
                too_big.append(f"{key}: {length} lines")
    assert not too_big, "split these: " + "; ".join(too_big)


def test_the_debt_list_names_only_what_is_still_too_big():
    sizes = {}
    for rel, path in _modules():
        source = path.read_text()
        sizes[rel] = source.count("\n")
        for name, length in _functions(ast.parse(source)):
            sizes[f"{rel}:{name}"] = max(length, sizes.get(f"{rel}:{name}", 0))
    paid = [k for k in MODULE_DEBT if sizes.get(k, 0) <= MAX_MODULE_LINES]
    paid += [k for k in FUNCTION_DEBT if sizes.get(k, 0) <= MAX_FUNCTION_LINES]
    assert not paid, "within the limits now; remove from the debt list: " + ", ".join(paid)


def _imports(path: Path):
    """(package-internal top-level module names, external top-level names) imported."""
    rel_parts = path.relative_to(PACKAGE).parts
    internal, external = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.name.split(".")
                if name[0] == "pytest_advrobust" and len(name) > 1:
                    internal.add(name[1])
                else:
                    external.add(name[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                name = (node.module or "").split(".")
                if name[0] == "pytest_advrobust":
                    internal.update([name[1]] if len(name) > 1 else [a.name for a in node.names])
                else:
                    external.add(name[0])
                continue
            base = list(rel_parts[:-1])[: len(rel_parts) - node.level]
            target = base + (node.module.split(".") if node.module else [])
            if target:
                internal.add(target[0].removesuffix(".py"))
            else:
                internal.update(a.name for a in node.names)
    return internal, external


def test_only_the_pytest_layer_imports_pytest():
    offenders = []
    for rel, path in _modules():
        _, external = _imports(path)
        if {"pytest", "_pytest"} & external and rel not in PYTEST_USERS:
            offenders.append(rel)
    assert not offenders, f"import pytest below the plugin layer: {offenders}"


@pytest.mark.parametrize("lower", sorted(NOT_ABOVE))
def test_imports_flow_one_way(lower):
    banned = NOT_ABOVE[lower]
    offenders = []
    for rel, path in _modules():
        if not (rel == lower or (lower.endswith("/") and rel.startswith(lower))):
            continue
        internal, _ = _imports(path)
        own = lower.rstrip("/").removesuffix(".py")
        internal.discard(own)
        internal -= LEAF_BASES.get(lower, set())
        bad = internal if "*" in banned else internal & banned
        if bad:
            offenders.append(f"{rel} imports {sorted(bad)}")
    assert not offenders, "; ".join(offenders)


def test_loading_the_plugin_imports_no_torch():
    code = (
        "import sys, pytest_advrobust.plugin; "
        "heavy = [m for m in ('torch', 'numpy', 'safetensors') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
