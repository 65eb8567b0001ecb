"""The one local runner: any pipeline of this folder through kfp.local (SubprocessRunner in this
environment, no venv, no pip), with a loopback device farm for its edge-benchmark tasks.

`edgecompress run` and `edgecompress drift --retrain` both come here. Inputs are validated before any
task starts, so a typo fails in a second with a clear message rather than minutes later in a task.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecompress import lineage
from edgecompress.errors import ConfigError, EdgeCompressError
from edgecompress.io import atomic_path
from edgecompress.nas.distributed import STORAGE_ENV
from edgecompress.params import build
from edgecompress.rules import AccuracyRule
from edgecompress.runtime.devices import DEFAULT_DEVICE_CLASSES, emulated_device_class, parse_device_classes
from edgecompress.zoo import parse_spec

log = logging.getLogger(__name__)


@dataclass
class LocalRunResult:
    gate: dict[str, Any]
    gate_path: Path
    pipeline_root: Path
    tracking_uri: str
    seconds: float
    tracked: bool = True


def validate_arguments(arguments: dict[str, Any]) -> None:
    """Cheap checks of what the tasks would otherwise find out late."""
    from edgecompress.data import BUILTIN_DATASETS, FASHION_MNIST_DIR

    source = str(arguments.get("dataset", "digits"))
    if source == "fashion-mnist" and not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        raise ConfigError(
            f"Fashion-MNIST is not installed in {FASHION_MNIST_DIR}: run scripts/system-deps.sh"
        )
    if source not in BUILTIN_DATASETS and not source.startswith("s3://") and not Path(source).exists():
        raise ConfigError(
            f"dataset {source!r} is neither one of {BUILTIN_DATASETS}, an existing .npz file or folder (of "
            "images or .npz shards), nor an s3:// URI"
        )
    parse_spec(arguments.get("model", "cnn"))
    _check_device_classes(arguments)
    build(AccuracyRule, arguments).validate()  # the gate's and the ISA check's rule, before any task


def _check_device_classes(arguments: dict[str, Any]) -> list[str]:
    classes = parse_device_classes(arguments.get("device_classes", DEFAULT_DEVICE_CLASSES))
    if not arguments.get("farm_url"):
        for name in classes:
            emulated_device_class(name)
    return classes


ANSI = re.compile(r"\x1b\[[0-9;]*m")
# The last line of a failing task's log that names its error: an `error: …` line, or the exception.
TASK_ERROR = re.compile(r"^\s*(?:error|(?:[\w.]+\.)?(?:\w*Error|\w*Exception)): (.+)$")
FAILED_TASK = re.compile(r"Inner task failed: '([^']+)'")
TASK_START = re.compile(r"Executing task '([^']+)'")


def _is_verbose(verbose: bool | None) -> bool:
    """None: verbose when the root logger shows debug messages (`edgecompress -v`)."""
    return logging.getLogger().isEnabledFor(logging.DEBUG) if verbose is None else verbose


@contextlib.contextmanager
def _task_output(log_path: Path, verbose: bool) -> Iterator[None]:
    """kfp.local prints every task's executor input/output JSON and log (~1,300 lines a run) with ANSI
    colours: all of it goes to `log_path`, and to stdout too only when verbose (warnings and log records
    go to the log unless verbose); the colours only when verbose on a terminal."""
    from kfp.local import logging_utils

    colours = {k: v for k, v in vars(logging_utils.Color).items() if not k.startswith("_")}
    plain = not (verbose and sys.stdout.isatty())
    with contextlib.ExitStack() as stack:
        if plain:
            for key in colours:
                setattr(logging_utils.Color, key, "")
            stack.callback(lambda: [setattr(logging_utils.Color, k, v) for k, v in colours.items()])
        log_path.parent.mkdir(parents=True, exist_ok=True)
        out = stack.enter_context(log_path.open("a", encoding="utf-8"))
        stack.enter_context(contextlib.redirect_stdout(_Tee(out, sys.stdout) if verbose else out))
        if not verbose:
            stack.enter_context(warnings.catch_warnings())
            warnings.showwarning = lambda msg, cat, fn, ln, file=None, line=None: out.write(
                warnings.formatwarning(msg, cat, fn, ln, line)
            )
            root = logging.getLogger()
            handlers = root.handlers[:]
            handler = logging.StreamHandler(out)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            root.handlers[:] = [handler]
            stack.callback(lambda: root.handlers.__setitem__(slice(None), handlers))
        yield


class _Tee:
    """stdout to the log file and the terminal (verbose runs keep the log too)."""

    def __init__(self, *streams) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def task_error(log_text: str, task: str) -> str | None:
    """The failing task's own error line (`ConfigError: …` → its message) from kfp.local's log."""
    lines = ANSI.sub("", log_text).splitlines()
    starts = [
        i for i, line in enumerate(lines) if TASK_START.search(line) and TASK_START.search(line)[1] == task
    ]
    if not starts:
        return None
    section = lines[starts[-1] + 1 :]
    end = next((i for i, line in enumerate(section) if TASK_START.search(line)), len(section))
    found = [m[1].strip() for m in map(TASK_ERROR.match, section[:end]) if m]
    return found[-1] if found else None


def _failure(name: str, exc: Exception, log_path: Path, verbose: bool) -> EdgeCompressError:
    """One message naming the failing task and its own error line (no traceback, no colour)."""
    message = ANSI.sub("", str(exc))
    failed = FAILED_TASK.search(message)
    where = f"above and in {log_path}" if verbose else str(log_path)
    if failed is None:
        return EdgeCompressError(f"the {name} pipeline failed: {message} (the log is {where})")
    cause = task_error(log_path.read_text(errors="replace"), failed[1]) if log_path.exists() else None
    return EdgeCompressError(
        f"the {name} pipeline failed in task '{failed[1]}': {cause or 'see its log'} (the task's log: {where})"
    )


def run_pipeline(
    pipeline: Callable[..., Any],
    arguments: dict[str, Any],
    run_dir: Path,
    name: str,
    verbose: bool | None = None,
    farm: bool = True,
) -> tuple[Any, Path, float]:
    """Run one pipeline with kfp.local under `run_dir` (MLflow there too unless MLFLOW_TRACKING_URI is
    set; a loopback farm unless `farm_url` is given or the pipeline benchmarks nothing, `farm=False`). Returns the pipeline's output, the run's folder
    and the seconds it took. The tasks' logs go to `run_dir/pipeline.log` unless `verbose` (default:
    the root logger's debug level, `edgecompress -v`)."""
    from kfp import local

    run_dir = Path(run_dir).resolve()
    verbose = _is_verbose(verbose)
    log_path = run_dir / "pipeline.log"
    os.environ.setdefault("MLFLOW_TRACKING_URI", lineage.default_tracking_uri(run_dir))
    if arguments.get("track", True):
        lineage.check_reachable(os.environ["MLFLOW_TRACKING_URI"])
    os.environ.setdefault("EDGECOMPRESS_NO_PROGRESS", "1")
    root = run_dir / "kfp"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    before = set(root.glob(f"{name}-*")) if root.exists() else set()
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        # the tasks' pipeline run (their MLflow parent), from the environment as on a cluster
        stack.enter_context(_environ(lineage.PIPELINE_RUN_ENV, f"{name}-{uuid.uuid4().hex}"))
        if not os.environ.get(STORAGE_ENV):  # the NAS fan-out's tasks share a study: one file here
            stack.enter_context(_environ(STORAGE_ENV, f"sqlite:///{run_dir / 'nas-studies.db'}"))
        if farm and not arguments.get("farm_url"):
            farm = stack.enter_context(_local_farm(_check_device_classes(arguments), run_dir))
            arguments = {**arguments, "farm_url": farm}
        if arguments.get("track", True):
            stack.enter_context(_ended_parent_run())
        if not verbose:
            print(f"running the {name} pipeline locally; task logs: {log_path}", file=sys.stderr)
        try:
            with _task_output(log_path, verbose):
                output = pipeline(**arguments)
        except RuntimeError as exc:
            raise _failure(name, exc, log_path, verbose) from None
    runs = sorted(set(root.glob(f"{name}-*")) - before)
    if not runs:
        raise EdgeCompressError(f"the {name} pipeline left no run under {root}")
    return output, runs[-1], time.perf_counter() - start


