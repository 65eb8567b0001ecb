"""MLflow lineage: one parent run per pipeline run, a nested run per task, every model a LoggedModel.

Lineage lives in MLflow itself (tags, inputs, model params and metrics), not in side files:
- model tags: `edgecompress.parent_model_id`, `.technique`, `.dataset_digest`, `.dataset_name`,
  `.dataset_source`, `.package_version`, `.image`, `.pipeline_run_id`, `.gate` (accepted/rejected);
- model params: the technique's parameters; model metrics: accuracy, sizes, and per device class
  `bench.<class>.p50_ms` etc., with `edgecompress.bench.<class>.emulated` tags;
- datasets: `mlflow.log_input` with our content digest;
- registry: accepted models registered, with an alias per device class.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgecompress import __version__
from edgecompress.errors import TrackingError

log = logging.getLogger(__name__)

TAG = "edgecompress."
DEFAULT_EXPERIMENT = "edgecompress"
DEFAULT_STORE_DIR = Path("edgecompress-runs")
IMAGE_ENV = "EDGECOMPRESS_IMAGE"


def default_tracking_uri(store_dir: Path = DEFAULT_STORE_DIR) -> str:
    return f"sqlite:///{(Path(store_dir) / 'mlflow.db').resolve()}"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def check_reachable(uri: str | None = None, timeout_s: float = 5.0, attempts: int = 3) -> str:
    """Fail fast and clearly when a tracking server is down, instead of MLflow's long retry loop.

    Transient failures are retried with backoff; after the last attempt the message names the URI.
    """
    uri = uri or tracking_uri()
    if not uri.startswith(("http://", "https://")):
        if uri.startswith("sqlite:///"):
            Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        return uri
    last: Exception | None = None
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as resp:
                if resp.status == 200:
                    return uri
                last = TrackingError(f"HTTP {resp.status}")
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        if attempt + 1 < attempts:
            time.sleep(0.5 * 2**attempt)
    raise TrackingError(f"MLflow tracking server {uri} is unreachable after {attempts} attempts: {last}")


def _mlflow():  # imported lazily: mlflow takes ~2 s to import
    import mlflow

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "4")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    return mlflow


def setup(
    experiment: str = DEFAULT_EXPERIMENT, uri: str | None = None, artifact_location: str | None = None
) -> str:
    """Point MLflow at the tracking store and make sure the experiment exists; returns its id.

    For a local SQLite store the artifact location is explicit (next to the database), so that
    artifacts never land in whatever directory a task happens to run in.
    """
    mlflow = _mlflow()
    uri = check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    if artifact_location is None and uri.startswith("sqlite:///"):
        artifact_location = (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").resolve().as_uri()
    try:
        exp = mlflow.get_experiment_by_name(experiment)
        if exp is None:
            try:
                exp_id = mlflow.create_experiment(experiment, artifact_location=artifact_location)
            except Exception:  # created concurrently by a sibling task
                exp_id = mlflow.get_experiment_by_name(experiment).experiment_id
        else:
            exp_id = exp.experiment_id
        mlflow.set_experiment(experiment_id=exp_id)
    except TrackingError:
        raise
    except Exception as exc:
        raise TrackingError(f"MLflow at {uri} refused the experiment {experiment!r}: {exc}") from exc
    return exp_id


def get_or_create_pipeline_run(
    pipeline_run_id: str,
    pipeline_name: str,
    experiment: str = DEFAULT_EXPERIMENT,
    params: dict[str, Any] | None = None,
) -> str:
    """The parent run of a pipeline run, found by tag so every task attaches to the same one."""
    mlflow = _mlflow()
    exp = mlflow.get_experiment_by_name(experiment)
    found = mlflow.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{TAG}pipeline_run_id` = '{pipeline_run_id}'",
        output_format="list",
        max_results=1,
    )
    if found:
        return found[0].info.run_id
    client = mlflow.MlflowClient()
    run = client.create_run(
        exp.experiment_id,
        run_name=f"{pipeline_name}-{pipeline_run_id[:12]}",
        tags={
            f"{TAG}pipeline_run_id": pipeline_run_id,
            f"{TAG}pipeline": pipeline_name,
            f"{TAG}package_version": __version__,
        },
    )
    for key, value in (params or {}).items():
        client.log_param(run.info.run_id, key, str(value)[:6000])
    return run.info.run_id


@contextlib.contextmanager
def task_run(
    pipeline_run_id: str,
    pipeline_name: str,
    task: str,
    experiment: str = DEFAULT_EXPERIMENT,
    params: dict[str, Any] | None = None,
) -> Iterator[str]:
    """A nested run for one task under the pipeline's parent run; ends FAILED if the task raises."""
    mlflow = _mlflow()
    setup(experiment)
    parent = get_or_create_pipeline_run(pipeline_run_id, pipeline_name, experiment)
    tags = {
        "mlflow.parentRunId": parent,
        f"{TAG}pipeline_run_id": pipeline_run_id,
        f"{TAG}task": task,
        f"{TAG}package_version": __version__,
    }
    if os.environ.get(IMAGE_ENV):
        tags[f"{TAG}image"] = os.environ[IMAGE_ENV]
    with mlflow.start_run(run_name=task, tags=tags) as run:
        if params:
            mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
        yield run.info.run_id


