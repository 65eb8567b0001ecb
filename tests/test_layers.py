"""The layers point down: cli / components / pipelines -> the library (step functions -> techniques ->
core). The library never imports an adapter, nor KFP; core never imports a technique."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "edgecompress"
ADAPTERS = ("edgecompress.cli", "edgecompress.components", "edgecompress.pipelines")
# The core: data in and out, models, artifacts, tracking, measurement (the device farm and the one
# latency path, the device profiles and the decision statistics), parameter surfaces, and the step
# mechanism built on them.
CORE = {
    "errors", "io", "settings", "progress", "reports", "storage", "data", "zoo", "export", "lineage",
    "step", "platform", "params", "measure", "farm", "edge", "stats", "profiles",
}  # fmt: skip


def _library_modules() -> list[Path]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in ("cli", "components", "pipelines"):
            continue
        out.append(path)
    return out


def _imports(path: Path) -> list[tuple[int, str]]:
    """Absolute module names a file imports (relative imports resolved), with line numbers."""
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    package = list(rel.parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found += [(node.lineno, base)]
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def test_the_library_never_imports_an_adapter_or_kfp():
    violations = []
    for path in _library_modules():
        if path.name == "__main__.py":
            continue  # `python -m edgecompress.farm` is an entry point: an adapter by nature
        for line, name in _imports(path):
            if name.startswith(ADAPTERS) or name == "kfp" or name.startswith("kfp."):
                violations.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
    assert violations == []


def test_core_modules_never_import_a_technique():
    violations = []
    for path in _library_modules():
        module = _module_name(path).split(".")
        if len(module) != 2 or module[1] not in CORE:
            continue
        for line, name in _imports(path):
            parts = name.split(".")
            if (
                parts[0] == "edgecompress"
                and len(parts) > 1
                and parts[1] not in CORE
                and parts[1] != "__version__"
            ):
                violations.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
    assert violations == []


@pytest.mark.parametrize("forbidden", ["from edgecompress.pipelines.local import run_pipeline", "import kfp"])
def test_the_rule_catches_a_violation(tmp_path, forbidden):
    """The checker itself fails on a library module that imports upward (it is not vacuous)."""
    fake = tmp_path / "edgecompress"
    fake.mkdir()
    (fake / "quantize.py").write_text(f"def f():\n    {forbidden}\n")
    global PACKAGE
    saved, PACKAGE = PACKAGE, fake
    try:
        with pytest.raises(AssertionError):
            test_the_library_never_imports_an_adapter_or_kfp()
    finally:
        PACKAGE = saved
