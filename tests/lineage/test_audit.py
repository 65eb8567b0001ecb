"""`edgecompress lineage / audit / promote` on an embedded (SQLite) store built by the real steps."""

from __future__ import annotations

import json

import mlflow
import pytest

from edgecompress import audit, lineage
from edgecompress.errors import TrackingError
from tests.conftest import log_model_without_lineage


def test_lineage_walks_from_registry_alias_to_training_data(embedded, digits_artifact):
    from edgecompress.data import load_dataset

    lin = audit.lineage_of("models:/digits-small@rpi4-emulated")
    assert [s.technique for s in lin.steps] == ["train", "static-int8"]
    assert lin.dataset["digest"] == load_dataset(digits_artifact).digest
    assert lin.dataset["name"] == "digits"
    assert lin.dataset["stored_at"].startswith("runs:/")
    train, quant = lin.steps
    assert quant.parent_model_id == train.model_id
    assert "quantize.calibration_method" in quant.params and "train.epochs" in train.params
    assert "test_accuracy" in train.metrics and "vs_parent.top1_agreement" in quant.metrics
    for step in lin.steps:
        bench = step.benchmarks["rpi4-emulated"]
        assert bench["emulated"] is True and bench["p50_ms"] > 0 and bench["p90_ms"] >= bench["p50_ms"]
    assert quant.gate == "accepted"
    assert quant.registry == [{"name": "digits-small", "version": 1, "aliases": ["rpi4-emulated"]}]
    assert lin.broken_at is None
    # the same lineage from every kind of reference
    for ref in ("models:/digits-small/1", quant.model_id, f"models:/{quant.model_id}"):
        assert [s.model_id for s in audit.lineage_of(ref).steps] == [train.model_id, quant.model_id]


def test_lineage_cli_formats(embedded, run_cli):

    text = run_cli("lineage", "models:/digits-small@rpi4-emulated")
    assert text.returncode == 0, text.stderr
    assert "dataset  digits  sha256" in text.stdout and "static-int8" in text.stdout
    assert "bench rpi4-emulated (emulated): p50" in text.stdout and "registry: digits-small v1" in text.stdout
    js = json.loads(run_cli("lineage", "models:/digits-small/1", "--format", "json").stdout)
    assert [s["technique"] for s in js["steps"]] == ["train", "static-int8"]
    mer = run_cli("lineage", "models:/digits-small/1", "--format", "mermaid").stdout
    assert mer.startswith("flowchart TD") and "dataset -->" in mer and "digits-small v1 @rpi4-emulated" in mer
    bad = run_cli("lineage", "models:/digits-small@nope")
    assert bad.returncode == 2 and "has no alias 'nope'" in bad.stderr
    bad = run_cli("lineage", "not-a-model")
    assert bad.returncode == 2 and "expected models:/NAME@ALIAS" in bad.stderr


def test_audit_queries(embedded):
    lin = audit.lineage_of("models:/digits-small/1")
    derived = audit.models_from_dataset(lin.dataset["digest"][:16])
    assert {r["model_id"] for r in derived} == {s.model_id for s in lin.steps}
    assert audit.models_from_dataset("0" * 16) == []
    assert audit.unbenchmarked_versions("rpi4-emulated") == []
    missing = audit.unbenchmarked_versions("jetson-orin-nano-emulated")
    assert [(r["name"], r["version"]) for r in missing] == [("digits-small", 1)]
    assert "no benchmark on jetson-orin-nano-emulated" in missing[0]["reason"]


def test_broken_chain_is_found(embedded, digits_artifact, tmp_path):
    """A model whose parent was deleted: the audit lists it and `lineage` marks the break."""
    import shutil

    from edgecompress.quantize import StaticQuantConfig, quantize_step
    from edgecompress.step import Lineage

    ctx = Lineage(experiment="broken-chain")
    ctx.check()
    shutil.copytree(embedded["workdir"] / "parent", tmp_path / "parent")
    with ctx.task("orphan-parent"):
        orphan = log_model_without_lineage(tmp_path / "parent" / "model.onnx", "orphan-parent", "train")
    info_file = tmp_path / "parent" / "model.json"
    info_file.write_text(json.dumps({**json.loads(info_file.read_text()), "mlflow_model_id": orphan}))
    child = quantize_step(
        tmp_path / "parent",
        digits_artifact,
        tmp_path / "child",
        StaticQuantConfig(calibration_samples=32),
        ctx,
    ).info
    assert audit.broken_chains() == []
    mlflow.MlflowClient().delete_logged_model(orphan)
    broken = audit.broken_chains()
    assert [(r["model_id"], r["missing_parent"]) for r in broken] == [(child["mlflow_model_id"], orphan)]
    lin = audit.lineage_of(child["mlflow_model_id"])
    assert lin.broken_at == orphan and [s.technique for s in lin.steps] == ["static-int8"]
    assert "BROKEN CHAIN" in audit.render(lin, "text")


def test_promote_refuses_and_explains(embedded, run_cli):

    lin = audit.lineage_of("models:/digits-small/1")
    train = lin.steps[0]
    with pytest.raises(
        audit.PromotionRefused, match="no benchmark on device class 'jetson-orin-nano-emulated'"
    ):
        audit.promote("models:/digits-small/1", "jetson-orin-nano-emulated-production")
    with pytest.raises(audit.PromotionRefused, match="never went through an accuracy gate"):
        audit.promote(train.model_id, "rpi4-emulated-production", registered_name="digits-small")
    lineage.set_model_tags(
        lin.steps[1].model_id,
        {
            "edgecompress.gate": "rejected",
            "edgecompress.gate_reason": "accuracy drop 3.00 points > allowed 1.00",
        },
    )
    try:
        res = run_cli("promote", "models:/digits-small/1", "--alias", "rpi4-emulated-production")
        assert res.returncode == 2
        assert "failed its accuracy gate (accuracy drop 3.00 points > allowed 1.00)" in res.stderr
    finally:
        lineage.set_model_tags(
            lin.steps[1].model_id, {"edgecompress.gate": "accepted", "edgecompress.gate_reason": "passed"}
        )
    res = run_cli("promote", "models:/digits-small/1", "--alias", "rpi4-emulated-prod")
    assert res.returncode == 2 and "expected <device-class>-production" in res.stderr
    res = run_cli("promote", "models:/digits-small/1", "--alias", "rpi4-emulated-production")
    assert res.returncode == 0, res.stderr
    assert "promoted digits-small v1" in res.stdout
    assert (
        str(
            mlflow.MlflowClient()
            .get_model_version_by_alias("digits-small", "rpi4-emulated-production")
            .version
        )
        == "1"
    )


def test_unreachable_server_is_a_clear_error(run_cli, dead_uri):
    uri = dead_uri
    with pytest.raises(TrackingError, match="unreachable after 2 attempts"):
        lineage.check_reachable(uri, timeout_s=1, attempts=2)
    res = run_cli("lineage", "models:/x@y", env={"MLFLOW_TRACKING_URI": uri})
    assert res.returncode == 2 and f"MLflow tracking server {uri} is unreachable" in res.stderr
