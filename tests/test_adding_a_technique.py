"""README's "Adding a technique", executed: its code blocks are written to a temporary folder as they
stand in the README, and the new technique goes through its parameter check, the CLI helpers, the
component compiler, a pipeline compile and a real kfp.local run of its component (its step goes
through the one step runner). The number of files the README says a technique takes is checked
against the walkthrough and against every component folder in the repository."""

import argparse
import importlib
import json
import os
import re
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _readme_files() -> dict[str, str]:
    section = (REPO / "README.md").read_text().split("### Adding a technique", 1)[1]
    section = section.split("\n## ", 1)[0]
    blocks = re.findall(r"```(?:python|yaml)\n# file: (\S+)\n(.*?)```", section, re.S)
    return {name: body for name, body in blocks}


@pytest.fixture
def technique(tmp_path, monkeypatch):
    files = _readme_files()
    assert set(files) == {"zero_small.py", "zero_small_component.py", "metadata.yaml", "register.py"}
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    # kfp.local's SubprocessRunner starts the component in a child process: it must find the module.
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    )
    from edgecompress.pipelines import edge_compression

    monkeypatch.setattr(edge_compression, "CHAIN_STEPS", dict(edge_compression.CHAIN_STEPS))
    for name in ("zero_small", "zero_small_component", "register"):
        sys.modules.pop(name, None)
    importlib.import_module("register")
    yield tmp_path
    for name in ("zero_small", "zero_small_component", "register"):
        sys.modules.pop(name, None)


def test_the_new_technique_has_one_parameter_surface(technique):
    from edgecompress.components import surface_mismatches
    from edgecompress.params import add_options, from_args

    component_module = importlib.import_module("zero_small_component")
    assert surface_mismatches(component_module.zero_small, component_module.SURFACES) == []
    parser = argparse.ArgumentParser()
    config_cls = importlib.import_module("zero_small").ZeroSmallConfig
    add_options(parser, config_cls)
    assert from_args(config_cls, parser.parse_args(["--threshold", "0.2"])).threshold == 0.2


def test_the_new_technique_joins_the_pipeline(technique, tmp_path):
    import inspect

    from kfp import compiler

    from edgecompress.pipelines.edge_compression import build_pipeline

    pipeline = build_pipeline(["zero_small", "quantize"])
    params = inspect.signature(pipeline.pipeline_func).parameters
    assert params["zero_small_threshold"].default == 0.01
    compiler.Compiler().compile(pipeline, str(tmp_path / "p.yaml"))
    assert "zero-small" in (tmp_path / "p.yaml").read_text()


def test_the_new_component_runs_in_kfp_local(technique, trained_model, digits_artifact, tmp_path):
    from kfp import dsl, local

    zero_small = importlib.import_module("zero_small_component").zero_small
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))

    @dsl.pipeline(name="zero-small-test")
    def run_it(model_uri: str, dataset_uri: str):
        model = dsl.importer(artifact_uri=model_uri, artifact_class=dsl.Model, reimport=False)
        data = dsl.importer(artifact_uri=dataset_uri, artifact_class=dsl.Dataset, reimport=False)
        zero_small(model=model.output, dataset=data.output, threshold=0.05, track=False)

    run_it(model_uri=str(trained_model), dataset_uri=str(digits_artifact))
    info = json.loads(next((tmp_path / "root").rglob("zeroed_model/model.json")).read_text())
    assert info["technique"] == "zero-small" and info["zeroed_weights"] > 0
    assert info["export_parity"]["top1_agreement"] == 1.0 and info["dataset_sha256"]


def test_the_readme_counts_the_files_a_technique_takes_honestly():
    """4 written files (module, component.py, metadata.yaml, an empty __init__.py) + 1 chain line + 1
    package line in pyproject.toml, and 2 generated: the walkthrough shows each, every component folder
    here has exactly those, and pyproject ships each folder as a listed package."""
    section = (REPO / "README.md").read_text().split("### Adding a technique", 1)[1].split("\n## ", 1)[0]
    assert "**4 files you write and 2 lines you add**; the generator writes 2 more" in section
    rows = re.findall(r"^\| ([\d, +]+) \| (.*?) \| (.*?) \|$", section, re.M)
    written = [r for r in rows if r[2] == "you"]
    assert [r[0] for r in written] == ["1", "2", "3", "4", "+", "+"] and rows[-1][0] == "5, 6"
    shown = set(_readme_files()) - {"register.py"}  # register.py is the chain line
    assert len(shown) + 1 == 4  # + the empty __init__.py, said, not shown
    assert "An empty `components/zero_small/__init__.py`" in section
    generated = {"component.yaml", "README.md"}
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    for folder in sorted((REPO / "components").glob("*/component.py")):
        names = {p.name for p in folder.parent.iterdir() if p.name != "__pycache__"}
        assert names == {"__init__.py", "component.py", "metadata.yaml"} | generated, folder.parent.name
        assert f"edgecompress.components.{folder.parent.name}" in packages, folder.parent.name


def test_the_generator_compiles_the_new_component(technique, tmp_path):
    import yaml
    from kfp import compiler

    component_module = importlib.import_module("zero_small_component")
    out = tmp_path / "component.yaml"
    # what `edgecompress compile --components` (edgecompress.components.compile_component) does
    compiler.Compiler().compile(component_module.zero_small, str(out))
    spec = yaml.safe_load(out.read_text())
    params = spec["components"]["comp-zero-small"]["inputDefinitions"]["parameters"]
    assert params["threshold"]["defaultValue"] == 0.01 and "track" in params
    meta = yaml.safe_load((technique / "metadata.yaml").read_text())
    assert meta["name"] == "zero_small"
