"""README's "Adding a technique", executed: its code blocks are written to a temporary folder as they
stand in the README, and the new technique goes through its parameter check, the CLI helpers, a
pipeline compile and a real kfp.local run of its component."""

import argparse
import importlib
import json
import os
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _readme_files() -> dict[str, str]:
    section = (REPO / "README.md").read_text().split("### Adding a technique", 1)[1]
    blocks = re.findall(r"```python\n# file: (\S+)\n(.*?)```", section, re.S)
    return {name: body for name, body in blocks}


@pytest.fixture
def technique(tmp_path, monkeypatch):
    files = _readme_files()
    assert set(files) == {"zero_small.py", "zero_small_component.py", "register.py"}
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    # kfp.local's SubprocessRunner starts the component in a child process: it must find the module.
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(tmp_path), str(REPO / "src"), os.environ.get("PYTHONPATH", "")])
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
