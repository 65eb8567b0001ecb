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
def test_drift_retrain_runs_the_pipeline_and_promotes(store, digits_batches, run_cli, tmp_path):
    """`edgecompress drift --retrain`: drift → retrain_on_drift through kfp.local → a new version of the
    registered model, trained on reference + new data, promoted to rpi4-emulated-production."""
    import mlflow

    from edgecompress import audit

    res = run_cli(
        "drift", str(digits_batches["noisy"]), "--model", "models:/digits-drift/1", "--retrain",
        "--epochs", "1", "--permutations", "50", "--device-classes", "rpi4-emulated",
        "--param", "bench_min_runs=20", "--param", "bench_min_duration_s=0.05", "--param", "max_accuracy_drop=0.5",
        "--param", "min_speedup=0.0", "--param", "quantize_calibration_samples=64",
        "--output-dir", str(tmp_path / "drift"), "--run-dir", str(tmp_path / "runs"), timeout=1200,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "drift: DRIFTED" in res.stdout and "promoted: rpi4-emulated-production" in res.stdout
    assert json.loads((tmp_path / "drift" / "result.json").read_text())["drifted"]
    promoted = mlflow.MlflowClient().get_model_version_by_alias("digits-drift", "rpi4-emulated-production")
    assert int(promoted.version) >= 2  # a new version of the same registered model
    lin = audit.lineage_of("models:/digits-drift@rpi4-emulated-production")
    assert [s.technique for s in lin.steps] == ["train", "static-int8"]
    first = audit.lineage_of("models:/digits-drift/1").dataset
    assert (
        lin.dataset["digest"] != first["digest"] and lin.dataset["name"] == "digits"
    )  # reference + new data
