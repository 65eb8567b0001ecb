"""What caching and the exit handler mean for lineage, with the real steps on a real MLflow store:
a task finds its pipeline run from its environment (no per-run input); a model made from a parent
of an earlier run (a KFP cache hit: that task did not run) records that run, and the new pipeline run
names the model it reused; the exit task ends the pipeline's parent run FINISHED or FAILED."""

from __future__ import annotations

from types import SimpleNamespace

import mlflow
import pytest

from edgecompress import lineage
from edgecompress.lineage import TAG
from tests.conftest import SMALL_CNN, use_tracking_store


def parent_run(run_id: str):
    (run,) = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.`{TAG}pipeline_run_id` = '{run_id}' and tags.`{TAG}role` = 'pipeline-run'",
        output_format="list",
    )
    return run


@pytest.fixture
def two_runs(tmp_path, digits_artifact, monkeypatch):
    from edgecompress.edge import Measurement
    from edgecompress.quantize import StaticQuantConfig, quantize_step
    from edgecompress.step import Lineage
    from edgecompress.train import TrainConfig, train_step

    use_tracking_store(f"sqlite:///{tmp_path / 'mlflow.db'}", monkeypatch)
    monkeypatch.setenv(lineage.PIPELINE_RUN_ENV, "kfp-run-a")  # as the pod label gives it on a cluster
    first = Lineage(pipeline_name="edge-compression")
    assert first.pipeline_run_id == "kfp-run-a" and not first._standalone
    trained = train_step(
        digits_artifact, SMALL_CNN, tmp_path / "parent", TrainConfig(epochs=1), first, progress=False
    ).info
    # run b: train was a cache hit (it did not run); quantize runs on run a's model
    monkeypatch.setenv(lineage.PIPELINE_RUN_ENV, "kfp-run-b")
    second = Lineage(pipeline_name="edge-compression")
    child = quantize_step(
        tmp_path / "parent", digits_artifact, tmp_path / "child", StaticQuantConfig(calibration_samples=64), second,
        Measurement(bench_min_runs=20, bench_min_duration_s=0.05),
    ).info  # fmt: skip
    return trained["mlflow_model_id"], child["mlflow_model_id"]


def test_a_reused_model_is_named_by_the_run_that_reused_it(two_runs):
    parent_id, child_id = two_runs
    child = mlflow.get_logged_model(child_id)
    assert child.tags[f"{TAG}parent_model_id"] == parent_id
    assert child.tags[f"{TAG}pipeline_run_id"] == "kfp-run-b"
    assert child.tags[f"{TAG}parent_pipeline_run_id"] == "kfp-run-a"
    assert parent_run("kfp-run-b").data.tags[f"{TAG}reused_model.{parent_id}"] == "kfp-run-a"
    assert not any(k.startswith(f"{TAG}reused_model.") for k in parent_run("kfp-run-a").data.tags)
    assert f"{TAG}parent_pipeline_run_id" not in mlflow.get_logged_model(parent_id).tags


@pytest.mark.parametrize(("state", "status"), [("SUCCEEDED", "FINISHED"), ("FAILED", "FAILED")])
def test_exit_task_ends_the_parent_run(two_runs, monkeypatch, state, status):
    from edgecompress.pipelines.platform import end_pipeline_run

    assert parent_run("kfp-run-b").info.status == "RUNNING"  # tasks attach to it, never end it
    monkeypatch.setenv(lineage.PIPELINE_RUN_ENV, "kfp-run-b")
    final = SimpleNamespace(state=state, pipeline_job_resource_name="runs/kfp-run-b")
    end_pipeline_run.python_func(status=final, experiment="edgecompress", track=True)
    assert parent_run("kfp-run-b").info.status == status
    assert parent_run("kfp-run-a").info.status == "RUNNING"  # another run's parent is left alone
