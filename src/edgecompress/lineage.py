"""MLflow lineage: one parent run per pipeline run, a nested run per task, every model a LoggedModel.

Lineage lives in MLflow itself (tags, inputs, model params and metrics), not in side files:
- model tags: `edgecompress.parent_model_id`, `.technique`, `.dataset_digest`, `.dataset_name`,
  `.dataset_source`, `.package_version`, `.git_commit` (and where it came from), `.image`,
  `.image_digest`, `.pipeline_run_id`, `.gate` (accepted/rejected); runs carry the code tags too;
- model params: the technique's parameters; model metrics: accuracy, sizes, and per device class
  `bench.<class>.p50_ms` etc., with `edgecompress.bench.<class>.emulated` tags;
- datasets: `mlflow.log_input` with our content digest;
- registry: accepted models registered, with an alias per device class.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
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
# Baked into the components image at build time (docker/build.sh → Dockerfile's REVISION build arg).
GIT_COMMIT_ENV = "EDGECOMPRESS_GIT_COMMIT"
IMAGE_DIGEST_ENV = "EDGECOMPRESS_IMAGE_DIGEST"  # set by whoever knows it (a deployment, CI)
# Set by a local pipeline run (`edgecompress run`) for its tasks: the parent run they create is tagged
# with it, so the command can end that run when the pipeline returns (kfp.local's job id is random).
LOCAL_RUN_ENV = "EDGECOMPRESS_LOCAL_RUN"
# The pipeline run a task belongs to, from its environment rather than an input parameter (an input
# that changes every run changes KFP's cache key): on a cluster the pod's `pipeline/runid` label
# (Kubernetes downward API, set by the platform config), locally the runner's own id.
PIPELINE_RUN_ENV = "EDGECOMPRESS_PIPELINE_RUN_ID"


def _git_commit(source: Path) -> str | None:
    """HEAD of the git checkout that tracks the file `source`, with `-dirty` when tracked files differ
    from it; None when `source` is not tracked by a checkout (an installed copy, even one inside a
    checkout's ignored .venv, is not)."""
    try:
        run = functools.partial(subprocess.run, cwd=source.parent, capture_output=True, text=True, timeout=10)
        if run(["git", "ls-files", "--error-unmatch", source.name]).returncode != 0:
            return None
        head = run(["git", "rev-parse", "HEAD"])
        if head.returncode != 0:
            return None
        dirty = run(["git", "status", "--porcelain", "--untracked-files=no"]).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty else "")


def _installed_commit() -> str | None:
    """The commit pip recorded for a `pip install git+URL@…` (`direct_url.json`'s vcs_info)."""
    try:
        from importlib.metadata import distribution

        direct = json.loads(distribution("edgecompress").read_text("direct_url.json") or "{}")
    except Exception:  # not installed, or installed from an index or a wheel: no record of the source
        return None
    return (direct.get("vcs_info") or {}).get("commit_id") or None


@functools.cache
def code_version() -> dict[str, str]:
    """The code that runs, as every run and model records it: `git_commit` and where it came from
    (`git_commit_source`), the package version, and the image and its digest where known.

    The one place that decides the commit, first found wins: $EDGECOMPRESS_GIT_COMMIT (baked into
    the components image at build time by docker/build.sh); the git checkout this module is imported
    from, where git tracks it (`-dirty` when tracked files were changed); the installed package's
    metadata (pip's `direct_url.json` records the commit of a `pip install git+…`). None: `unknown`.
    The image digest: $EDGECOMPRESS_IMAGE_DIGEST, or the digest in $EDGECOMPRESS_IMAGE (`…@sha256:…`)."""
    out = {"package_version": __version__, "git_commit": "unknown", "git_commit_source": "none"}
    baked = os.environ.get(GIT_COMMIT_ENV, "").strip()
    for commit, source in (
        (baked if baked != "unknown" else "", "image build"),
        (lambda: _git_commit(Path(__file__).resolve()), "source checkout"),
        (_installed_commit, "package metadata"),
    ):
        commit = commit() if callable(commit) else commit
        if commit:
            out.update(git_commit=commit, git_commit_source=source)
            break
    image = os.environ.get(IMAGE_ENV, "")
    digest = os.environ.get(IMAGE_DIGEST_ENV, "") or (image.split("@", 1)[1] if "@sha256:" in image else "")
    if image:
        out["image"] = image
    if digest:
        out["image_digest"] = digest
    return out


