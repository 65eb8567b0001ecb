"""Every MLflow run a standalone command opens is ended when the command returns (FINISHED, or
FAILED when it fails), and each command's parent run has a name of its own."""

from __future__ import annotations

import re

import numpy as np
import pytest

from edgecompress.cli import main
from edgecompress.data import Dataset, save_dataset
from edgecompress.lineage import TAG
from edgecompress.step import Lineage


def _runs(uri: str) -> tuple[list, list]:
    """(parent runs, task runs) of the default experiment."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("edgecompress")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get(f"{TAG}role") == "pipeline-run"]
    tasks = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, tasks


def test_standalone_commands_end_their_runs_with_names_of_their_own(tracking_uri, tmp_path):
    for i in range(3):
        assert main(["dataset", "digits", "--output", str(tmp_path / f"d{i}.npz")]) == 0
    parents, tasks = _runs(tracking_uri)
    assert len(parents) == 3 and len(tasks) == 3
    names = [p.info.run_name for p in parents]
    assert len(set(names)) == 3, names
    for parent in parents:
        assert re.fullmatch(r"standalone-[0-9a-f]{12}", parent.info.run_name)
        assert parent.info.run_name == parent.data.tags[f"{TAG}pipeline_run_id"]
        assert parent.info.status == "FINISHED" and parent.info.end_time
    assert {t.data.tags["mlflow.parentRunId"] for t in tasks} == {p.info.run_id for p in parents}
    assert {t.info.status for t in tasks} == {"FINISHED"}


def test_a_failing_standalone_command_ends_its_runs_failed(tracking_uri, tmp_path, trained_model, capsys):
    # the model takes 8x8 digits; a 28x28 dataset fails inside the evaluate task
    rng = np.random.default_rng(0)
    arrays = {}
    for s in ("train", "val", "test"):
        arrays[f"x_{s}"] = rng.integers(0, 255, (20, 1, 28, 28), dtype=np.uint8)
        arrays[f"y_{s}"] = np.arange(20) % 10
    save_dataset(Dataset("big", "test", arrays, [str(i) for i in range(10)]), tmp_path / "big.npz")
    code = main(
        ["evaluate", "--model", str(trained_model), "--dataset", str(tmp_path / "big.npz"),
         "--output", str(tmp_path / "r.json")]
    )  # fmt: skip
    assert code == 2 and "expects inputs of shape" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
    parents, tasks = _runs(tracking_uri)
    assert [p.info.status for p in parents] == ["FAILED"] and parents[0].info.end_time
    assert [t.info.status for t in tasks] == ["FAILED"]


def test_library_steps_end_the_parent_they_own_but_not_a_pipeline_s(tracking_uri):
    with pytest.raises(ValueError, match="inside the task"), Lineage().task("step"):
        raise ValueError("inside the task")
    with Lineage().task("step"):
        pass
    # a pipeline's parent run is shared by its tasks: one task ending must not end it
    pipeline = Lineage(pipeline_run_id="0123456789abcdef-kfp", pipeline_name="compress")
    with pipeline.task("train"):
        pass
    parents, _ = _runs(tracking_uri)
    status = {p.info.run_name: p.info.status for p in parents}
    assert sorted(status.values()) == ["FAILED", "FINISHED", "RUNNING"]
    assert status["compress-0123456789ab"] == "RUNNING"


def test_a_local_pipeline_run_ends_the_parent_its_tasks_created(tracking_uri, monkeypatch):
    """`edgecompress run`: kfp.local's job id is random, so the command tags the parent run its tasks
    create (through the environment) and ends exactly that one when the pipeline returns;
    tests/pipeline/test_image_folder_run.py checks the same through a whole `edgecompress run`."""
    from edgecompress.lineage import LOCAL_RUN_ENV, end_local_pipeline_runs

    other = Lineage(pipeline_run_id="11111111", pipeline_name="edge-compression")
    with other.task("train"):  # another pipeline's, still running
        pass
    monkeypatch.setenv(LOCAL_RUN_ENV, "a" * 32)
    mine = Lineage(pipeline_run_id="22222222", pipeline_name="edge-compression")
    for task in ("load-dataset", "train"):
        with mine.task(task):
            pass
    assert end_local_pipeline_runs("a" * 32, "FAILED") == 1
    parents, tasks = _runs(tracking_uri)
    status = {p.info.run_name: p.info.status for p in parents}
    assert status == {"edge-compression-11111111": "RUNNING", "edge-compression-22222222": "FAILED"}
    assert {t.info.status for t in tasks} == {"FINISHED"}
    assert end_local_pipeline_runs("a" * 32, "FINISHED") == 0  # an ended run is left as it ended
