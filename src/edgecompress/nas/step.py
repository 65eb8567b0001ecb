"""The NAS step (what the `nas` component and `edgecompress nas` call): search, re-measure the front,
retrain the pick at full fidelity, write the Model artifact, the front (JSON) and a report, and
record lineage in MLflow: the search is a task run, every trial a child run of it, and the chosen
model a LoggedModel that names its trial run and study.

Contract: `nas_step` returns the step runner's `StepResult` with `extra["nas_summary"]` (what the
front JSON holds); its outputs are written only after the search and the retraining have succeeded.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgecompress import lineage
from edgecompress.data import Dataset
from edgecompress.errors import ConfigError, TrackingError
from edgecompress.io import write_json
from edgecompress.nas.report import front_png, nas_report, summarize
from edgecompress.nas.search import (
    Constraints,
    LatencyMeter,
    NasConfig,
    accuracy_on,
    redact,
    retrain,
    search,
    search_identity,
)
from edgecompress.nas.space import DEFAULT_SPACE, SearchSpace
from edgecompress.step import (
    Child,
    Lineage,
    Parent,
    StepInputs,
    StepResult,
    dataset_model_info,
    run_step,
    write_report,
)

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
            "mlflow.parentRunId": self.parent.info.run_id,
            f"{lineage.TAG}task": "nas-trial",
            f"{lineage.TAG}pipeline_run_id": self.pipeline_run_id,
            f"{lineage.TAG}nas.trial": str(record["number"]),
            f"{lineage.TAG}nas.state": record["state"],
        }
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


PICK_KEYS = ("number", "accuracy", "p50_ms")  # what the log says of the pick
RETRAIN_KEYS = ("batch_size", "lr", "augment", "seed")  # the pick's retraining, as model.json records it


def _measure_reference(ref, meter: LatencyMeter, config: NasConfig) -> dict[str, Any]:
    """The reference's own ONNX, measured like the front."""
    spec = ref.info.get("spec")
    return {
        "spec": spec if isinstance(spec, dict) and "family" in spec else None,
        "model_id": ref.info.get("mlflow_model_id"),
        **meter.measure_onnx(ref.onnx_path, config.final_bench),
    }


def _finish(package, made, *, summary, meter, config, front_path, report_path, tracked: bool) -> None:
    """After the runner saved the pick: measure its ONNX, record the pick in model.json, log the front
    to the search's run, write the front JSON and the report."""
    pick, final, device_class = summary["pick"], summary["pick"]["final"], summary["device_class"]
    final.update(meter.measure_onnx(package.onnx_path, config.final_bench))
    nas = {k: summary[k] for k in ("study_name", "device_class", "budget", "counts")}
    nas["pick"] = {"trial": pick["number"], "search_accuracy": pick["accuracy"], **final}
    package.update_info({"nas": nas})
    made.metrics[f"bench.{device_class}.p50_ms"] = final["p50_ms"]
    title = f"NAS on {device_class}: {summary['study_name']}"
    png = front_png(summary["trials"], summary["front"], pick, summary["reference"], title)
    if tracked:
        lineage.log_task_outputs(
            "nas",
            {"pareto_front.json": json.dumps(summary, indent=2, default=str), "pareto_front.png": png},
            {
                "nas.trials_finished": summary["budget"]["trials_finished"],
                "nas.front_size": len(summary["front"]),
                "nas.search_seconds": summary["budget"]["search_seconds"],
                **{f"nas.{k}": v for k, v in summary["counts"].items()},
            },
        )
    write_json(Path(front_path), summary)
    if report_path is not None:
        write_report(report_path, nas_report(summary, png))