def code_tags() -> dict[str, str]:
    """`code_version()` as the `edgecompress.*` tags of a run or model."""
    return {f"{TAG}{k}": v for k, v in code_version().items()}


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
            request = urllib.request.Request(uri.rstrip("/") + "/health", headers=_auth_headers())
            with urllib.request.urlopen(request, timeout=timeout_s) as resp:
                if resp.status == 200:
                    return uri
                last = TrackingError(f"HTTP {resp.status}")
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        if attempt + 1 < attempts:
            time.sleep(0.5 * 2**attempt)
    raise TrackingError(f"MLflow tracking server {uri} is unreachable after {attempts} attempts: {last}")


def _auth_headers() -> dict[str, str]:
    """Credentials come from the environment (Kubernetes Secrets in a cluster), as MLflow reads them."""
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return {"Authorization": f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}"}
    if os.environ.get("MLFLOW_TRACKING_USERNAME"):
        import base64

        pair = f"{os.environ['MLFLOW_TRACKING_USERNAME']}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}"
        return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
    return {}


def load_mlflow():  # imported lazily: mlflow takes ~2 s to import
    import mlflow

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "4")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow prints "View run … at: URL" on stdout when a run on a server ends: our commands' stdout is
    # their own result (the drift CronJob's first line is its verdict), and the run id is in our output
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    return mlflow


def setup(
    experiment: str = DEFAULT_EXPERIMENT, uri: str | None = None, artifact_location: str | None = None
) -> str:
    """Point MLflow at the tracking store and make sure the experiment exists; returns its id.

    For a local SQLite store the artifact location is explicit (next to the database), so that
    artifacts never land in whatever directory a task happens to run in.
    """
    mlflow = load_mlflow()
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
    mlflow = load_mlflow()
    exp = mlflow.get_experiment_by_name(experiment)
    found = mlflow.search_runs(
        [exp.experiment_id],
        # task runs carry the pipeline_run_id tag too: only the parent has the role tag
        filter_string=f"tags.`{TAG}pipeline_run_id` = '{pipeline_run_id}' and tags.`{TAG}role` = 'pipeline-run'",
        output_format="list",
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    if found:
        return found[0].info.run_id
    client = mlflow.MlflowClient()
    run = client.create_run(
        exp.experiment_id,
        run_name=parent_run_name(pipeline_name, pipeline_run_id),
        tags={
            f"{TAG}pipeline_run_id": pipeline_run_id,
            f"{TAG}pipeline": pipeline_name,
            f"{TAG}role": "pipeline-run",
            **code_tags(),
            **({f"{TAG}local_run": os.environ[LOCAL_RUN_ENV]} if os.environ.get(LOCAL_RUN_ENV) else {}),
        },
    )
    for key, value in (params or {}).items():
        client.log_param(run.info.run_id, key, str(value)[:6000])
    return run.info.run_id


def end_local_pipeline_runs(local_run: str, status: str) -> int:
    """End (FINISHED or FAILED) the parent runs still RUNNING that tasks of the local pipeline run
    `local_run` created: nothing else ends them, since one task ending must not end its pipeline's
    parent. Returns how many were ended."""
    return _end_running(f"tags.`{TAG}local_run` = '{local_run}'", status)


def end_pipeline_run(pipeline_run_id: str, status: str) -> int:
    """End (FINISHED or FAILED) the parent run of `pipeline_run_id` if it is still RUNNING (a
    cluster pipeline's exit handler). Returns how many runs were ended."""
    return _end_running(
        f"tags.`{TAG}pipeline_run_id` = '{pipeline_run_id}' and tags.`{TAG}role` = 'pipeline-run'", status
    )


def _end_running(filter_string: str, status: str) -> int:
    """End (`status`) every run matching `filter_string` that is still RUNNING; returns how many."""
    mlflow = load_mlflow()
    found = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"{filter_string} and attributes.status = 'RUNNING'",
        output_format="list",
    )
    client = mlflow.MlflowClient()
    for run in found:
        client.set_terminated(run.info.run_id, status=status)
    return len(found)


