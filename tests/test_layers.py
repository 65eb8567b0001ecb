"""The layers point down, on every module of the package (src/edgecompress walked recursively, plus the
components and pipelines shipped as edgecompress.components / edgecompress.pipelines), with the rules
in one table (LAYERS: which layer each package or module is in; MAY_IMPORT: which layers a layer may
import), and no import circle between modules. Imports inside functions count: a lazy import is
still an edge (static tools and readers see it; it only hides a circle from the interpreter)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import skip_or_fail_in_ci

ROOT = Path(__file__).resolve().parents[1]
# Where each importable package's source lives (the repository layout; pyproject maps the same).
SOURCES = {
    "edgecompress": ROOT / "src" / "edgecompress",
    "edgecompress.components": ROOT / "components",
    "edgecompress.pipelines": ROOT / "pipelines",
}

# The rules, in one table. A module belongs to the layer of its longest prefix listed here.
LAYERS = {
    # core: data in and out, models, artifacts, tracking, parameter surfaces, decision statistics, the
    # accuracy rule and reasons (rules), the command-line runner, and the runtime (device vocabulary,
    # benchmark runner, executors, logits, latency measurement on this machine)
    "core": (
        "edgecompress", "edgecompress.errors", "edgecompress.io", "edgecompress.settings",
        "edgecompress.progress", "edgecompress.reports", "edgecompress.storage", "edgecompress.data",
        "edgecompress.zoo", "edgecompress.export", "edgecompress.lineage", "edgecompress.platform",
        "edgecompress.params", "edgecompress.stats", "edgecompress.entry", "edgecompress.runtime",
        "edgecompress.rules",
    ),
    # the step mechanism every technique's step goes through (validate, track, load, save, log)
    "step": ("edgecompress.step",),
    # the farm's client side: dispatch jobs to a farm, or start a private loopback farm to dispatch to
    # (and the wire schemas the client and the agent build their requests from)
    "farm-client": (
        "edgecompress.farm.client", "edgecompress.farm.local", "edgecompress.farm.admin", "edgecompress.farm.wire",
    ),
    # the device farm, a service over the runtime (controller, store, agent, its own entry point)
    "service": ("edgecompress.farm",),
    # techniques (and the steps and checks built from them); edge benchmarks on farms
    "technique": (
        "edgecompress.train", "edgecompress.evaluate", "edgecompress.prune", "edgecompress.quantize",
        "edgecompress.distill", "edgecompress.nas", "edgecompress.edge", "edgecompress.isa",
        "edgecompress.gate", "edgecompress.audit", "edgecompress.drift", "edgecompress.architectures",
        "edgecompress.profile",
    ),
    # adapters: the terminal, Kubeflow components, pipelines
    "adapter": ("edgecompress.cli", "edgecompress.components", "edgecompress.pipelines"),
}  # fmt: skip
MAY_IMPORT = {
    "core": {"core"},
    "step": {"core", "step"},
    "farm-client": {"core", "farm-client"},
    "service": {"core", "farm-client", "service"},
    "technique": {"core", "step", "farm-client", "technique"},
    "adapter": {"core", "step", "farm-client", "service", "technique", "adapter"},
}
# Third-party packages only adapters may import (the library runs without Kubeflow).
ADAPTER_ONLY = ("kfp",)


def _files() -> Iterator[tuple[str, Path]]:
    """(module name, file) for every Python module under SOURCES (no symlinks there: a test checks)."""
    for package, folder in SOURCES.items():
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder)
            if any(p in ("tests", "__pycache__") for p in rel.parts):
                continue
            parts = rel.with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            yield ".".join((package, *parts)), path


def _module_names() -> dict[str, Path]:
    return dict(_files())


def _imports(module: str, path: Path, known: set[str]) -> list[tuple[int, str]]:
    """(line, name) for each import in the file: modules of the package resolved to the deepest known
    module (`from a import b` is a.b when b is a module), other names as written."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((node.lineno, sub if sub in known else base))
    out = []
    for line, name in found:
        resolved = name
        while resolved not in known and resolved.startswith("edgecompress."):
            resolved = resolved.rpartition(".")[0]
        # a name under no known module but the root (a package not walked) keeps its own layer
        out.append((line, resolved if resolved != "edgecompress" else name))
    return out


