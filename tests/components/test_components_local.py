"""Every issue-2 component run through kfp.local's SubprocessRunner in this environment."""

import json
from pathlib import Path

import pytest
from kfp import dsl, local

from edgecompress.components.accuracy_gate.component import accuracy_gate
from edgecompress.components.edge_benchmark.component import edge_benchmark
from edgecompress.components.evaluate.component import evaluate
from edgecompress.components.load_dataset.component import load_dataset
from edgecompress.components.quantize.component import quantize
from edgecompress.components.train.component import train

LINEAGE = {"pipeline_run_id": "component-tests", "experiment": "component-tests"}


@pytest.fixture(scope="module")
def kfp_local(tmp_path_factory):
    root = tmp_path_factory.mktemp("kfp")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    return root


@pytest.fixture(scope="module")
def module_tracking(tmp_path_factory):
    import os

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield uri
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI")
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old


@pytest.fixture(scope="module")
def chain(kfp_local, module_tracking):
    """load_dataset → train → quantize → evaluate ×2 → edge_benchmark ×2 → gate, task by task."""
    data = load_dataset(source="digits", **LINEAGE)
    spec = json.dumps({"family": "cnn", "kwargs": {"widths": [16, 32], "depths": [1, 1]}})
    trained = train(
        dataset=data.outputs["dataset"], model_spec=spec, epochs=6, batch_size=64, lr=1e-2, **LINEAGE
    )
    quant = quantize(
        model=trained.outputs["model"], dataset=data.outputs["dataset"], calibration_samples=64, **LINEAGE
    )
    out = {"data": data, "train": trained, "quantize": quant}
    for role, model in (("parent", trained.outputs["model"]), ("child", quant.outputs["quantized_model"])):
        out[f"eval_{role}"] = evaluate(model=model, dataset=data.outputs["dataset"], **LINEAGE)
        out[f"bench_{role}"] = edge_benchmark(
            model=model, device_classes=["rpi4-emulated"], min_runs=50, min_duration_s=0.2, **LINEAGE
        )
    return out


def test_dataset_and_model_artifacts_carry_audit_metadata(chain):
    ds = chain["data"].outputs["dataset"]
    assert ds.metadata["name"] == "digits" and len(ds.metadata["sha256"]) == 64
    model = chain["train"].outputs["model"]
    assert model.metadata["dataset_sha256"] == ds.metadata["sha256"]
    assert model.metadata["mlflow_model_id"].startswith("m-")
    q = chain["quantize"].outputs["quantized_model"]
    assert q.metadata["parent_model_id"] == model.metadata["mlflow_model_id"]
    assert q.metadata["technique"] == "static-int8" and q.metadata["top1_agreement"] > 0.9
    assert (Path(q.path) / "model.onnx").exists()


def test_evaluate_outputs(chain):
    ev = chain["eval_parent"]
    results = json.loads(Path(ev.outputs["results"].path).read_text())
    assert results["accuracy"] > 0.85 and results["samples"] == 269
    assert ev.outputs["metrics"].metadata["accuracy"] == pytest.approx(results["accuracy"])
    assert "<img" in Path(ev.outputs["report"].path).read_text()
    cm = ev.outputs["classification"].metadata["confusionMatrix"]
    assert len(cm["rows"]) == 10


def test_edge_benchmark_outputs_are_labelled_emulated(chain):
    bench = chain["bench_child"]
    results = json.loads(Path(bench.outputs["results"].path).read_text())["results"]
    assert set(results) == {"rpi4-emulated"} and results["rpi4-emulated"]["emulated"] is True
    assert bench.outputs["metrics"].metadata["rpi4-emulated.emulated"] is True
    assert results["rpi4-emulated"]["runs"] >= 50


def test_gate_rejects_a_child_that_is_not_fast_enough(chain):
    gate = accuracy_gate(
        parent_evaluation=chain["eval_parent"].outputs["results"], child_evaluation=chain["eval_child"].outputs["results"],
        parent_benchmark=chain["bench_parent"].outputs["results"], child_benchmark=chain["bench_child"].outputs["results"],
        max_accuracy_drop=0.05, min_speedup=1000.0, registered_model_name="component-test", **LINEAGE,
    )  # fmt: skip
    assert gate.outputs["Output"] == "rejected"
    result = json.loads(Path(gate.outputs["results"].path).read_text())
    assert result["registered"] is None and "not faster" in result["reasons"][0]
    import mlflow

    tags = mlflow.get_logged_model(result["child"]["model_id"]).tags
    assert tags["edgecompress.gate"] == "rejected"


def test_failing_component_fails_the_task_and_writes_nothing(kfp_local, module_tracking):
    @dsl.pipeline
    def bad():
        load_dataset(source="/nonexistent/data.npz", **LINEAGE)

    with pytest.raises(RuntimeError, match="FAILURE"):
        bad()
    written = list(Path(kfp_local).glob("bad-*/load-dataset/dataset"))
    assert written == []
