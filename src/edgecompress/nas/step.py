"""The NAS step (what the `nas` component and `edgecompress nas` call): search, re-measure the front,
retrain the pick at full fidelity, write the Model artifact, the front (JSON) and a report, and
record lineage in MLflow: the search is a task run, every trial a child run of it, and the chosen
model a LoggedModel that names its trial run and study.

Contract: `nas_step` returns the Model artifact's info plus `nas_summary` (what the front JSON
holds); its outputs are written only after the search and the retraining have succeeded.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgecompress import lineage
from edgecompress.data import Dataset, load_dataset
from edgecompress.errors import ConfigError, TrackingError
from edgecompress.export import load_model_package
from edgecompress.io import atomic_path
from edgecompress.nas.report import front_png, nas_report, summarize
from edgecompress.nas.search import (
    Constraints,
    LatencyMeter,
    NasConfig,
    accuracy_on,
    retrain,
    search,
    search_identity,
)
from edgecompress.nas.space import DEFAULT_SPACE, SearchSpace
from edgecompress.step import write_report

log = logging.getLogger(__name__)
STUDY_FILE = "nas-study.db"


@dataclass
class NasStepOptions:
    """Where the search runs: its space, its optuna study, and the farm that measures latency."""

    search_space: str = field(
        default=DEFAULT_SPACE, metadata={"help": "preset name, or the YAML/JSON of a search space"}
    )
    storage: str = field(
        default="", metadata={"help": "optuna storage URL shared across runs (resumes the study)"}
    )
    study_name: str = field(
        default="", metadata={"help": "(default: from dataset, device class, strategy, seed)"}
    )
    farm_url: str | None = field(
        default=None,
        metadata={"help": "device farm controller URL (empty: emulate the class on this machine)"},
    )


def default_study_name(
    dataset: Dataset, space: SearchSpace, config: NasConfig, constraints: Constraints
) -> str:
    """Deterministic, so that running the same search again resumes it instead of starting over;
    another dataset, space, constraint or fidelity makes another study."""
    identity = search_identity(space, constraints, config)
    return (
        f"nas-{dataset.digest[:8]}-{constraints.device_class}-{config.strategy}-seed{config.seed}-{identity}"
    )


class _TrialRuns:
    """Each finished trial becomes an MLflow run nested under the search's run."""

    def __init__(self, parent_run_id: str, pipeline_run_id: str) -> None:
        self.client = lineage.connect()
        self.parent = self.client.get_run(parent_run_id)
        self.pipeline_run_id = pipeline_run_id
        self.run_ids: dict[int, str] = {}

    def __call__(self, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param

        tags = {
            "mlflow.parentRunId": self.parent.info.run_id, f"{lineage.TAG}task": "nas-trial",
            f"{lineage.TAG}pipeline_run_id": self.pipeline_run_id, f"{lineage.TAG}nas.trial": str(record["number"]),
            f"{lineage.TAG}nas.state": record["state"],
        }  # fmt: skip
        if record["reason"]:
            tags[f"{lineage.TAG}nas.reason"] = record["reason"][:5000]
        try:
            run = self.client.create_run(
                self.parent.info.experiment_id, run_name=f"trial-{record['number']}", tags=tags
            )
            now = int(time.time() * 1000)
            metrics = [
                Metric(k, float(record[k]), now, 0)
                for k in ("accuracy", "p50_ms", "params", "macs", "epochs", "seconds")
                if record.get(k) is not None
            ]
            params = (
                [Param("spec", json.dumps(record["spec"], sort_keys=True)[:6000])] if record["spec"] else []
            )
            self.client.log_batch(run.info.run_id, metrics=metrics, params=params)
            status = "FINISHED" if record["state"] in ("complete", "pruned", "infeasible") else "FAILED"
            self.client.set_terminated(run.info.run_id, status=status)
        except Exception as exc:
            raise TrackingError(f"MLflow could not record NAS trial {record['number']}: {exc}") from exc
        self.run_ids[record["number"]] = run.info.run_id


def _reference(model_dir: Path | None, dataset: Dataset) -> tuple[Any, dict[str, Any] | None]:
    if model_dir is None:
        return None, None
    package = load_model_package(Path(model_dir))
    if package.num_classes != dataset.num_classes or tuple(package.input_shape) != dataset.input_shape:
        raise ConfigError(
            f"reference model {model_dir} takes {package.input_shape} → {package.num_classes} classes; "
            f"the dataset {dataset.name!r} is {dataset.input_shape} → {dataset.num_classes}"
        )
    spec = package.info.get("spec")
    return package, spec if isinstance(spec, dict) and "family" in spec else None


def nas_step(
    dataset_path: Path,
    output_dir: Path,
    front_path: Path,
    report_path: Path | None,
    search_space: str | dict[str, Any] | None,
    constraints: Constraints,
    config: NasConfig,
    storage: str = "",
    study_name: str = "",
    farm_url: str | None = None,
    reference_model: Path | None = None,
    lineage_ctx: Any = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Search, then retrain the pick. `storage` is an optuna storage URL; empty: a private SQLite
    file, copied into the Model artifact (nas-study.db) so the search can be inspected or resumed."""
    from edgecompress.io import write_json
    from edgecompress.step import Lineage, save_torch_child

    ctx = lineage_ctx or Lineage()
    started = time.monotonic()
    space = SearchSpace.load(search_space)
    config.validate()
    constraints.validate()
    dataset = load_dataset(Path(dataset_path))
    ref_package, ref_spec = _reference(reference_model, dataset)
    LatencyMeter(  # an unknown device class fails here, before anything runs
        constraints.device_class, farm_url, dataset.input_shape, dataset.num_classes
    )
    ctx.check()
    study_name = study_name or default_study_name(dataset, space, config, constraints)
    params = {
        "technique": "nas", "search_space": json.dumps(space.as_dict(), sort_keys=True),
        "study_name": study_name, **{f"nas.{k}": v for k, v in asdict(config).items()},
        **{f"constraint.{k}": v for k, v in asdict(constraints).items()},
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="edgecompress-nas-") as tmp, ctx.task("nas", params) as run_id:
        db = Path(tmp) / STUDY_FILE
        url = storage or f"sqlite:///{db}"
        trial_runs = _TrialRuns(run_id, ctx.pipeline_run_id) if ctx.enabled else None
        study, meter = search(
            dataset, space, constraints, config, url, study_name, farm_url, on_trial=trial_runs, progress=progress
        )  # fmt: skip
        trials, front, pick = summarize(study, meter, constraints, config)
        reference = None
        if ref_package is not None:  # the reference's own ONNX, measured like the front
            reference = {
                "spec": ref_spec, "model_id": ref_package.info.get("mlflow_model_id"),
                **meter.measure_onnx(ref_package.onnx_path, config.final_bench),
            }  # fmt: skip
        search_seconds = time.monotonic() - started
        log.info(
            "NAS pick: trial %d, search accuracy %.4f, p50 %.3f ms",
            pick["number"],
            pick["accuracy"],
            pick["p50_ms"],
        )
        model, history = retrain(pick["spec"], dataset, config, progress=progress)
        final = {
            "val_accuracy": accuracy_on(model, dataset, "val"),
            "test_accuracy": accuracy_on(model, dataset, "test"),
        }
        info = {
            "spec": pick["spec"], "technique": "nas", "input_shape": list(dataset.input_shape),
            "num_classes": dataset.num_classes, "class_names": dataset.class_names,
            "dataset_sha256": dataset.digest, "dataset_name": dataset.name,
            "parent_model_id": ref_package.info.get("mlflow_model_id") if ref_package else None,
            "train_config": {"epochs": config.final_epochs, "batch_size": config.batch_size, "lr": config.lr,
                             "augment": config.augment, "seed": config.seed},
            "history": history.as_dict(),
        }  # fmt: skip
        staged = Path(tmp) / "model"
        package = save_torch_child(model, dataset, staged, info)
        final.update(meter.measure_onnx(package.onnx_path, config.final_bench))
        summary = {
            "study_name": study_name, "storage": storage or f"{STUDY_FILE} in the Model artifact",
            "device_class": constraints.device_class, "emulated": meter.emulated,
            "constraints": asdict(constraints), "config": asdict(config), "search_space": space.as_dict(),
            "budget": {"n_trials": config.n_trials, "timeout_s": config.timeout_s,
                       "trials_finished": len(trials), "search_seconds": search_seconds},
            "counts": {s: sum(t["state"] == s for t in trials) for s in ("complete", "pruned", "infeasible", "fail")},
            "trials": trials, "front": front, "pick": {**pick, "final": final}, "reference": reference,
            "trial_run_ids": trial_runs.run_ids if trial_runs else {},
        }  # fmt: skip
        package.info["nas"] = {k: summary[k] for k in ("study_name", "device_class", "budget", "counts")}
        package.info["nas"]["pick"] = {"trial": pick["number"], "search_accuracy": pick["accuracy"], **final}
        (staged / "model.json").write_text(json.dumps(package.info, indent=2, sort_keys=True))
        if not storage:
            shutil.copyfile(db, staged / STUDY_FILE)
        png = front_png(
            trials, front, summary["pick"], reference, f"NAS on {constraints.device_class}: {study_name}"
        )
        html = nas_report(summary, png)
        if ctx.enabled:
            _log_search(summary, png, package, dataset, params, ctx, trial_runs)
        with atomic_path(Path(output_dir), directory=True) as out:
            shutil.copytree(staged, out, dirs_exist_ok=True)
        write_json(Path(front_path), summary)
        if report_path is not None:
            write_report(report_path, html)
    return {**load_model_package(output_dir).info, "nas_summary": summary}


def _log_search(summary, png, package, dataset, params, ctx, trial_runs) -> None:
    """The chosen model as a LoggedModel of the search run, its trial run named in its tags."""
    from edgecompress.step import log_child

    mlflow = lineage._mlflow()
    pick = summary["pick"]
    trial_run = (trial_runs.run_ids if trial_runs else {}).get(pick["number"], "")
    model_params = {
        **params, "model_spec": json.dumps(pick["spec"], sort_keys=True),
        "nas.trial": pick["number"], "nas.trial_run_id": trial_run,
    }  # fmt: skip
    metrics = {
        "val_accuracy": pick["final"]["val_accuracy"], "test_accuracy": pick["final"]["test_accuracy"],
        f"bench.{summary['device_class']}.p50_ms": pick["final"]["p50_ms"], "search_accuracy": pick["accuracy"],
    }  # fmt: skip
    model_id = log_child(package, f"{dataset.name}-nas", "nas", dataset, model_params, metrics, ctx)
    lineage.set_model_tags(
        model_id,
        {f"{lineage.TAG}nas.study": summary["study_name"], f"{lineage.TAG}nas.trial_run_id": trial_run},
    )
    with tempfile.TemporaryDirectory(prefix="edgecompress-nas-log-") as tmp:
        (Path(tmp) / "pareto_front.json").write_text(json.dumps(summary, indent=2, default=str))
        (Path(tmp) / "pareto_front.png").write_bytes(png)
        mlflow.log_artifacts(tmp, artifact_path="nas")
    mlflow.log_metrics({
        "nas.trials_finished": summary["budget"]["trials_finished"], "nas.front_size": len(summary["front"]),
        "nas.search_seconds": summary["budget"]["search_seconds"], **{f"nas.{k}": v for k, v in summary["counts"].items()},
    })  # fmt: skip