def parent_run_name(pipeline_name: str, pipeline_run_id: str) -> str:
    """`<pipeline>-<first 12 characters of the run id's unique part>`: an id that already starts with
    the pipeline's name (a standalone run's `standalone-<hex>`) is not cut down to that prefix."""
    unique = pipeline_run_id.removeprefix(f"{pipeline_name}-") or pipeline_run_id
    return f"{pipeline_name}-{unique[:12]}"


@contextlib.contextmanager
def task_run(
    pipeline_run_id: str,
    pipeline_name: str,
    task: str,
    experiment: str = DEFAULT_EXPERIMENT,
    params: dict[str, Any] | None = None,
    end_parent: bool = False,
) -> Iterator[str]:
    """A nested run for one task under the pipeline's parent run; ends FAILED if the task raises.

    `end_parent`: the parent run belongs to this task alone (a standalone command), so it ends with
    the task, FINISHED or FAILED, instead of staying RUNNING with nothing left to end it."""
    mlflow = load_mlflow()
    setup(experiment)
    parent = get_or_create_pipeline_run(pipeline_run_id, pipeline_name, experiment)
    tags = {
        "mlflow.parentRunId": parent,
        f"{TAG}pipeline_run_id": pipeline_run_id,
        f"{TAG}task": task,
        **code_tags(),
    }
    status = "FAILED"
    try:
        with mlflow.start_run(run_name=task, tags=tags) as run:
            if params:
                mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
            yield run.info.run_id
        status = "FINISHED"
    finally:
        if end_parent:
            mlflow.MlflowClient().set_terminated(parent, status=status)


def log_report(path: Path) -> None:
    """A report a task wrote, as an artifact of the task's MLflow run (`reports/`), where one is active:
    the HTML/Markdown a user opens in the UI next to the run's numbers."""
    mlflow = sys.modules.get("mlflow")  # not imported: no run can be active
    if mlflow is None or mlflow.active_run() is None:
        return
    with_retries(
        f"logging the report {path.name}", lambda: mlflow.log_artifact(str(path), artifact_path="reports")
    )


def log_task_outputs(artifact_path: str, files: dict[str, str | bytes], metrics: dict[str, float]) -> None:
    """Files (name -> content, under `artifact_path`) and metrics on the active task run, e.g. a
    search's Pareto front and its trial counts."""
    import tempfile

    mlflow = load_mlflow()
    with tempfile.TemporaryDirectory(prefix="edgecompress-log-") as tmp:
        for name, content in files.items():
            target = Path(tmp) / name
            target.write_bytes(content) if isinstance(content, bytes) else target.write_text(content)
        mlflow.log_artifacts(tmp, artifact_path=artifact_path)
    if metrics:
        mlflow.log_metrics(metrics)


def log_dataset(meta: dict[str, Any], context: str) -> None:
    """Record a dataset (by our content digest) as an input of the active run."""
    mlflow = load_mlflow()
    from mlflow.data.http_dataset_source import HTTPDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    source = meta["source"]
    if not source.startswith(("http://", "https://", "s3://")):
        source = f"https://edgecompress.local/datasets/{meta['name']}?source={source}"
    dataset = MetaDataset(HTTPDatasetSource(source), name=meta["name"], digest=meta["sha256"][:36])
    mlflow.log_input(dataset, context=context, tags={f"{TAG}sha256": meta["sha256"]})