def layer_of(module: str) -> str:
    best, found = -1, ""
    for layer, prefixes in LAYERS.items():
        for prefix in prefixes:
            inside = module.startswith(prefix + ".") and prefix != "edgecompress"  # the root: itself only
            if (module == prefix or inside) and len(prefix) > best:
                best, found = len(prefix), layer
    if not found:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_layers.py")
    return found


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported module of the package: first line}."""
    names = _module_names()
    known = set(names)
    graph: dict[str, dict[str, int]] = {}
    for module, path in names.items():
        edges = graph.setdefault(module, {})
        for line, name in _imports(module, path, known):
            if name in known and name != module and name != "edgecompress":
                edges.setdefault(name, line)
    return graph


def upward_edges() -> list[str]:
    names = _module_names()
    known = set(names)
    violations = []
    for module, path in names.items():
        layer = layer_of(module)
        for line, name in dict.fromkeys(_imports(module, path, known)):
            where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{line}"
            if name.split(".")[0] in ADAPTER_ONLY and layer != "adapter":
                violations.append(f"{where} ({layer}) imports {name}")
            elif name.startswith("edgecompress") and layer_of(name) not in MAY_IMPORT[layer]:
                violations.append(f"{where} ({layer}) imports {name} ({layer_of(name)})")
    return violations


def circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_is_in_a_layer():
    names = _module_names()
    # the walk reaches the subpackages, not only the top level
    for package in ("farm", "data", "runtime", "drift", "nas", "prune", "quantize", "cli"):
        assert any(m.startswith(f"edgecompress.{package}.") for m in names), package
    assert any(m.startswith("edgecompress.components.") for m in names)
    assert any(m.startswith("edgecompress.pipelines.") for m in names)
    for module in names:
        layer_of(module)


def test_no_upward_edge():
    """Each import goes to a layer MAY_IMPORT allows: the library never imports an adapter nor KFP,
    core never imports a technique or the farm, techniques reach the farm only through its client."""
    assert upward_edges() == []


def test_no_import_circle():
    assert circles(import_graph()) == []


# --- the checker itself is not vacuous -----------------------------------------------------------


def _fake_package(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    root = tmp_path / "edgecompress"
    for rel, text in {"__init__.py": "", **files}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return {"edgecompress": root}


@pytest.mark.parametrize(
    "files",
    [
        {"quantize.py": "def f():\n    from edgecompress.pipelines.local import run_pipeline\n"},
        {"quantize.py": "import kfp\n"},
        {"export.py": "from edgecompress.farm.runner import benchmark\n", "farm/__init__.py": "",
         "farm/runner.py": ""},
        {"runtime/__init__.py": "", "runtime/measure.py": "def f():\n    from edgecompress.edge import x\n",
         "edge.py": ""},
        {"farm/__init__.py": "", "farm/__main__.py": "from edgecompress.cli import main\n",
         "cli/__init__.py": ""},
        {"gate.py": "from edgecompress.farm import controller\n", "farm/__init__.py": "",
         "farm/controller.py": ""},
    ],
)  # fmt: skip
def test_the_layer_rule_catches_an_upward_edge(tmp_path, monkeypatch, files):
    monkeypatch.setattr(sys.modules[__name__], "SOURCES", _fake_package(tmp_path, files))
    assert len(upward_edges()) == 1


def test_the_circle_rule_catches_a_lazy_circle(tmp_path, monkeypatch):
    files = {
        "runtime/__init__.py": "",
        "runtime/measure.py": "def f():\n    from edgecompress.runtime import executor\n",
        "runtime/executor.py": "from edgecompress.runtime.measure import f\n",
    }
    monkeypatch.setattr(sys.modules[__name__], "SOURCES", _fake_package(tmp_path, files))
    assert circles(import_graph()) == [["edgecompress.runtime.executor", "edgecompress.runtime.measure"]]


def test_pyproject_ships_every_package_from_its_folder():
    """pyproject's package-dir maps the same roots as SOURCES, and its package list is every folder
    holding modules or package data (a new component folder must be listed to be shipped)."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = {name: ROOT / folder for name, folder in config["package-dir"].items() if name}
    assert {**dirs, "edgecompress": ROOT / config["package-dir"][""] / "edgecompress"} == SOURCES
    folders = set()
    for package, folder in SOURCES.items():
        for path in [folder, *sorted(p for p in folder.rglob("*") if p.is_dir())]:
            rel = path.relative_to(folder)
            if "__pycache__" not in rel.parts and any(f.is_file() for f in path.iterdir()):
                folders.add(".".join((package, *rel.parts)))
    assert sorted(config["packages"]) == sorted(folders)
    assert not any(p.is_symlink() for p in SOURCES["edgecompress"].rglob("*"))


def test_no_symlink_is_tracked_under_src():
    """Static tools (import graphs, type checkers, packagers) read src/ as committed: a symlinked
    package there hides its edges. pyproject's package-dir maps components/ and pipelines/ instead."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        skip_or_fail_in_ci("needs git and a git checkout")
    listing = subprocess.run(
        ["git", "ls-files", "-s", "--", "src"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert listing, "git lists no file under src/"
    assert [line.split("\t", 1)[1] for line in listing.splitlines() if line.startswith("120000 ")] == []


def test_the_package_imported_is_this_checkout():
    """The interpreter running the suite imports all three roots from this checkout (an install of
    it: `make setup`, or scripts/dev-venv.sh for a worktree). PYTHONPATH=src would take
    edgecompress from here and its components from wherever the environment's install points."""
    import importlib

    for name, folder in SOURCES.items():
        module = importlib.import_module(name)
        assert Path(module.__file__).parent == folder, (name, module.__file__)


def test_no_function_is_over_120_lines():
    """Issue 27's bound on the library and its adapters: a function (def to its last line) over 120
    lines is doing several things; split it."""
    import ast

    long = []
    for root in ("src", "components", "pipelines"):
        for path in sorted((ROOT / root).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > 120:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []
