"""The drift steps: what `edgecompress drift` and the drift_check / promote components do.

Each step validates every input before it writes anything (bad input raises and never starts a
retrain), then tests and writes its outputs. `drift_check_step` and `promote_step` do all of their
component's work; the components only turn KFP artifacts into paths and the returned metadata
into artifact metadata.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecompress import lineage
from edgecompress.data import save_dataset
from edgecompress.drift.detectors import DriftConfig, detect
from edgecompress.drift.reference import (
    Batch,
    Reference,
    check_batch,
    load_batch,
    merge_for_retrain,
    resolve_reference,
)
from edgecompress.drift.report import report_html, write_outputs
from edgecompress.errors import DatasetError, TrackingError
from edgecompress.gate import GateConfig
from edgecompress.io import write_json
from edgecompress.params import flat_values
from edgecompress.step import write_report


@dataclass
class DriftCheckOptions:
    prepare_retrain: bool = field(
        default=True, metadata={"help": "on drift, write reference + new data as the retrain Dataset"}
    )


def batch_digest(batch: Batch) -> str:
    """sha256 of a checked batch's content (shape, dtype and bytes of `x`, and of `y` when labelled):
    the key that names the batch in lineage, whatever file or folder it came from."""
    import numpy as np

    h = hashlib.sha256()
    for name, array in (("x", batch.x), ("y", batch.y)):
        if array is not None:
            array = np.ascontiguousarray(array)
            h.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
            h.update(array.tobytes())
    return h.hexdigest()


def check_drift(
    batch_path: Path | str, model: str | Path, output_dir: Path | None, config: DriftConfig, workdir: Path
) -> tuple[dict[str, Any], Reference, Batch]:
    """Validate everything, then test; writes the outputs only when every input was good. The check
    is an MLflow run (`drift_run`) whose id the result carries."""
    config.validate()
    batch = load_batch(batch_path)
    reference = resolve_reference(model, workdir)
    batch = check_batch(batch, reference.dataset)
    result = detect(reference, batch, config)
    result["batch_digest"] = batch_digest(batch)
    if output_dir is not None:
        with drift_run(result) as log:
            result["outputs"] = {k: str(v) for k, v in write_outputs(result, output_dir).items()}
            log(result)
    return result, reference, batch


@contextlib.contextmanager
def drift_run(result: dict[str, Any], experiment: str = lineage.DEFAULT_EXPERIMENT) -> Iterator[Any]:
    """The drift check as an MLflow run: its settings (params), statistics (metrics), verdict, model,
    reference and batch digests and code version (tags); its id goes into `result` as
    `mlflow_run_id`. Call the yielded function with the final result to store it and its HTML report
    as the run's artifacts (`drift/result.json`, `drift/report.html`)."""
    mlflow = lineage.load_mlflow()
    lineage.setup(experiment)
    tags = {
        f"{lineage.TAG}role": "drift-check",
        f"{lineage.TAG}drift.verdict": "drifted" if result["drifted"] else "no drift",
        f"{lineage.TAG}drift.batch_digest": result["batch_digest"],
        f"{lineage.TAG}drift.batch": str(result.get("batch", ""))[:5000],
        f"{lineage.TAG}drift.model_id": result.get("model_id") or "",
        f"{lineage.TAG}dataset_digest": result["dataset"]["digest"],
        f"{lineage.TAG}dataset_name": result["dataset"]["name"],
        **lineage.code_tags(),
    }
    metrics = {
        "score": result["score"],
        "p_value": result["p_value"],
        "drifted": float(result["drifted"]),
        "batch_size": result["batch_size"],
        "reference_size": result["reference_size"],
    }
    for name, test in result["tests"].items():
        key = re.sub(r"[^\w\-./ ]", "_", name)
        metrics[f"test.{key}.p_value"] = test["p_value"]
    with mlflow.start_run(run_name="drift-check", tags=tags) as run:
        mlflow.log_params({k: str(v)[:6000] for k, v in result["config"].items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        result["mlflow_run_id"] = run.info.run_id

        def log(final: dict[str, Any]) -> None:
            mlflow.log_text(json.dumps(final, indent=2, default=float), "drift/result.json")
            mlflow.log_text(report_html(final), "drift/report.html")

        yield log


def check_and_report(
    batch_path: Path | str, model: str | Path, output_dir: Path, config: DriftConfig
) -> dict[str, Any]:
    """`edgecompress drift` without --retrain: check and write the result and report (and the check's
    MLflow run)."""
    with tempfile.TemporaryDirectory(prefix="edgecompress-drift-") as tmp:
        result, _, _ = check_drift(batch_path, model, output_dir, config, Path(tmp))
    return {"drift": result, "report": result["outputs"]["report"], "retrain": None}


def retrain_arguments(batch_path: Path | str, model: str | Path, config: DriftConfig) -> dict[str, Any]:
    """Validate every input of a retrain on drift here (nothing is written on bad input) and return
    the drift arguments of the retrain_on_drift pipeline."""
    config.validate()
    with tempfile.TemporaryDirectory(prefix="edgecompress-drift-") as tmp:
        batch = load_batch(batch_path)
        reference = resolve_reference(model, Path(tmp))
        batch = check_batch(batch, reference.dataset)
        if batch.y is None:  # fail before any work: no retrain can follow
            raise DatasetError(f"batch {batch_path} has no labels 'y': --retrain needs labelled new data")
    model_ref = str(model) if not Path(str(model)).exists() else f"models:/{reference.model_id}"
    source = str(batch_path) if str(batch_path).startswith("s3://") else str(Path(batch_path).resolve())
    return {"batch": source, "model": model_ref, **flat_values(config)}


def artifact_source(uri: str, path: Path | str) -> str:
    """Where a later task loads an artifact from: its s3:// URI (KFP names its MinIO store
    minio://), else its local path (kfp.local, or a store the tasks cannot read by URI)."""
    source = "s3://" + uri[len("minio://") :] if uri.startswith("minio://") else uri
    return source if source.startswith("s3://") else str(path)


def drift_check_step(
    batch: str,
    model: str,
    result_path: Path | str,
    report_path: Path | str,
    retrain_dataset_path: Path | str | None,
    config: DriftConfig,
    retrain_dataset_uri: str = "",
) -> dict[str, Any]:
    """The drift_check component's work: test, then write the result JSON and the HTML report; on
    drift (with a `retrain_dataset_path`) also the reference + new data Dataset for the retrain
    (labels required).

    The result JSON carries the retrain plan under `retrain`: `source` (that Dataset, by
    `artifact_source(retrain_dataset_uri, retrain_dataset_path)`; "" when none was written),
    `model_spec` (JSON) and `registered_model_name`. Returns `drifted`, the `result` as written, and
    the metadata for the result and retrain dataset artifacts."""
    with tempfile.TemporaryDirectory(prefix="edgecompress-drift-") as tmp:
        result, reference, checked = check_drift(batch, model, None, config, Path(tmp))
        merged = None
        if result["drifted"] and retrain_dataset_path is not None:
            merged = merge_for_retrain(reference.dataset, checked, config.seed)  # raises without labels
        spec = reference.model_spec or "cnn"
        with drift_run(result) as log:
            result["retrain"] = {
                "source": artifact_source(retrain_dataset_uri, retrain_dataset_path)
                if merged is not None
                else "",
                "model_spec": spec if isinstance(spec, str) else json.dumps(spec),
                "registered_model_name": reference.registered_name or f"{reference.dataset.name}-retrained",
                # what the retrained model's lineage names: the check, the new data, the model it replaces
                "drift_run_id": result["mlflow_run_id"],
                "batch_digest": result["batch_digest"],
                "replaces_model_id": reference.model_id or "",
            }
            write_json(Path(result_path), result)
            write_report(report_path, report_html(result))
            if merged is not None:
                save_dataset(merged, Path(retrain_dataset_path))
            log(result)
    return {
        "drifted": result["drifted"],
        "result": result,
        "result_metadata": {
            "drifted": result["drifted"],
            "score": result["score"],
            "p_value": result["p_value"],
            "kind": result["kind"],
            "model_id": result["model_id"] or "",
            "batch_digest": result["batch_digest"],
            "mlflow_run_id": result["mlflow_run_id"],
        },
        "retrain_dataset_metadata": (
            {"sha256": merged.digest, "name": result["dataset"]["name"]} if merged is not None else {}
        ),
    }


def retrain_plan_field(result_path: Path | str, field: str) -> str:
    """One field of the retrain plan that `drift_check_step` wrote into its result JSON."""
    return str(json.loads(Path(result_path).read_text())["retrain"][field])


def promote_gate_result(
    gate: dict[str, Any],
    config: GateConfig,
    dataset_path: Path | str | None = None,
    drift: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """After a gate: move `<class>-production` to the registered child on each class where it is not
    worse than the model that alias points at now (`edgecompress.drift.champion`); where no model is
    in production yet, on each class the gate accepted it for (today's rule). Refusals are recorded,
    not raised; a refused class keeps its champion."""
    from edgecompress import audit
    from edgecompress.drift import champion
    from edgecompress.runtime.devices import parse_device_classes

    config.validate()
    out: dict[str, Any] = {
        "gate": gate,
        "rule": champion.rule_text(config),
        "promoted": [],
        "refused": [],
        "classes": {},
    }
    challenger_id = (gate.get("child") or {}).get("model_id")
    if challenger_id and drift:
        _tag_retrain(challenger_id, drift)
    reg = gate.get("registered")
    if not reg:
        out["refused"].append(
            f"the retrained model was not registered: gate {gate['verdict']} ({'; '.join(gate['reasons'])})"
        )
        return out
    ref = f"models:/{reg['name']}/{reg['version']}"
    client = lineage.connect()
    with tempfile.TemporaryDirectory(prefix="edgecompress-promote-") as tmp:
        compared = _Comparisons(Path(tmp), challenger_id, dataset_path, config)
        for cls in parse_device_classes(config.device_classes):
            alias = champion.production_alias(cls)
            current = champion.current_champion(reg["name"], cls, client)
            row: dict[str, Any] = {"alias": alias, "champion": current}
            if current is not None and current["model_id"] == challenger_id:
                row.update(promote=False, reasons=[f"{alias} already points at {ref}"])
            elif current is None:
                row["decided_by"] = "no production model yet: the gate's verdict against its own parent"
            elif cls not in gate.get("accepted_device_classes", []):
                row["decided_by"] = "the gate refused this class: no comparison with the champion"
            else:
                row.update(compared.on(current, cls), decided_by="challenger vs champion")
            if row.get("promote", True):
                try:
                    audit.promote(ref, alias, client=client)
                    row["promote"] = True
                    out["promoted"].append(alias)
                except audit.PromotionRefused as exc:
                    row.update(promote=False, reasons=[str(exc)])
            if not row["promote"]:
                kept = (
                    f"; {alias} stays on {current['name']} v{current['version']} ({current['model_id']})"
                    if current
                    else ""
                )
                out["refused"].append(f"{alias}: {'; '.join(row['reasons'])}{kept}")
            out["classes"][cls] = row
    if challenger_id:
        _tag_challenger(challenger_id, out)
        _log_promotion_report(challenger_id, out)
    return out


class _Comparisons:
    """Challenger vs champion comparisons of one promotion: the models are downloaded and evaluated on
    the decision split once each, whatever number of classes they are compared on."""

    def __init__(self, workdir: Path, challenger_id: str | None, dataset_path, config: GateConfig) -> None:
        self.workdir, self.challenger_id, self.config = workdir, challenger_id, config
        self.dataset_path = dataset_path
        self.onnx: dict[str, Path] = {}
        self.correct: dict[str, Any] = {}
        self._dataset = None

    def _model(self, model_id: str) -> tuple[Path, Any]:
        from edgecompress.data import load_dataset
        from edgecompress.drift.champion import decision_correct

        if self._dataset is None:
            if not self.dataset_path:
                raise DatasetError("a promotion against a production model needs the decision dataset")
            self._dataset = load_dataset(Path(self.dataset_path))
        if model_id not in self.onnx:
            self.onnx[model_id] = lineage.download_model_onnx(model_id, self.workdir / model_id)
            self.correct[model_id] = decision_correct(self.onnx[model_id], self._dataset, self.config)
        return self.onnx[model_id], self.correct[model_id]

    def on(self, current: dict[str, Any], device_class: str) -> dict[str, Any]:
        from edgecompress.drift.champion import compare

        if not self.challenger_id:
            raise TrackingError("the gate's result names no MLflow model id for the retrained model")
        champion_onnx, champion_correct = self._model(current["model_id"])
        challenger_onnx, challenger_correct = self._model(self.challenger_id)
        return compare(
            champion_onnx,
            challenger_onnx,
            self._dataset,
            device_class,
            self.config,
            {"champion": champion_correct, "challenger": challenger_correct},
        )


def _tag_retrain(model_id: str, drift: dict[str, Any]) -> None:
    """The retrained model's lineage names what started it: the drift check's MLflow run, the new
    batch's digest and the model it was trained to replace (the one the check ran on)."""
    plan = drift.get("retrain") or {}
    tags = {
        "drift_run_id": plan.get("drift_run_id") or drift.get("mlflow_run_id", ""),
        "drift_batch_digest": plan.get("batch_digest") or drift.get("batch_digest", ""),
        "replaces_model_id": plan.get("replaces_model_id") or drift.get("model_id") or "",
    }
    lineage.set_model_tags(model_id, {f"{lineage.TAG}{k}": v for k, v in tags.items() if v})


def _tag_challenger(model_id: str, out: dict[str, Any]) -> None:
    """The promotion's outcome on the challenger: per class, promoted or why not, and the model it
    replaced (or was compared with)."""
    tags = {f"{lineage.TAG}promotion_rule": out["rule"]}
    for cls, row in out["classes"].items():
        tags[f"{lineage.TAG}promotion.{cls}"] = (
            "promoted" if row["promote"] else "; ".join(row["reasons"])[:4000]
        )
        if row.get("champion"):
            tags[f"{lineage.TAG}champion.{cls}"] = row["champion"]["model_id"]
    lineage.set_model_tags(model_id, tags)


def promotion_markdown(out: dict[str, Any]) -> str:
    """The promotion's decision per class, with its rule and numbers."""
    from edgecompress.reports import markdown_table

    rows = []
    for cls, row in out["classes"].items():
        acc, speed, champ = row.get("accuracy") or {}, row.get("speed") or {}, row.get("champion")
        rows.append(
            [
                cls,
                f"{champ['name']} v{champ['version']}" if champ else "none",
                "promoted" if row["promote"] else "refused",
                row.get("decided_by", ""),
                f"{acc['drop'] * 100:+.2f} [{acc['ci_low'] * 100:+.2f}, {acc['ci_high'] * 100:+.2f}]"
                if acc
                else "",
                f"{speed['speedup']:.3f} [{speed['ci_low']:.3f}, {speed['ci_high']:.3f}]"
                if speed
                else row.get("timing", ""),
                "; ".join(row.get("reasons", [])),
            ]
        )
    table = markdown_table(
        [
            "device class",
            "champion",
            "outcome",
            "decided by",
            "accuracy drop pt (95% CI)",
            "speed-up champion/challenger (95% CI)",
            "why not",
        ],
        rows,
    )
    return f"# Promotion\n\nRule: {out['rule']}.\n\n{table}\n"


def _log_promotion_report(model_id: str, out: dict[str, Any]) -> None:
    """The decision as artifacts of the run that made the challenger (`promotion/result.json`,
    `promotion/report.md`), next to its model in MLflow."""
    run_id = lineage.get_model(model_id).source_run_id
    if not run_id:
        return
    client = lineage.load_mlflow().MlflowClient()
    record = {k: out[k] for k in ("rule", "promoted", "refused", "classes")}
    client.log_text(run_id, json.dumps(record, indent=2, default=float), "promotion/result.json")
    client.log_text(run_id, promotion_markdown(out), "promotion/report.md")


def promote_step(
    gate_path: Path | str,
    result_path: Path | str,
    config: GateConfig,
    dataset_path: Path | str | None = None,
    drift_path: Path | str | None = None,
) -> dict[str, Any]:
    """The promote component's work: promote on the gate result at `gate_path` (challenger vs champion
    on the decision split of `dataset_path`) and write {rule, promoted, refused, classes} to
    `result_path`; with `drift_path` (drift_check's result), the retrained model's lineage names the
    drift run, the batch digest and the model it replaces. A refusal is recorded, not raised. Returns `promote_gate_result`'s dict plus
    `metadata` for the result artifact."""
    drift = json.loads(Path(drift_path).read_text()) if drift_path else None
    out = promote_gate_result(json.loads(Path(gate_path).read_text()), config, dataset_path, drift)
    write_json(Path(result_path), {k: out[k] for k in ("rule", "promoted", "refused", "classes")})
    return {**out, "metadata": {"promoted": ",".join(out["promoted"]), "refused": len(out["refused"])}}