def log_dataset(meta: dict[str, Any], context: str) -> None:
    """Record a dataset (by our content digest) as an input of the active run."""
    mlflow = _mlflow()
    from mlflow.data.http_dataset_source import HTTPDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    source = meta["source"]
    if not source.startswith(("http://", "https://", "s3://")):
        source = f"https://edgecompress.local/datasets/{meta['name']}?source={source}"
    dataset = MetaDataset(HTTPDatasetSource(source), name=meta["name"], digest=meta["sha256"][:36])
    mlflow.log_input(dataset, context=context, tags={f"{TAG}sha256": meta["sha256"]})


def _signature(input_shape: list[int], num_classes: int):
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *input_shape), "input")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes), "logits")]),
    )


def _flat_params(params: dict[str, Any]) -> dict[str, str]:
    return {k: str(v)[:6000] for k, v in params.items()}


def log_model(
    onnx_path: Path,
    name: str,
    *,
    technique: str,
    input_shape: list[int],
    num_classes: int,
    parent_model_id: str | None,
    dataset_meta: dict[str, Any] | None,
    params: dict[str, Any],
    metrics: dict[str, float] | None = None,
    pipeline_run_id: str | None = None,
) -> str:
    """Log an ONNX model as a LoggedModel of the active run; returns the MLflow model id."""
    mlflow = _mlflow()
    import onnx

    tags = {
        f"{TAG}technique": technique,
        f"{TAG}package_version": __version__,
        f"{TAG}parent_model_id": parent_model_id or "",
    }
    if dataset_meta:
        tags.update(
            {
                f"{TAG}dataset_digest": dataset_meta["sha256"],
                f"{TAG}dataset_name": dataset_meta["name"],
                f"{TAG}dataset_source": str(dataset_meta["source"]),
            }
        )
    if pipeline_run_id:
        tags[f"{TAG}pipeline_run_id"] = pipeline_run_id
    if os.environ.get(IMAGE_ENV):
        tags[f"{TAG}image"] = os.environ[IMAGE_ENV]
    try:
        info = mlflow.onnx.log_model(
            onnx.load(str(onnx_path)), name=re.sub(r"[^\w\-]", "-", name),
            signature=_signature(input_shape, num_classes), save_as_external_data=False,
            onnx_execution_providers=["CPUExecutionProvider"], params=_flat_params(params), tags=tags,
            pip_requirements=[f"onnxruntime=={_ort_version()}"],
        )  # fmt: skip
    except Exception as exc:
        raise TrackingError(f"MLflow refused to log model {name!r}: {exc}") from exc
    if metrics:
        log_model_metrics(info.model_id, metrics)
    return info.model_id


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def log_model_metrics(model_id: str, metrics: dict[str, float]) -> None:
    mlflow = _mlflow()
    for key, value in metrics.items():
        mlflow.log_metric(re.sub(r"[^\w\-./ ]", "_", key), float(value), model_id=model_id)


def log_benchmarks(model_id: str, results: dict[str, dict[str, Any]]) -> None:
    """Benchmarks are metrics on the model, one set per device class, with emulation labelled."""
    mlflow = _mlflow()
    metrics, tags = {}, {}
    for device_class, r in results.items():
        lat = r["latency_ms"]
        for q in ("p50", "p90", "p99", "mean"):
            metrics[f"bench.{device_class}.{q}_ms"] = lat[q]
        metrics[f"bench.{device_class}.load_ms"] = r["load_ms"]
        metrics[f"bench.{device_class}.peak_rss_bytes"] = r["peak_rss_bytes"]
        metrics[f"bench.{device_class}.throughput_per_s"] = r["throughput_per_s"]
        tags[f"{TAG}bench.{device_class}.emulated"] = str(bool(r.get("emulated"))).lower()
        tags[f"{TAG}bench.{device_class}.provider"] = r.get("provider_used", "")
        tags[f"{TAG}bench.{device_class}.host"] = (r.get("device") or {}).get("hostname", "")
    log_model_metrics(model_id, metrics)
    mlflow.set_logged_model_tags(model_id, tags)


def set_model_tags(model_id: str, tags: dict[str, Any]) -> None:
    _mlflow().set_logged_model_tags(model_id, {k: str(v) for k, v in tags.items()})


def register(
    model_id: str, registered_name: str, aliases: list[str], tags: dict[str, str] | None = None
) -> int:
    """Register a model version and point one alias per device class at it; returns the version."""
    mlflow = _mlflow()
    client = mlflow.MlflowClient()
    try:
        version = mlflow.register_model(f"models:/{model_id}", registered_name, tags=tags)
        for alias in aliases:
            client.set_registered_model_alias(registered_name, alias_name(alias), version.version)
    except Exception as exc:
        raise TrackingError(f"MLflow could not register {model_id} as {registered_name!r}: {exc}") from exc
    return int(version.version)


def alias_name(device_class: str) -> str:
    """Registry aliases allow letters, digits, '_' and '-'."""
    return re.sub(r"[^\w\-]", "-", device_class)


def get_model(model_id: str):
    try:
        return _mlflow().get_logged_model(model_id)
    except Exception as exc:
        raise TrackingError(f"MLflow has no model {model_id!r}: {exc}") from exc
