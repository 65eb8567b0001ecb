"""Compiled artifacts are current, and every pipeline compiles to KFP IR."""

import os

import pytest
import yaml

from edgecompress.components import FOLDER, compile_component, component_names, render_readme
from edgecompress.settings import component_image


@pytest.mark.parametrize("name", component_names())
def test_committed_component_yaml_is_current(name, tmp_path, monkeypatch):
    monkeypatch.delenv("EDGECOMPRESS_IMAGE", raising=False)
    monkeypatch.delenv("EDGECOMPRESS_REGISTRY", raising=False)
    compile_component(name, tmp_path / "c.yaml")
    committed = (FOLDER / name / "component.yaml").read_text()
    assert (tmp_path / "c.yaml").read_text() == committed, f"run `edgecompress compile --components` ({name})"
    assert (FOLDER / name / "README.md").read_text() == render_readme(name), f"README of {name} is stale"
    meta = yaml.safe_load((FOLDER / name / "metadata.yaml").read_text())
    assert meta["name"] == name and meta["dependencies"]["kubeflow"][0]["name"] == "Pipelines"


@pytest.mark.parametrize("name", component_names())
def test_component_yaml_loads_for_other_users(name):
    from kfp import components

    loaded = components.load_component_from_file(str(FOLDER / name / "component.yaml"))
    assert loaded.name == name.replace("_", "-")
    spec = yaml.safe_load((FOLDER / name / "component.yaml").read_text())
    images = [e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()]
    assert images == [component_image()]


def test_image_is_configurable_in_one_place(monkeypatch):
    monkeypatch.setenv("EDGECOMPRESS_REGISTRY", "registry.example:5000/team")
    monkeypatch.delenv("EDGECOMPRESS_IMAGE", raising=False)
    assert component_image().startswith("registry.example:5000/team/components:")
    monkeypatch.setenv("EDGECOMPRESS_IMAGE", "mine:1")
    assert component_image() == "mine:1"


def test_pipeline_compiles_with_every_task(tmp_path):
    from tests.conftest import run_cli

    out = tmp_path / "p.yaml"
    proc = run_cli("compile", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    spec = next(yaml.safe_load_all(out.read_text()))  # the pipeline; its Kubernetes platform spec follows
    # every task of every DAG (the pipeline body runs under the exit handler's group)
    tasks = {
        t for c in [spec["root"], *spec["components"].values()] for t in c.get("dag", {}).get("tasks", {})
    }
    assert {
        "load-dataset",
        "train",
        "quantize",
        "evaluate",
        "evaluate-2",
        "edge-benchmark",
        "accuracy-gate",
    } <= tasks
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {
        "dataset",
        "model",
        "epochs",
        "device_classes",
        "max_accuracy_drop",
        "quantize_calibration_samples",
    } <= set(params)
    assert (
        "MLFLOW_TRACKING_TOKEN" not in out.read_text()
        and os.environ.get("AWS_SECRET_ACCESS_KEY", "§") not in out.read_text()
    )


def test_unknown_chain_step_is_refused(tmp_path):
    from tests.conftest import run_cli

    proc = run_cli("compile", "--chain", "quantize,teleport", "--output", str(tmp_path / "x.yaml"))
    assert proc.returncode == 2 and "teleport" in proc.stderr
    assert not (tmp_path / "x.yaml").exists()
