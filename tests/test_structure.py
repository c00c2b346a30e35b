"""The package's shape: one folder per stage, imports that flow one way, small pieces.

Stages, from the ground up (a module imports only from its own stage and earlier ones):

ground (the top-level modules) < settings < cache < inputs < metrics < gan < attacks
< conditional < sanity < evaluation < gate < reports < cli < plugin.

Every import counts: at module level, inside functions and under ``TYPE_CHECKING``.
The checks read the package's import statements (never run it), so the tests below
plant an upward import and a cycle in a copy of the package and see them caught.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pytest_advrobust"
NAME = "pytest_advrobust"

#: The stages in flow order; the ground is the package's top-level modules.
STAGES = (
    "ground",
    "settings",
    "cache",
    "inputs",
    "metrics",
    "gan",
    "attacks",
    "conditional",
    "sanity",
    "evaluation",
    "gate",
    "reports",
    "cli",
    "plugin",
)
#: The stages that may import pytest: the hooks and the command that runs pytest.
PYTEST_STAGES = {"plugin", "cli"}
#: Stages below the evaluation that receive values, never the settings object.
BELOW_EVALUATION = STAGES[STAGES.index("settings") + 1 : STAGES.index("evaluation")]
MAX_TOP_LEVEL = 8
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
MAX_PARAMETERS = 7
#: Option tables: long by nature, exempt from the function length limit.
TABLES = {"plugin/options.py:add_options", "plugin/__init__.py:pytest_addoption"}


# ------------------------------------------------------------ reading the package


def _modules(root: Path) -> Dict[str, Path]:
    """Dotted module name (``pytest_advrobust.inputs.data``; a package by its own name)
    -> file, for every module under ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = [NAME, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imported(module: str, path: Path, known: Set[str]) -> Iterator[str]:
    """The package's modules that ``module`` (at ``path``) imports, anywhere in the file."""

    def nearest(dotted: str) -> str:
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted

    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == NAME or alias.name.startswith(NAME + "."):
                    yield nearest(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source != NAME and not source.startswith(NAME + "."):
                continue
            for alias in node.names:  # ``from . import files`` imports a module
                full = f"{source}.{alias.name}"
                yield full if full in known else nearest(source)


def import_graph(root: Path) -> Dict[str, Set[str]]:
    """Module -> the package's modules it imports (itself left out)."""
    modules = _modules(root)
    known = set(modules)
    return {m: set(_imported(m, p, known)) - {m, ""} for m, p in modules.items()}


def stage_of(module: str) -> str:
    parts = module.split(".")[1:]
    return parts[0] if parts and parts[0] in STAGES else "ground"


def upward_imports(graph: Dict[str, Set[str]]) -> List[str]:
    """``a -> b`` for every import from a stage to a later one."""
    rank = {s: i for i, s in enumerate(STAGES)}
    return sorted(
        f"{a} -> {b}"
        for a, targets in graph.items()
        for b in targets
        if rank[stage_of(b)] > rank[stage_of(a)]
    )


def import_cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The groups of modules that import each other in a loop (Tarjan's strongly connected
    components of more than one module, or a module that imports itself)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def _parameters(fn: ast.FunctionDef) -> List[str]:
    """Every parameter but a method's ``self``/``cls``; ``*args`` and ``**kwargs`` count."""
    a = fn.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
    if names and names[0] in ("self", "cls"):
        names = names[1:]
    return names + [x.arg for x in (a.vararg, a.kwarg) if x is not None]


def _external(path: Path) -> Set[str]:
    """Top-level names of the outside packages ``path`` imports."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def _rel(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


# -------------------------------------------------------------------- the checks


def test_imports_flow_one_way_through_the_stages():
    assert upward_imports(import_graph(PACKAGE)) == []


def test_no_modules_import_each_other_in_a_loop():
    assert import_cycles(import_graph(PACKAGE)) == []


def test_every_stage_is_a_folder_named_after_it_and_the_top_level_is_small():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(STAGES) - {"ground"}
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL, top


def test_only_the_hooks_and_the_command_import_pytest():
    offenders = [
        _rel(path)
        for module, path in _modules(PACKAGE).items()
        if {"pytest", "_pytest"} & _external(path) and stage_of(module) not in PYTEST_STAGES
    ]
    assert offenders == []


def test_nothing_below_the_evaluation_takes_the_settings_object():
    settings = f"{NAME}.settings.robust"
    graph = import_graph(PACKAGE)
    offenders = []
    for module, path in _modules(PACKAGE).items():
        if stage_of(module) not in BELOW_EVALUATION:
            continue
        if settings in graph[module]:
            offenders.append(f"{_rel(path)} imports {settings}")
        for fn in _functions(ast.parse(path.read_text())):
            if "settings" in _parameters(fn):
                offenders.append(f"{_rel(path)}:{fn.name} takes settings")
    assert offenders == []


def test_no_function_takes_more_than_seven_parameters():
    too_many = [
        f"{_rel(path)}:{fn.name} ({len(_parameters(fn))})"
        for path in _modules(PACKAGE).values()
        for fn in _functions(ast.parse(path.read_text()))
        if len(_parameters(fn)) > MAX_PARAMETERS
    ]
    assert too_many == []


def test_no_module_or_function_grows_past_its_limit():
    too_big = []
    for path in _modules(PACKAGE).values():
        source = path.read_text()
        if source.count("\n") > MAX_MODULE_LINES:
            too_big.append(f"{_rel(path)}: {source.count(chr(10))} lines")
        for fn in _functions(ast.parse(source)):
            key = f"{_rel(path)}:{fn.name}"
            if key not in TABLES and fn.end_lineno - fn.lineno + 1 > MAX_FUNCTION_LINES:
                too_big.append(f"{key}: {fn.end_lineno - fn.lineno + 1} lines")
    assert too_big == [], "split these"


def test_attacks_named_in_the_table_live_in_the_attacks_stage():
    """The registry imports a built-in attack by its module's name: a name outside the
    attacks stage would be an import the graph above cannot see."""
    from pytest_advrobust.attack_table import ATTACKS

    for name, facts in ATTACKS.items():
        if facts.module is not None:
            assert stage_of(facts.module) == "attacks", name


def test_loading_the_plugin_imports_no_torch():
    code = (
        "import sys, pytest_advrobust.plugin; "
        "heavy = [m for m in ('torch', 'numpy', 'safetensors') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------- the checks catch what they look for


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A copy of the package to plant imports in."""
    root = tmp_path / NAME
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _plant(root: Path, rel: str, code: str) -> None:
    path = root / rel
    path.write_text(path.read_text() + "\n" + code + "\n")


@pytest.mark.parametrize(
    "rel, code, expected",
    [
        (  # a lower stage reaching up, inside a function
            "inputs/data.py",
            "def _late():\n    from ..plugin import session\n",
            (f"{NAME}.inputs.data", f"{NAME}.plugin.session"),
        ),
        (  # under TYPE_CHECKING, absolute
            "attacks/base.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from pytest_advrobust.evaluation.outcome import Outcome\n",
            (f"{NAME}.attacks.base", f"{NAME}.evaluation.outcome"),
        ),
        (  # the ground importing a stage
            "geometry.py",
            "import pytest_advrobust.conditional.networks\n",
            (f"{NAME}.geometry", f"{NAME}.conditional.networks"),
        ),
    ],
)
def test_a_planted_upward_import_is_caught(copy, rel, code, expected):
    assert upward_imports(import_graph(copy)) == []
    _plant(copy, rel, code)
    assert upward_imports(import_graph(copy)) == [" -> ".join(expected)]


@pytest.mark.parametrize(
    "rel, code, cycle",
    [
        (  # two modules of one stage, the loop closed under TYPE_CHECKING
            "metrics/intervals.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from .accuracy import Predictions\n",
            ["metrics.accuracy", "metrics.intervals"],
        ),
        (  # inside the conditional-generator stage, through ``from . import``
            "conditional/networks.py",
            "def _later():\n    from . import store\n",
            ["conditional.networks", "conditional.store", "conditional.training"],
        ),
    ],
)
def test_a_planted_cycle_is_caught(copy, rel, code, cycle):
    assert import_cycles(import_graph(copy)) == []
    _plant(copy, rel, code)
    assert import_cycles(import_graph(copy)) == [[f"{NAME}.{m}" for m in cycle]]


def test_the_graph_reads_every_kind_of_import(copy: Path) -> None:
    """Relative, absolute, ``from . import``, ``import a.b as c`` and package imports all
    become edges to the module they name."""
    _plant(
        copy,
        "reports/tables.py",
        "import pytest_advrobust.gate.paired as paired\n"
        "from pytest_advrobust import errors\n"
        "from ..gate import checks\n"
        "from .. import runtime\n"
        "from ..cache import protocol\n",
    )
    edges: Set[Tuple[str, str]] = {
        (a, b) for a, targets in import_graph(copy).items() for b in targets
    }
    source = f"{NAME}.reports.tables"
    for target in ("gate.paired", "errors", "gate.checks", "runtime", "cache.protocol"):
        assert (source, f"{NAME}.{target}") in edges, target
