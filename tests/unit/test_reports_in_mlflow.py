"""The reports a tracked task writes are artifacts of its MLflow run (issue 24: HTML/Markdown reports
were written next to the artifacts and never reached MLflow)."""

from pathlib import Path

import mlflow

from edgecompress.evaluate import evaluate_step
from edgecompress.step import Lineage


def test_a_tracked_task_logs_its_report(trained_model, digits_artifact, tmp_path, tracking_uri):
    evaluate_step(trained_model, digits_artifact, tmp_path / "eval.json", report_path=tmp_path / "report.html",
                  lineage_ctx=Lineage(experiment="reports-test"))  # fmt: skip
    exp = mlflow.get_experiment_by_name("reports-test")
    task = [r for r in mlflow.search_runs([exp.experiment_id], output_format="list")
            if r.data.tags.get("edgecompress.task") == "evaluate"]  # fmt: skip
    assert len(task) == 1
    logged = [a.path for a in mlflow.MlflowClient().list_artifacts(task[0].info.run_id, "reports")]
    assert logged == ["reports/report.html"]
    local = mlflow.artifacts.download_artifacts(
        run_id=task[0].info.run_id, artifact_path="reports/report.html"
    )
    assert Path(local).read_text() == (tmp_path / "report.html").read_text()


def test_an_untracked_task_writes_its_report_only(trained_model, digits_artifact, tmp_path):
    evaluate_step(trained_model, digits_artifact, tmp_path / "eval.json", report_path=tmp_path / "report.html",
                  lineage_ctx=Lineage(enabled=False))  # fmt: skip
    assert "<img" in (tmp_path / "report.html").read_text()