def run_edge_compression(
    chain: Sequence[str], arguments: dict[str, Any], output_dir: Path, verbose: bool | None = None
) -> LocalRunResult:
    """`edgecompress run`: train → chain → evaluate → edge-benchmark → gate, locally."""
    from edgecompress.pipelines.edge_compression import PIPELINE_NAME, build_pipeline

    pipeline = build_pipeline(chain)
    validate_arguments(arguments)
    task, _, seconds = run_pipeline(pipeline, arguments, output_dir, PIPELINE_NAME, verbose)
    gate_path = Path(task.output.path)
    return LocalRunResult(
        json.loads(gate_path.read_text()),
        gate_path,
        Path(output_dir).resolve() / "kfp",
        os.environ["MLFLOW_TRACKING_URI"],
        seconds,
        bool(arguments.get("track", True)),
    )


def run_sensitivity(
    arguments: dict[str, Any], run_dir: Path, parallelism: int = 2, verbose: bool | None = None
) -> tuple[dict[str, Any], Path]:
    """The sensitivity pipeline (train → units → ParallelFor of unit tasks → combine) locally, at most
    `parallelism` unit tasks at once; returns the combined analysis and the run's folder."""
    from edgecompress.pipelines.sensitivity import PIPELINE_NAME, build_pipeline

    pipeline = build_pipeline(parallelism=parallelism)
    task, run, _ = run_pipeline(pipeline, arguments, run_dir, PIPELINE_NAME, verbose, farm=False)
    return json.loads(Path(task.output.path).read_text()), run