def log_dataset_artifact(path: Path, meta: dict[str, Any]) -> str:
    """Store the Dataset artifact itself with the active run (in the artifact store, e.g. S3), so that
    the data a model was trained on can be fetched from its lineage alone; returns a `runs:/` URI."""
    mlflow = load_mlflow()
    run = mlflow.active_run()
    if run is None:
        raise TrackingError("log_dataset_artifact needs an active MLflow run")
    if Path(path).is_dir():  # a sharded dataset: its directory, file by file
        target = f"{meta['name']}-{meta['sha256'][:12]}"
        try:
            mlflow.log_artifacts(str(path), artifact_path=f"datasets/{target}")
        except Exception as exc:
            raise TrackingError(f"MLflow could not store dataset {path}: {exc}") from exc
        return f"runs:/{run.info.run_id}/datasets/{target}"
    target = f"{meta['name']}-{meta['sha256'][:12]}.npz"
    with tempfile.TemporaryDirectory(prefix="edgecompress-ds-") as tmp:
        link = Path(tmp) / target
        shutil.copyfile(path, link)
        try:
            mlflow.log_artifact(str(link), artifact_path="datasets")
        except Exception as exc:
            raise TrackingError(f"MLflow could not store dataset {path}: {exc}") from exc
    return f"runs:/{run.info.run_id}/datasets/{target}"


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
    mlflow = load_mlflow()
    import onnx

    tags = {
        f"{TAG}technique": technique,
        **code_tags(),
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
        if dataset_meta.get("uri"):
            tags[f"{TAG}dataset_uri"] = str(dataset_meta["uri"])
    if pipeline_run_id:
        tags[f"{TAG}pipeline_run_id"] = pipeline_run_id
        tags.update(_reused_parent(parent_model_id, pipeline_run_id))
    try:
        info = mlflow.onnx.log_model(
            onnx.load(str(onnx_path)),
            name=re.sub(r"[^\w\-]", "-", name),
            signature=_signature(input_shape, num_classes),
            save_as_external_data=False,
            onnx_execution_providers=["CPUExecutionProvider"],
            params=_flat_params(params),
            tags=tags,
            pip_requirements=[f"onnxruntime=={_ort_version()}"],
        )
    except Exception as exc:
        raise TrackingError(f"MLflow refused to log model {name!r}: {exc}") from exc
    if metrics:
        log_model_metrics(info.model_id, metrics)
    return info.model_id


def _reused_parent(parent_model_id: str | None, pipeline_run_id: str) -> dict[str, str]:
    """A parent model made by another pipeline run (KFP reused a cached task's output: that task did
    not run, so this run has no record of it) is recorded on both sides: the child model names the
    run its parent came from, and this pipeline run's parent run is tagged
    `edgecompress.reused_model.<model id>` = that run."""
    if not parent_model_id:
        return {}
    mlflow = load_mlflow()
    try:
        earlier = (get_model(parent_model_id).tags or {}).get(f"{TAG}pipeline_run_id")
    except Exception as exc:  # the parent's own record is what matters; this link is extra
        log.warning("could not read the parent model %s: %s", parent_model_id, exc)
        return {}
    if not earlier or earlier == pipeline_run_id:
        return {}
    active = mlflow.active_run()
    parent_run = active.data.tags.get("mlflow.parentRunId") if active else None
    if parent_run:
        mlflow.MlflowClient().set_tag(parent_run, f"{TAG}reused_model.{parent_model_id}", earlier)
    return {f"{TAG}parent_pipeline_run_id": earlier}


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def log_model_metrics(model_id: str, metrics: dict[str, float]) -> None:
    mlflow = load_mlflow()
    for key, value in metrics.items():
        mlflow.log_metric(re.sub(r"[^\w\-./ ]", "_", key), float(value), model_id=model_id)


def log_benchmarks(model_id: str, results: dict[str, dict[str, Any]]) -> None:
    """Benchmarks are metrics on the model, one set per device class, with emulation labelled."""
    mlflow = load_mlflow()
    metrics, tags = {}, {}
    for device_class, r in results.items():
        lat = r["latency_ms"]
        for q in ("p50", "p90", "p99", "mean"):
            metrics[f"bench.{device_class}.{q}_ms"] = lat[q]
        metrics[f"bench.{device_class}.load_ms"] = r["load_ms"]
        metrics[f"bench.{device_class}.peak_rss_bytes"] = r["peak_rss_bytes"]
        metrics[f"bench.{device_class}.throughput_per_s"] = r["throughput_per_s"]
        tags[f"{TAG}bench.{device_class}.emulated"] = str(bool(r.get("emulated"))).lower()
        if r.get("timing_meaningful") is False:  # the target ISA under QEMU: numerics only
            tags[f"{TAG}bench.{device_class}.timing"] = r.get("timing_note", "not meaningful")
        tags[f"{TAG}bench.{device_class}.provider"] = r.get("provider_used", "")
        tags[f"{TAG}bench.{device_class}.host"] = (r.get("device") or {}).get("hostname", "")
    log_model_metrics(model_id, metrics)
    mlflow.set_logged_model_tags(model_id, tags)


def set_model_tags(model_id: str, tags: dict[str, Any]) -> None:
    load_mlflow().set_logged_model_tags(model_id, {k: str(v) for k, v in tags.items()})


def register(
    model_id: str, registered_name: str, aliases: list[str], tags: dict[str, str] | None = None
) -> int:
    """Register a model version and point one alias per device class at it; returns the version."""
    mlflow = load_mlflow()
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
        return load_mlflow().get_logged_model(model_id)
    except Exception as exc:
        raise TrackingError(f"MLflow has no model {model_id!r}: {exc}") from exc


# --- reading lineage back -----------------------------------------------------------------------

MODEL_ID_RE = re.compile(r"^m-[0-9a-f]{32}$")


def with_retries(what: str, fn, attempts: int = 3, base_delay_s: float = 0.5):
    """Call `fn()`, retrying transient failures (connection errors, 5xx, 429) with backoff; any
    failure left after the last attempt becomes a TrackingError that names `what`."""
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            return fn()
        except MlflowException as exc:
            code = getattr(exc, "error_code", "")
            transient = code in ("INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED")
            if not transient or attempt + 1 == attempts:
                raise TrackingError(f"{what}: {exc.message if hasattr(exc, 'message') else exc}") from exc
        except (OSError, ConnectionError) as exc:
            if attempt + 1 == attempts:
                raise TrackingError(f"{what}: MLflow at {tracking_uri()} is unreachable: {exc}") from exc
        time.sleep(base_delay_s * 2**attempt)
    raise AssertionError("unreachable")


def connect(uri: str | None = None):
    """An MlflowClient on the tracking store (checked reachable first)."""
    mlflow = load_mlflow()
    uri = check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(uri)


def _model_id_from_version(version) -> str:
    if getattr(version, "model_id", None):
        return version.model_id
    source = version.source or ""
    if source.startswith("models:/m-"):  # ModelVersion.model_id can come back None
        return source[len("models:/") :].split("/")[0]
    raise TrackingError(
        f"registered model {version.name} v{version.version} points at {source!r}, not a logged model"
    )


def resolve_model_id(ref: str, client=None) -> str:
    """`models:/name@alias`, `models:/name/version`, `models:/m-…` or a bare model id → model id."""
    from mlflow.exceptions import MlflowException

    client = client or connect()
    ref = ref.strip()
    if MODEL_ID_RE.match(ref):
        return get_model(ref).model_id
    if not ref.startswith("models:/"):
        raise TrackingError(
            f"model reference {ref!r}: expected models:/NAME@ALIAS, models:/NAME/VERSION or a model id m-…"
        )
    body = ref[len("models:/") :]
    try:
        if MODEL_ID_RE.match(body):
            return get_model(body).model_id
        if "@" in body:
            name, alias = body.rsplit("@", 1)
            version = with_retries(
                f"registered model {name!r} has no alias {alias!r}",
                lambda: client.get_model_version_by_alias(name, alias),
            )
        elif "/" in body:
            name, number = body.rsplit("/", 1)
            if not number.isdigit():
                raise TrackingError(f"model reference {ref!r}: version {number!r} is not a number")
            version = with_retries(
                f"registered model {name!r} has no version {number}",
                lambda: client.get_model_version(name, number),
            )
        else:
            raise TrackingError(f"model reference {ref!r}: add @ALIAS or /VERSION after the registered name")
    except MlflowException as exc:  # pragma: no cover - with_retries converts these
        raise TrackingError(f"model reference {ref!r}: {exc}") from exc
    return _model_id_from_version(version)


def parent_chain(model_id: str) -> tuple[list[Any], str | None]:
    """The model and its ancestors, oldest first; and the id of a missing ancestor, if the chain breaks."""
    chain, seen = [], set()
    current: str | None = model_id
    missing = None
    while current and current not in seen:
        seen.add(current)
        try:
            model = get_model(current)
        except TrackingError:
            if not chain:
                raise
            missing = current
            break
        chain.append(model)
        current = (model.tags or {}).get(f"{TAG}parent_model_id") or None
    return list(reversed(chain)), missing


def download_model_onnx(model_id: str, directory: Path) -> Path:
    """Fetch a logged model's ONNX file (from the artifact store, e.g. S3 through the server)."""
    mlflow = load_mlflow()
    out = with_retries(
        f"cannot download model {model_id}",
        lambda: mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{model_id}", dst_path=str(directory)
        ),
    )
    found = sorted(Path(out).rglob("*.onnx"))
    if not found:
        raise TrackingError(f"logged model {model_id} holds no .onnx file")
    return found[0]