def _summary(
    study_name, storage, constraints, config, space, meter, found, reference, search_seconds, trial_run_ids
):
    """What the front JSON holds (and `StepResult.extra["nas_summary"]`): `found` is (trials, front,
    pick, final)."""
    trials, front, pick, final = found
    return {
        "study_name": study_name,
        "storage": redact(storage) if storage else f"{STUDY_FILE} in the Model artifact",  # no password
        "device_class": constraints.device_class,
        "emulated": meter.emulated,
        "constraints": asdict(constraints),
        "config": asdict(config),
        "search_space": space.as_dict(),
        "budget": {
            "n_trials": config.n_trials,
            "timeout_s": config.timeout_s,
            "trials_finished": len(trials),
            "search_seconds": search_seconds,
        },
        "counts": {
            s: sum(t["state"] == s for t in trials) for s in ("complete", "pruned", "infeasible", "fail")
        },
        "trials": trials,
        "front": front,
        "pick": {**pick, "final": final},
        "reference": reference,
        "trial_run_ids": trial_run_ids,
    }


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
) -> StepResult:
    """Search, then retrain the pick, through the step runner (`edgecompress.step.run_step`; the
    reference model, when given, is the parent). `storage` is an optuna storage URL; empty: a private
    SQLite file, copied into the Model artifact (nas-study.db) so the search can be inspected or
    resumed. `StepResult.extra["nas_summary"]` is what the front JSON holds."""
    ctx = lineage_ctx or Lineage()
    started = time.monotonic()
    space = SearchSpace.load(search_space)
    state: dict[str, Any] = {}

    def prepare(inputs: StepInputs) -> dict[str, Any]:
        dataset, ref = inputs.dataset, inputs.packages.get("reference")
        if ref is not None and (
            ref.num_classes != dataset.num_classes or ref.input_shape != dataset.input_shape
        ):
            raise ConfigError(
                f"reference model {reference_model} takes {ref.input_shape} → {ref.num_classes} classes; "
                f"the dataset {dataset.name!r} is {dataset.input_shape} → {dataset.num_classes}"
            )
        LatencyMeter(  # an unknown device class fails here, before anything runs
            constraints.device_class, farm_url, dataset.input_shape, dataset.num_classes
        )
        state["study"] = study_name or default_study_name(dataset, space, config, constraints)
        return {"search_space": json.dumps(space.as_dict(), sort_keys=True), "study_name": state["study"]}

    def make(inputs: StepInputs) -> Child:
        dataset, ref = inputs.dataset, inputs.packages.get("reference")
        db = inputs.workdir / STUDY_FILE
        trial_runs = _TrialRuns(inputs.run_id, ctx.pipeline_run_id) if inputs.run_id else None
        study, meter = search(
            dataset,
            space,
            constraints,
            config,
            storage or f"sqlite:///{db}",
            state["study"],
            farm_url,
            on_trial=trial_runs,
            progress=progress,
        )
        trials, front, pick = summarize(study, meter, constraints, config)
        reference = _measure_reference(ref, meter, config) if ref is not None else None
        search_seconds = time.monotonic() - started
        log.info("NAS pick: trial %d, search accuracy %.4f, p50 %.3f ms", *(pick[k] for k in PICK_KEYS))
        model, history = retrain(pick["spec"], dataset, config, progress=progress)
        final = {f"{split}_accuracy": accuracy_on(model, dataset, split) for split in ("val", "test")}
        info = {
            **dataset_model_info(dataset),
            "spec": pick["spec"],
            "history": history.as_dict(),
            "train_config": {"epochs": config.final_epochs, **{k: getattr(config, k) for k in RETRAIN_KEYS}},
        }
        summary = _summary(
            state["study"],
            storage,
            constraints,
            config,
            space,
            meter,
            (trials, front, pick, final),
            reference,
            search_seconds,
            trial_runs.run_ids if trial_runs else {},
        )
        trial_run = summary["trial_run_ids"].get(pick["number"], "")
        outputs = {"front_path": front_path, "report_path": report_path, "tracked": bool(inputs.run_id)}
        finish = functools.partial(_finish, summary=summary, meter=meter, config=config, **outputs)
        return Child(
            model,
            info,
            name=f"{dataset.name}-nas",
            finish=finish,
            extra={"nas_summary": summary},
            metrics={
                "val_accuracy": final["val_accuracy"],
                "test_accuracy": final["test_accuracy"],
                "search_accuracy": pick["accuracy"],
            },
            params={
                "model_spec": json.dumps(pick["spec"], sort_keys=True),
                "nas.trial": pick["number"],
                "nas.trial_run_id": trial_run,
            },
            tags={f"{lineage.TAG}nas.study": state["study"], f"{lineage.TAG}nas.trial_run_id": trial_run},
            files={} if storage else {STUDY_FILE: db},
        )

    return run_step(
        "nas",
        (config, constraints),
        dataset_path,
        output_dir,
        make,
        parents={"reference": Parent(reference_model, torch=False)},
        lineage_ctx=ctx,
        prepare=prepare,
    )
