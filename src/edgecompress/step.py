"""The step mechanism every technique shares: where lineage goes, how a parent is loaded, how a child
is exported, checked, saved and logged.

A step = validate its config -> check tracking -> load inputs -> the technique makes the child ->
parity check (torch children) -> save atomically (`export.save_model_package`) -> log the model and
its lineage -> record the MLflow model id in the package. Techniques call these pieces instead of
writing their own; components and CLI commands call the techniques' step functions.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecompress import __version__, lineage
from edgecompress.data import Dataset
from edgecompress.errors import ConfigError, ModelError
from edgecompress.export import (
    ModelPackage,
    check_parity,
    count_onnx_parameters,
    export_onnx,
    load_model_package,
    save_model_package,
)
from edgecompress.io import write_text

# What a child model inherits from its parent's model.json.
INHERITED_KEYS = ("spec", "input_shape", "num_classes", "class_names", "dataset_sha256", "dataset_name")


@dataclass
class Lineage:
    """Where a step records lineage. An empty `pipeline_run_id` (and no EDGECOMPRESS_PIPELINE_RUN_ID in
    the environment) makes a standalone run."""

    pipeline_run_id: str = field(default="", metadata={"help": "the pipeline run this step belongs to"})
    pipeline_name: str = field(default="standalone", metadata={"help": "the pipeline's name in MLflow"})
    experiment: str = field(default=lineage.DEFAULT_EXPERIMENT, metadata={"help": "MLflow experiment"})
    enabled: bool = field(default=True, metadata={"flat_name": "track", "help": "record lineage in MLflow"})

    def __post_init__(self) -> None:
        # a pipeline task finds its run in its environment (an input would defeat KFP's cache)
        self.pipeline_run_id = self.pipeline_run_id or os.environ.get(lineage.PIPELINE_RUN_ENV, "")
        # not a field: whether this step owns its parent run (and so ends it), not a setting
        self._standalone = not self.pipeline_run_id
        if not self.pipeline_run_id:
            self.pipeline_run_id = f"standalone-{uuid.uuid4().hex[:12]}"

    def check(self) -> None:
        if self.enabled:
            lineage.setup(self.experiment)

    def task(self, name: str, params: dict[str, Any] | None = None):
        if not self.enabled:
            return contextlib.nullcontext("")
        return lineage.task_run(
            self.pipeline_run_id,
            self.pipeline_name,
            name,
            self.experiment,
            params,
            end_parent=self._standalone,
        )


def write_report(path: Path | str, text: str) -> None:
    """Write a step's report (atomically) and, inside a tracked task, log it to the task's MLflow run."""
    write_text(Path(path), text)
    lineage.log_report(Path(path))


def dataset_meta(dataset: Dataset) -> dict[str, Any]:
    return {"sha256": dataset.digest, "name": dataset.name, "source": dataset.source}


def inherited_info(parent_info: dict[str, Any]) -> dict[str, Any]:
    return {k: parent_info.get(k) for k in INHERITED_KEYS}


def load_parent(model_dir: Path, dataset: Dataset, role: str = "model"):
    """A Model artifact with a torch module whose shapes fit the dataset: (package, module)."""
    from edgecompress.zoo import check_model_fits

    package = load_model_package(Path(model_dir))
    if not package.has_module:
        raise ModelError(
            f"the {role} {model_dir} has no torch module (module.pt): pruning and distillation need "
            "a trainable model, not an ONNX-only (e.g. already quantized) one"
        )
    if package.num_classes != dataset.num_classes:
        raise ConfigError(
            f"the {role} {model_dir} outputs {package.num_classes} classes; the dataset "
            f"{dataset.name!r} has {dataset.num_classes}"
        )
    module = package.load_module()
    check_model_fits(module, dataset.input_shape, dataset.num_classes)
    return package, module


def save_torch_child(model, dataset: Dataset, output_dir: Path, info: dict[str, Any]) -> ModelPackage:
    """Export a torch model to ONNX, check parity on validation data, and write the Model artifact
    (ONNX + module.pt, so the architecture round-trips) atomically."""
    import onnx

    from edgecompress.zoo import count_parameters

    with tempfile.TemporaryDirectory(prefix="edgecompress-child-") as tmp:
        onnx_file = Path(tmp) / "model.onnx"
        export_onnx(model, dataset.input_shape, onnx_file)
        x_val, _ = dataset.split("val", 512)
        parity = check_parity(model, onnx_file, x_val)
        info = {
            **info,
            # one count everywhere: the deployed graph's (BatchNorm folded), as evaluate and run report;
            # torch's own count (BatchNorm affine and running-stat-free) is kept, labelled
            "params": count_onnx_parameters(onnx.load(str(onnx_file)))[0],
            "torch_params": count_parameters(model),
            "export_parity": parity.as_dict(),
            "package_version": __version__,
        }
        return save_model_package(Path(output_dir), info, onnx_file, module=model)


def log_child(
    package: ModelPackage,
    name: str,
    technique: str,
    dataset: Dataset | None,
    params: dict[str, Any],
    metrics: dict[str, float],
    ctx: Lineage,
    dataset_info: dict[str, Any] | None = None,
) -> str | None:
    """Record the model as an MLflow LoggedModel whose parent is the model it was made from, and
    write its id into the package. `dataset_info` replaces the dataset's own metadata (e.g. with the
    stored artifact's URI)."""
    if not ctx.enabled:
        return None
    numeric = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    model_id = lineage.log_model(
        package.onnx_path,
        name,
        technique=technique,
        input_shape=package.info["input_shape"],
        num_classes=package.info["num_classes"],
        parent_model_id=package.info.get("parent_model_id"),
        dataset_meta=dataset_info or (dataset_meta(dataset) if dataset is not None else None),
        params=params,
        metrics=numeric,
        pipeline_run_id=ctx.pipeline_run_id,
    )
    package.record_model_id(model_id)
    return model_id


@dataclass
class Child:
    """What a torch technique makes from its parent: the new module, what model.json should say
    about how it was made, and the metrics logged on the child model."""

    module: Any
    info: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def run_torch_step(
    technique: str,
    config: Any,
    model_dir: Path,
    dataset_path: Path,
    output_dir: Path,
    transform: Callable[[Any, Dataset], Child],
    lineage_ctx: Lineage | None = None,
) -> ModelPackage:
    """The step of a technique that turns a torch parent into a torch child: validate the config ->
    load the dataset and the parent -> check tracking -> `transform` -> export + parity check ->
    atomic save -> log the child with its parent, dataset and parameters -> record its id."""
    from edgecompress.data import load_dataset
    from edgecompress.params import flat_values

    ctx = lineage_ctx or Lineage()
    config.validate()
    dataset = load_dataset(Path(dataset_path))
    parent, module = load_parent(Path(model_dir), dataset, f"model to {technique}")
    ctx.check()
    params = {"technique": technique, **{f"{technique}.{k}": v for k, v in flat_values(config).items()}}
    with ctx.task(technique, params):
        child = transform(module, dataset)
        info = {
            **inherited_info(parent.info),
            "technique": technique,
            "parent_model_id": parent.info.get("mlflow_model_id"),
            **child.info,
        }
        package = save_torch_child(child.module, dataset, Path(output_dir), info)
        log_child(package, f"{dataset.name}-{technique}", technique, dataset, params, child.metrics, ctx)
    return package