def dataset_location(model_id: str) -> dict[str, Any]:
    """Where the data a model was trained on lives: walks up the parent chain to the model that
    recorded the dataset artifact (`edgecompress.dataset_uri`), and checks the digests agree."""
    chain, _ = parent_chain(model_id)
    here = chain[-1].tags or {}
    digest = here.get(f"{TAG}dataset_digest")
    for model in reversed(chain):
        tags = model.tags or {}
        if tags.get(f"{TAG}dataset_digest") and (digest is None or tags[f"{TAG}dataset_digest"] == digest):
            digest = tags[f"{TAG}dataset_digest"]
            if tags.get(f"{TAG}dataset_uri"):
                return {
                    "digest": digest,
                    "name": tags.get(f"{TAG}dataset_name"),
                    "uri": tags[f"{TAG}dataset_uri"],
                    "source": tags.get(f"{TAG}dataset_source"),
                    "model_id": model.model_id,
                }
    if digest:
        return {
            "digest": digest,
            "name": here.get(f"{TAG}dataset_name"),
            "uri": None,
            "source": here.get(f"{TAG}dataset_source"),
            "model_id": model_id,
        }
    from edgecompress.errors import DatasetError

    raise DatasetError(
        f"model {model_id} has no dataset lineage (no {TAG}dataset_digest tag on it or its parents)"
    )


