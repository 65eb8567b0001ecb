"""Every issue-2 component run through kfp.local's SubprocessRunner in this environment."""

import json
from pathlib import Path
from typing import NamedTuple

import pytest
from kfp import dsl, local

from edgecompress.components.accuracy_gate.component import accuracy_gate
from edgecompress.components.edge_benchmark.component import edge_benchmark
from edgecompress.components.evaluate.component import evaluate
from edgecompress.components.load_dataset.component import load_dataset
from edgecompress.components.quantize.component import quantize
from edgecompress.components.train.component import train
from tests.conftest import tracking_store

LINEAGE = {"pipeline_run_id": "component-tests", "experiment": "component-tests"}  # for single-task runs


@pytest.fixture(scope="module")
def kfp_local(tmp_path_factory):
    root = tmp_path_factory.mktemp("kfp")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    return root


@pytest.fixture(scope="module")
def module_tracking(tmp_path_factory):
    with tracking_store(f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}") as uri:
        yield uri


class _Outputs(NamedTuple):
    dataset: dsl.Dataset
    model: dsl.Model
    quantized: dsl.Model
    eval_results: dsl.Artifact
    eval_metrics: dsl.Metrics
    eval_classification: dsl.ClassificationMetrics
    eval_report: dsl.HTML
    bench_results: dsl.Artifact
    bench_metrics: dsl.Metrics
    gate_results: dsl.Artifact


@dsl.pipeline
def component_chain() -> _Outputs:
    """kfp.local passes artifacts between components only inside a pipeline."""
    lineage = {"pipeline_run_id": dsl.PIPELINE_JOB_ID_PLACEHOLDER, "experiment": "component-tests"}
    data = load_dataset(source="digits", **lineage)
    spec = '{"family": "cnn", "kwargs": {"widths": [16, 32], "depths": [1, 1]}}'
    trained = train(
        dataset=data.outputs["dataset"], model_spec=spec, epochs=6, batch_size=64, lr=1e-2, **lineage
    )
    quant = quantize(
        model=trained.outputs["model"], dataset=data.outputs["dataset"], calibration_samples=64, **lineage
    )
    evals, benches = [], []
    for model in (trained.outputs["model"], quant.outputs["quantized_model"]):
        evals.append(evaluate(model=model, dataset=data.outputs["dataset"], **lineage))
        benches.append(
            edge_benchmark(
                model=model,
                device_classes=["rpi4-emulated"],
                bench_min_runs=50,
                bench_min_duration_s=0.2,
                **lineage,
            )
        )
    gate = accuracy_gate(
        parent_model=trained.outputs["model"], child_model=quant.outputs["quantized_model"],
        dataset=data.outputs["dataset"], parent_evaluation=evals[0].outputs["results"],
        child_evaluation=evals[1].outputs["results"], max_accuracy_drop=0.05, min_speedup=1000.0,
        registered_model_name="component-test", device_classes=["rpi4-emulated"], latency_rounds=8,
        bench_min_runs=50, bench_min_duration_s=0.2, **lineage,
    )  # fmt: skip
    gate.after(*benches)
    return _Outputs(
        data.outputs["dataset"],
        trained.outputs["model"],
        quant.outputs["quantized_model"],
        evals[0].outputs["results"],
        evals[0].outputs["metrics"],
        evals[0].outputs["classification"],
        evals[0].outputs["report"],
        benches[1].outputs["results"],
        benches[1].outputs["metrics"],
        gate.outputs["results"],
    )


@pytest.fixture(scope="module")
def chain(kfp_local, module_tracking):
    """load_dataset → train → quantize → evaluate ×2 → edge_benchmark ×2 → gate."""
    return component_chain().outputs


def test_dataset_and_model_artifacts_carry_audit_metadata(chain):
    ds = chain["dataset"]
    assert ds.metadata["name"] == "digits" and len(ds.metadata["sha256"]) == 64
    model = chain["model"]
    assert model.metadata["dataset_sha256"] == ds.metadata["sha256"]
    assert model.metadata["mlflow_model_id"].startswith("m-")
    q = chain["quantized"]
    assert q.metadata["parent_model_id"] == model.metadata["mlflow_model_id"]
    assert q.metadata["technique"] == "static-int8" and q.metadata["top1_agreement"] > 0.9
    assert (Path(q.path) / "model.onnx").exists()


def test_evaluate_outputs(chain):
    results = json.loads(Path(chain["eval_results"].path).read_text())
    assert results["accuracy"] > 0.85 and results["samples"] == 269
    assert chain["eval_metrics"].metadata["accuracy"] == pytest.approx(results["accuracy"])
    assert "<img" in Path(chain["eval_report"].path).read_text()
    cm = chain["eval_classification"].metadata["confusionMatrix"]
    assert len(cm["rows"]) == 10


def test_edge_benchmark_outputs_are_labelled_emulated(chain):
    results = json.loads(Path(chain["bench_results"].path).read_text())["results"]
    assert set(results) == {"rpi4-emulated"} and results["rpi4-emulated"]["emulated"] is True
    assert chain["bench_metrics"].metadata["rpi4-emulated.emulated"] is True
    assert results["rpi4-emulated"]["runs"] >= 50


def test_gate_rejects_a_child_that_is_not_fast_enough(chain):
    result = json.loads(Path(chain["gate_results"].path).read_text())
    assert result["verdict"] == "rejected"
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