def run_retrain_on_drift(
    chain: Sequence[str], arguments: dict[str, Any], run_dir: Path, output_dir: Path
) -> dict[str, Any]:
    """`edgecompress drift --retrain`: the retrain_on_drift pipeline (the one a KFP recurring run
    schedules); the drift result and report are copied to `output_dir`."""
    from edgecompress.pipelines.retrain_on_drift import PIPELINE_NAME, build_pipeline

    os.environ.setdefault("MLFLOW_TRACKING_URI", lineage.tracking_uri())
    _, run, _ = run_pipeline(build_pipeline(chain), arguments, run_dir, PIPELINE_NAME)
    result = json.loads((run / "drift-check" / "result").read_text())
    with atomic_path(Path(output_dir), directory=True) as tmp:
        (tmp / "result.json").write_text(json.dumps(result, indent=2, default=float))
        (tmp / "report.html").write_text((run / "drift-check" / "report").read_text())
    retrain = None
    promoted = sorted(run.rglob("promote/result"))
    gates = sorted(run.rglob("accuracy-gate/results"))
    if gates:
        retrain = {"gate": json.loads(gates[-1].read_text()), "promoted": [], "refused": []}
        if promoted:
            retrain.update(json.loads(promoted[-1].read_text()))
    return {
        "drift": result,
        "report": str(Path(output_dir) / "report.html"),
        "retrain": retrain,
        "pipeline_root": str(run),
    }


@contextlib.contextmanager
def _environ(var: str, value: str) -> Iterator[None]:
    previous = os.environ.get(var)
    os.environ[var] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = previous


@contextlib.contextmanager
def _ended_parent_run() -> Iterator[None]:
    """The pipeline's MLflow parent run ends with the command, FINISHED or FAILED (its tasks find it
    by a tag this run gives them through the environment)."""
    previous = os.environ.get(lineage.LOCAL_RUN_ENV)
    local_run = uuid.uuid4().hex
    os.environ[lineage.LOCAL_RUN_ENV] = local_run
    status = "FAILED"
    try:
        yield
        status = "FINISHED"
    finally:
        if previous is None:
            os.environ.pop(lineage.LOCAL_RUN_ENV, None)
        else:
            os.environ[lineage.LOCAL_RUN_ENV] = previous
        try:
            lineage.end_local_pipeline_runs(local_run, status)
        except Exception as exc:  # the pipeline's own outcome (or error) is what the user needs
            log.warning("could not end the pipeline's MLflow parent run: %s", exc)


@contextlib.contextmanager
def _local_farm(classes: list[str], run_dir: Path) -> Iterator[str]:
    """A loopback farm (controller + one emulated agent per class) for the pipeline's edge-benchmark
    tasks; yields its URL and gives the tasks its client token through the environment."""
    from edgecompress.farm.client import CLIENT_TOKEN_ENV
    from edgecompress.farm.local import local_farm

    with local_farm(classes, directory=Path(run_dir) / "farm") as farm:
        previous = os.environ.get(CLIENT_TOKEN_ENV)
        os.environ[CLIENT_TOKEN_ENV] = farm.client_token
        log.info("local device farm at %s (emulated agents: %s)", farm.url, ", ".join(classes))
        try:
            yield farm.url
        finally:
            if previous is None:
                os.environ.pop(CLIENT_TOKEN_ENV, None)
            else:
                os.environ[CLIENT_TOKEN_ENV] = previous
