"""The drift_check component (kfp.local) and the retrain_on_drift pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml


def test_retrain_on_drift_compiles(tmp_path):
    from kfp import compiler

    from edgecompress.pipelines.retrain_on_drift import build_pipeline

    out = tmp_path / "retrain_on_drift.yaml"
    compiler.Compiler().compile(build_pipeline(["quantize"]), str(out))
    spec = yaml.safe_load(out.read_text())
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {"drift-check", "condition-1"}
    branch = spec["components"]["comp-condition-1"]["dag"]["tasks"]
    assert {"edge-compression", "promote", "drift-retrain-field"} <= set(branch)
    assert "drift-check" in tasks["condition-1"]["triggerPolicy"]["condition"]


def _local(tmp_path: Path) -> None:
    from kfp import local

    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "kfp"),
        raise_on_error=True,
    )


def test_drift_check_component_locally(store, digits_batches, tmp_path):
    from edgecompress.components.drift_check.component import drift_check

    _local(tmp_path)
    task = drift_check(
        batch=str(digits_batches["clean"]), model="models:/digits-drift@rpi4-emulated", permutations=50
    )
    assert task.outputs["Output"] is False
    result = json.loads(Path(task.outputs["result"].path).read_text())
    assert not result["drifted"] and result["retrain"]["source"] == ""
    assert result["retrain"]["registered_model_name"] == "digits-drift"
    assert json.loads(result["retrain"]["model_spec"])["family"] == "cnn"
    assert task.outputs["result"].metadata["kind"] == "image"


@pytest.mark.slow
def test_retrain_on_drift_pipeline_retrains_and_promotes(store, digits_batches, tmp_path):
    import mlflow

    from edgecompress.pipelines.retrain_on_drift import retrain_on_drift

    _local(tmp_path)
    retrain_on_drift(
        batch=str(digits_batches["noisy"]),
        model="models:/digits-drift/1",
        epochs=1,
        permutations=50,
        device_classes=["rpi4-emulated"],
        bench_min_runs=20,
        bench_min_duration_s=0.05,
        max_accuracy_drop=0.5,
        min_speedup=0.0,
        calibration_samples=64,
    )
    client = mlflow.MlflowClient()
    promoted = client.get_model_version_by_alias("digits-drift", "rpi4-emulated-production")
    assert int(promoted.version) >= 2  # a new version of the same registered model
    from edgecompress import audit

    lin = audit.lineage_of("models:/digits-drift@rpi4-emulated-production")
    assert [s.technique for s in lin.steps] == ["train", "static-int8"]
    assert (
        lin.dataset["digest"] != audit.lineage_of("models:/digits-drift/1").dataset["digest"]
    )  # reference + new data
