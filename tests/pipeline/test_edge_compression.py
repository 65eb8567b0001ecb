"""The whole edge-compression pipeline on digits, through the CLI, with lineage queried back."""

import json
import os

import mlflow
import pytest

from tests.conftest import FAST_RUN_ARGS, assert_gate_follows_its_rule, run_cli


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{out / 'mlflow.db'}"}
    proc = run_cli(
        "run",
        "--epochs",
        "4",
        "--output-dir",
        str(out),
        "--registered-model-name",
        "digits-test",
        "--param",
        "bench_min_runs=100",
        "--param",
        "bench_min_duration_s=0.3",
        env=env,
        timeout=1200,
    )
    return out, env, proc


def test_run_prints_the_summary(pipeline_run):
    out, _, proc = pipeline_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    for needle in (
        "parent vs child",
        "test accuracy",
        "gzip bytes",
        "MACs",
        "rpi4-emulated (emulated)",
        "jetson-orin-nano-emulated (emulated)",
        "MLflow store",
        "mlflow ui --backend-store-uri",
    ):
        assert needle in text, needle
    gate = json.loads(next(out.glob("kfp/*/accuracy-gate/results")).read_text())
    assert_gate_follows_its_rule(gate)  # whichever verdict, it is the rule applied to the recorded numbers
    assert gate["child"]["onnx_bytes"] < gate["parent"]["onnx_bytes"]


def test_lineage_parent_child_benchmarks_and_registry(pipeline_run):
    out, env, proc = pipeline_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    exp = mlflow.get_experiment_by_name("edgecompress")
    runs = mlflow.search_runs([exp.experiment_id], output_format="list")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    tasks = {
        r.data.tags["edgecompress.task"]
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id
    }
    assert {"load-dataset", "train", "quantize", "evaluate", "edge-benchmark", "accuracy-gate"} <= tasks
    gate = json.loads(next(out.glob("kfp/*/accuracy-gate/results")).read_text())
    parent = mlflow.get_logged_model(gate["parent"]["model_id"])
    child = mlflow.get_logged_model(gate["child"]["model_id"])
    assert child.tags["edgecompress.parent_model_id"] == parent.model_id
    assert (
        child.tags["edgecompress.technique"] == "static-int8"
        and parent.tags["edgecompress.technique"] == "train"
    )
    assert parent.tags["edgecompress.dataset_digest"] == child.tags["edgecompress.dataset_digest"]
    for model in (parent, child):
        metrics = {m.key for m in model.metrics}
        for cls in ("rpi4-emulated", "jetson-orin-nano-emulated"):
            assert f"bench.{cls}.p50_ms" in metrics
            assert model.tags[f"edgecompress.bench.{cls}.emulated"] == "true"
        assert "test_accuracy" in metrics
    assert child.tags["edgecompress.gate"] == gate["verdict"]
    client = mlflow.MlflowClient()
    if gate["verdict"] == "accepted":
        for cls in gate["accepted_device_classes"]:
            version = client.get_model_version_by_alias("digits-test", cls)
            assert version.source.endswith(child.model_id) or version.model_id == child.model_id
    else:
        assert client.search_registered_models(filter_string="name='digits-test'") == []
    train_run = next(r for r in runs if r.data.tags.get("edgecompress.task") == "train")
    assert any(i.dataset.digest for i in train_run.inputs.dataset_inputs)
    os.environ.pop("MLFLOW_TRACKING_URI", None)


def test_strict_gate_rejects_and_the_run_still_completes(tmp_path):
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    proc = run_cli(
        "run",
        "--epochs",
        "1",
        "--output-dir",
        str(tmp_path),
        "--registered-model-name",
        "strict",
        "--param",
        "min_speedup=1000",
        *FAST_RUN_ARGS,
        env=env,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "gate: REJECTED" in proc.stdout and "child model not registered" in proc.stdout
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    assert mlflow.MlflowClient().search_registered_models(filter_string="name='strict'") == []