def download_dataset(location: dict[str, Any], directory: Path) -> Path:
    """The Dataset artifact named by `dataset_location`: from the artifact store, or, for a built-in
    source without a stored copy, rebuilt and accepted only if its digest matches."""
    from edgecompress.data import BUILTIN_DATASETS, load_source, save_dataset
    from edgecompress.errors import DatasetError

    directory = Path(directory)
    if location.get("uri"):
        uri = location["uri"]
        if uri.startswith("s3://"):
            from edgecompress.storage import download_s3

            return download_s3(uri, directory)
        if uri.startswith(("runs:/", "models:/", "mlflow-artifacts:/", "http")):
            mlflow = load_mlflow()
            return Path(
                with_retries(
                    f"cannot download dataset {uri}",
                    lambda: mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(directory)),
                )
            )
        if Path(uri).exists():
            return Path(uri)
        raise DatasetError(f"dataset {uri} recorded for model {location['model_id']} no longer exists")
    name = location.get("name")
    if name in BUILTIN_DATASETS:
        dataset = load_source(name)
        if dataset.digest == location["digest"]:
            path = directory / f"{name}.npz"
            save_dataset(dataset, path)
            return path
    raise DatasetError(
        f"model {location['model_id']} was trained on dataset {name!r} ({str(location['digest'])[:12]}…) "
        "but its lineage holds no stored copy and it cannot be rebuilt with that digest"
    )
