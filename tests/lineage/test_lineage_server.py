"""The pipeline against MLflow as deployed: `mlflow server` with a SQL store and S3 artifacts (moto)."""

from __future__ import annotations

import json

import pytest

from edgecompress import audit

SMALL = json.dumps({"family": "cnn", "kwargs": {"widths": [8, 16], "depths": [1, 1]}})


def lineage_shape(lin: audit.Lineage) -> dict:
    """What must match between stores: the chain, its keys, benchmarks, gate and registry aliases."""
    return {
        "dataset": (lin.dataset["name"], lin.dataset["digest"], lin.dataset["source"]),
        "steps": [
            (
                s.technique,
                sorted(s.params),
                sorted(s.metrics),
                sorted(s.benchmarks),
                {c: b["emulated"] for c, b in s.benchmarks.items()},
                s.gate,
                # the pipeline's own aliases; `promote` in other tests adds *-production to the shared store
                [(r["name"], [a for a in r["aliases"] if not a.endswith("-production")]) for r in s.registry],
            )
            for s in lin.steps
        ],
        "broken": lin.broken_at,
    }


@pytest.mark.slow
def test_pipeline_against_server_has_the_embedded_lineage_and_s3_artifacts(
    server_env, embedded_store, run_cli, tmp_path
):
    res = run_cli(
        "run",
        "--epochs",
        "2",
        "--model",
        SMALL,
        "--device-classes",
        "rpi4-emulated",
        "--max-accuracy-drop",
        "0.5",
        "--registered-model-name",
        "digits-small",
        "--param",
        "bench_min_runs=20",
        "--param",
        "bench_min_duration_s=0.05",
        "--param",
        "min_speedup=0.0",
        "--param",
        "quantize_calibration_samples=64",
        "--output-dir",
        str(tmp_path),
        env={"MLFLOW_TRACKING_URI": server_env.uri},
        timeout=900,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"MLflow store:   {server_env.uri}" in res.stdout
    served = audit.lineage_of("models:/digits-small@rpi4-emulated")
    import mlflow

    mlflow.set_tracking_uri(embedded_store["uri"])
    embedded = audit.lineage_of(
        "models:/digits-small@rpi4-emulated", mlflow.MlflowClient(embedded_store["uri"])
    )
    mlflow.set_tracking_uri(server_env.uri)
    assert lineage_shape(served) == lineage_shape(embedded)
    # every model and the training data landed in the bucket, through the server's artifact proxy
    keys = server_env.s3_keys()
    for step in served.steps:
        assert any(step.model_id in k and k.endswith("model.onnx") for k in keys), (step.model_id, keys)
    assert any("/datasets/digits-" in k and k.endswith(".npz") for k in keys), keys
    assert served.dataset["stored_at"].startswith("runs:/")
    # the audit CLI reads the same server
    out = run_cli("lineage", "models:/digits-small/1", env={"MLFLOW_TRACKING_URI": server_env.uri})
    assert out.returncode == 0 and "static-int8" in out.stdout and "registry: digits-small v1" in out.stdout


def _train_one_epoch(dataset, output) -> list[str]:
    return ["train", "--dataset", str(dataset), "--model", SMALL, "--epochs", "1", "--output", str(output)]


def test_server_failing_mid_task_keeps_the_tasks_artifacts(failing_proxy, digits_artifact, run_cli, tmp_path):
    out = tmp_path / "model"
    res = run_cli(
        *_train_one_epoch(digits_artifact, out),
        env={
            "MLFLOW_TRACKING_URI": failing_proxy,
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        },
        timeout=300,
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert "error: MLflow refused to log model" in res.stderr and "503" in res.stderr
    assert (out / "model.onnx").exists() and json.loads((out / "model.json").read_text())[
        "technique"
    ] == "train"


def test_server_down_fails_fast_and_writes_nothing(dead_uri, digits_artifact, run_cli, tmp_path):
    out = tmp_path / "model"
    res = run_cli(
        *_train_one_epoch(digits_artifact, out),
        env={"MLFLOW_TRACKING_URI": dead_uri},
        timeout=120,
    )
    assert res.returncode == 2
    assert f"error: MLflow tracking server {dead_uri} is unreachable after 3 attempts" in res.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []
