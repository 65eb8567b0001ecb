"""The prune and distill components in kfp.local, alone and chained in the edge-compression pipeline."""

# No `from __future__ import annotations`: KFP reads the pipeline function's annotations.

import json
from pathlib import Path

import pytest

SMALL = '{"family": "cnn", "kwargs": {"widths": [8, 16], "depths": [1, 1]}}'


def test_chain_prune_distill_quantize_records_lineage(tracking_uri: str, tmp_path: Path):
    """`--chain prune,distill,quantize`: each step's model's parent is the previous step's model."""
    from edgecompress import lineage
    from edgecompress.pipelines.local import run_edge_compression

    arguments = {
        "dataset": "digits", "model": SMALL, "epochs": 3, "batch_size": 64, "device_classes": ["rpi4-emulated"],
        "bench_min_runs": 20, "bench_min_duration_s": 0.05, "max_accuracy_drop": 0.5, "registered_model_name": "chain",
        "prune_ratio": 0.5, "prune_finetune_epochs_after": 1, "prune_sensitivity": True, "prune_sensitivity_ratios": "0.5",
        "distill_epochs": 1, "distill_compare_scratch": False, "quantize_calibration_samples": 32,
    }  # fmt: skip
    result = run_edge_compression(["prune", "distill", "quantize"], arguments, tmp_path)
    gate = result.gate
    assert gate["child"]["technique"] == "static-int8"
    assert (
        gate["child"]["macs"] < gate["parent"]["macs"] / 2
    )  # the pruned architecture went through the chain
    techniques = []
    model_id = gate["child"]["model_id"]
    while model_id:
        model = lineage.get_model(model_id)
        techniques.append(model.tags["edgecompress.technique"])
        model_id = model.tags.get("edgecompress.parent_model_id")
    assert techniques == ["static-int8", "distill", "prune-structured", "train"]
    reports = {p.parent.name: p.read_text() for p in Path(result.pipeline_root).rglob("report")}
    assert "Sensitivity" in reports["prune"] and "Knowledge distillation" in reports["distill"]


def test_distill_component_with_spec_student_and_prune_component_unstructured(
    digits_artifact: Path, trained_model: Path, tmp_path: Path
):
    from kfp import dsl, local
    from kfp.dsl import Dataset, Model

    from edgecompress.components.distill.component import distill
    from edgecompress.components.prune.component import prune

    local.init(
        runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path), raise_on_error=True
    )

    @dsl.pipeline
    def two_steps(dataset_uri: str = str(digits_artifact), model_uri: str = str(trained_model)):
        ds = dsl.importer(artifact_uri=dataset_uri, artifact_class=Dataset, reimport=True)
        teacher = dsl.importer(artifact_uri=model_uri, artifact_class=Model, reimport=True)
        pruned = prune(
            model=teacher.output,
            dataset=ds.output,
            method="unstructured",
            sparsity=0.7,
            finetune_epochs_after=0,
            track=False,
        )
        distill(
            teacher=teacher.output,
            dataset=ds.output,
            student_spec=SMALL,
            epochs=1,
            batch_size=64,
            compare_scratch=False,
            track=False,
        ).after(pruned)

    two_steps()
    metas = {p.parent.name: p for p in tmp_path.rglob("model.json")}
    infos = [json.loads(p.read_text()) for p in metas.values()]
    pruned = next(i for i in infos if i["technique"] == "prune-unstructured")
    assert pruned["prune"]["weight_sparsity"] == pytest.approx(0.7, abs=0.01)
    distilled = next(i for i in infos if i["technique"] == "distill")
    assert distilled["spec"]["kwargs"]["widths"] == [8, 16]
