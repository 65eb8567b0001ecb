"""The benchmark runner: one ONNX model, one device, one result in a fixed schema.

Method (DESIGN.md): load time measured apart from inference; warm-up runs; then timed runs until
both a minimum duration and a minimum count are met; latency percentiles, mean, stdev, throughput,
peak memory, thermal state before/after; the raw samples are kept. `run_isolated` runs it in a
child process with a wall-clock timeout, a memory limit and CPU affinity, so a hostile or broken
model cannot hang or kill the caller. The same code runs on a farm agent and in local emulation.

Run directly: `python -m edgecompress.runtime.runner --model m.onnx --settings '{"threads": 1}'`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress.errors import BenchmarkError
from edgecompress.io import sha256_file
from edgecompress.runtime import facts as device_facts

SCHEMA = "edgecompress.benchmark/v1"
MAX_SAMPLES_KEPT = 20_000


# Bounds of every setting: the one definition, checked wherever settings arrive (controller → 422,
# agent, local runs). Beyond them a benchmark is not a measurement but a way to hurt the device.
INT_BOUNDS = {
    "threads": (1, 256),
    "batch_size": (1, 4096),
    "warmup_runs": (0, 100_000),
    "min_runs": (1, 10_000_000),
    "max_runs": (1, 10**9),
    "seed": (0, 2**32 - 1),
}
FLOAT_BOUNDS = {"min_duration_s": (0.0, 3600.0)}
GRAPH_OPTIMIZATIONS = ("all", "extended", "basic", "disabled")
PROVIDER_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,47}ExecutionProvider$")
MAX_PROVIDERS = 8


@dataclass
class BenchmarkSettings:
    threads: int = 1
    batch_size: int = 1
    warmup_runs: int = 20
    min_runs: int = 200
    min_duration_s: float = 1.0
    max_runs: int = 100_000
    providers: list[str] = field(default_factory=lambda: ["CPUExecutionProvider"])
    graph_optimization: str = "all"  # all | extended | basic | disabled
    seed: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchmarkSettings:
        """Settings from JSON-like data: unknown names, wrong types (a bool is not a number, a string
        is not an int), NaN/Infinity and values out of bounds are refused with the reason."""
        if not isinstance(data, dict):
            raise BenchmarkError(f"benchmark settings must be an object, got {type(data).__name__}")
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise BenchmarkError(f"unknown benchmark settings {sorted(unknown)}; known: {sorted(known)}")
        for name, value in data.items():
            _check_type(name, value)
        settings = cls(**{k: (float(v) if k in FLOAT_BOUNDS else v) for k, v in data.items()})
        settings.validate()
        return settings

    def validate(self, max_threads: int | None = None) -> None:
        """Raise BenchmarkError unless every setting is within its bounds (and `threads` within
        `max_threads`, the cores of the device class, when known)."""
        for name, (low, high) in {**INT_BOUNDS, **FLOAT_BOUNDS}.items():
            value = getattr(self, name)
            _check_type(name, value)
            if not low <= value <= high:
                raise BenchmarkError(f"benchmark setting {name}={value} is out of range [{low}, {high}]")
        if self.max_runs < self.min_runs:
            raise BenchmarkError(
                f"benchmark setting max_runs={self.max_runs} is below min_runs={self.min_runs}"
            )
        if max_threads is not None and self.threads > max_threads:
            raise BenchmarkError(
                f"benchmark setting threads={self.threads} exceeds the {max_threads} cores of the device class"
            )


def _check_type(name: str, value: Any) -> None:
    if name in INT_BOUNDS:
        if not isinstance(value, int) or isinstance(value, bool):
            raise BenchmarkError(f"benchmark setting {name} must be an integer, got {value!r}")
    elif name in FLOAT_BOUNDS:
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise BenchmarkError(f"benchmark setting {name} must be a finite number, got {value!r}")
    elif name == "providers":
        if (
            not isinstance(value, list)
            or not 1 <= len(value) <= MAX_PROVIDERS
            or not all(isinstance(p, str) and PROVIDER_RE.match(p) for p in value)
        ):
            raise BenchmarkError(
                f"benchmark setting providers must be 1 to {MAX_PROVIDERS} ONNX Runtime execution provider "
                f"names (e.g. CPUExecutionProvider), got {str(value)[:200]}"
            )
    elif name == "graph_optimization" and value not in GRAPH_OPTIMIZATIONS:
        raise BenchmarkError(f"benchmark setting graph_optimization must be one of {GRAPH_OPTIMIZATIONS}")


def _percentile(sorted_ms: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(sorted_ms), q))


def summarize(samples_ms: list[float]) -> dict[str, float]:
    s = sorted(samples_ms)
    return {
        "p50": _percentile(s, 50),
        "p90": _percentile(s, 90),
        "p99": _percentile(s, 99),
        "mean": statistics.fmean(s),
        "stdev": statistics.stdev(s) if len(s) > 1 else 0.0,
        "min": s[0],
        "max": s[-1],
    }


def _ort_input(session: Any, batch_size: int, seed: int) -> dict[str, np.ndarray]:
    feeds = {}
    rng = np.random.default_rng(seed)
    for inp in session.get_inputs():
        shape = [batch_size if not isinstance(d, int) or d <= 0 else d for d in inp.shape]
        shape[0] = batch_size
        dtype = {
            "tensor(float)": np.float32,
            "tensor(float16)": np.float16,
            "tensor(int64)": np.int64,
            "tensor(uint8)": np.uint8,
            "tensor(int8)": np.int8,
        }.get(inp.type)
        if dtype is None:
            raise BenchmarkError(f"model input {inp.name!r} has unsupported type {inp.type}")
        feeds[inp.name] = rng.random(shape).astype(dtype)
    return feeds


def _open_session(model_path: Path, settings: BenchmarkSettings) -> tuple[Any, str | None, float]:
    """An ONNX Runtime session with the settings' threads, providers and graph level: (session, the
    provider fallback if any, load time in ms)."""
    import onnxruntime as ort

    model_path = Path(model_path)
    if not model_path.exists():
        raise BenchmarkError(f"model {model_path} does not exist")
    available = ort.get_available_providers()
    providers = [p for p in settings.providers if p in available]
    fallback = None
    if not providers:
        providers = ["CPUExecutionProvider"]
    if providers != settings.providers:
        fallback = f"requested {settings.providers}, available {available}: using {providers}"
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = settings.threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[settings.graph_optimization]
    opts.log_severity_level = 3
    t0 = time.perf_counter()
    try:
        session = ort.InferenceSession(str(model_path), opts, providers=providers)
    except Exception as exc:
        raise BenchmarkError(f"ONNX Runtime cannot load {model_path.name}: {str(exc)[:300]}") from exc
    return session, fallback, (time.perf_counter() - t0) * 1e3


def _run(session: Any, feeds: dict[str, np.ndarray], model_path: Path) -> None:
    try:
        session.run(None, feeds)
    except Exception as exc:
        raise BenchmarkError(f"ONNX Runtime failed to run {Path(model_path).name}: {str(exc)[:300]}") from exc


def _result(
    model_path: Path,
    settings: BenchmarkSettings,
    session: Any,
    fallback: str | None,
    samples: list[float],
    duration_s: float,
    load_ms: float,
    memory_bytes: int,
    thermal_before: Any,
    started_at: str,
) -> dict[str, Any]:
    import onnxruntime as ort

    return {
        "schema": SCHEMA,
        "model_sha256": sha256_file(model_path),
        "model_bytes": Path(model_path).stat().st_size,
        "settings": asdict(settings),
        "provider_used": session.get_providers()[0],
        "providers_available": ort.get_available_providers(),
        "provider_fallback": fallback,
        "onnxruntime_version": ort.__version__,
        "load_ms": load_ms,
        "runs": len(samples),
        "duration_s": duration_s,
        "latency_ms": summarize(samples),
        "throughput_per_s": len(samples) * settings.batch_size / duration_s if duration_s > 0 else 0.0,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "model_memory_bytes": memory_bytes,
        "thermal": {"before": thermal_before, "after": device_facts.thermal_state()},
        "started_at": started_at,
        "finished_at": datetime.now(UTC).isoformat(),
        "samples_ms": samples[:MAX_SAMPLES_KEPT],
        "samples_truncated": len(samples) > MAX_SAMPLES_KEPT,
    }


def benchmark(model_path: Path, settings: BenchmarkSettings) -> dict[str, Any]:
    """Benchmark in this process (use `run_isolated` for untrusted models)."""
    model_path = Path(model_path)
    thermal_before = device_facts.thermal_state()
    rss_before = device_facts.current_rss_bytes()
    started_at = datetime.now(UTC).isoformat()
    session, fallback, load_ms = _open_session(model_path, settings)
    rss_after_load = device_facts.current_rss_bytes()
    feeds = _ort_input(session, settings.batch_size, settings.seed)
    for _ in range(settings.warmup_runs):
        _run(session, feeds, model_path)
    samples: list[float] = []
    clock = time.perf_counter_ns
    start = clock()
    deadline = start + int(settings.min_duration_s * 1e9)
    while len(samples) < settings.max_runs:
        t = clock()
        session.run(None, feeds)
        now = clock()
        samples.append((now - t) / 1e6)
        if len(samples) >= settings.min_runs and now >= deadline:
            break
    duration_s = (clock() - start) / 1e9
    memory = max(0, rss_after_load - rss_before)
    return _result(
        model_path,
        settings,
        session,
        fallback,
        samples,
        duration_s,
        load_ms,
        memory,
        thermal_before,
        started_at,
    )


# A paired benchmark alternates the two models in blocks of about this long. This machine's speed moves
# in phases of a second or more (an AVX2 EPYC VM: one model's p50 per 1-s measurement moves between 0.14
# and 0.20 ms), so two models measured one after the other can land in different phases; blocks much
# shorter than a phase put both models in every phase, and the ratio of their p50s keeps only what the
# models themselves differ by.
PAIR_BLOCK_S = 0.02
PAIR_MIN_BLOCK_RUNS = 3
PAIR_SCHEMA = "edgecompress.benchmark-pair/v1"
PAIRING_METHOD = (
    "both models in one process, alternating in blocks of about {block_ms:.0f} ms (ABBA order), one untimed "
    "call after each switch, each model timed until it has its own minimum runs and duration; the ratio "
    "is the median over adjacent block pairs of first/second block medians"
)


def benchmark_paired(first: Path, second: Path, settings: BenchmarkSettings) -> dict[str, Any]:
    """Two models benchmarked together in this process, alternating in short blocks: one result per
    model (the `benchmark` schema), for a ratio that a change in the machine's speed cannot bias.

    Each block starts with one untimed call, so the model's weights are back in cache after the
    other model ran; the block length adapts to each model's call time, measured during warm-up."""
    paths = (Path(first), Path(second))
    thermal_before = device_facts.thermal_state()
    started_at = datetime.now(UTC).isoformat()
    sessions, fallbacks, loads, memory = [], [], [], []
    for path in paths:
        rss_before = device_facts.current_rss_bytes()
        session, fallback, load_ms = _open_session(path, settings)
        memory.append(max(0, device_facts.current_rss_bytes() - rss_before))
        sessions.append(session)
        fallbacks.append(fallback)
        loads.append(load_ms)
    feeds = [_ort_input(s, settings.batch_size, settings.seed) for s in sessions]
    clock = time.perf_counter_ns
    call_ns = [0, 0]
    for i in range(max(settings.warmup_runs, 1)):
        for m in (0, 1):
            t = clock()
            _run(sessions[m], feeds[m], paths[m])
            call_ns[m] = clock() - t if i == 0 else min(call_ns[m], clock() - t)
    block = [
        min(settings.max_runs, max(PAIR_MIN_BLOCK_RUNS, math.ceil(PAIR_BLOCK_S * 1e9 / max(ns, 1))))
        for ns in call_ns
    ]
    samples: list[list[float]] = [[], []]
    block_ratios: list[float] = []  # first/second, one per pair of adjacent blocks (one moment)
    timed_ns = [0, 0]
    min_ns = int(settings.min_duration_s * 1e9)
    blocks = 0
    start = clock()

    def done(m: int) -> bool:
        return len(samples[m]) >= settings.max_runs or (
            len(samples[m]) >= settings.min_runs and timed_ns[m] >= min_ns
        )

    while not (done(0) and done(1)):
        medians: dict[int, float] = {}
        for m in (0, 1) if blocks % 2 == 0 else (1, 0):
            if len(samples[m]) >= settings.max_runs:  # a model already done keeps pace with the other
                continue
            sessions[m].run(None, feeds[m])  # untimed: the other model's data has left the cache
            took_ms = []
            for _ in range(min(block[m], settings.max_runs - len(samples[m]))):
                t = clock()
                sessions[m].run(None, feeds[m])
                took = clock() - t
                took_ms.append(took / 1e6)
                timed_ns[m] += took
            samples[m].extend(took_ms)
            medians[m] = statistics.median(took_ms)
        if len(medians) == 2 and medians[1] > 0:
            block_ratios.append(medians[0] / medians[1])
        blocks += 1
    duration_s = (clock() - start) / 1e9
    results = [
        _result(
            paths[m],
            settings,
            sessions[m],
            fallbacks[m],
            samples[m],
            duration_s,
            loads[m],
            memory[m],
            thermal_before,
            started_at,
        )
        for m in (0, 1)
    ]
    return {
        "schema": PAIR_SCHEMA,
        "results": results,
        "pairing": {
            "method": PAIRING_METHOD.format(block_ms=PAIR_BLOCK_S * 1e3),
            "block_runs": block,
            "blocks": blocks,
            "ratio": statistics.median(block_ratios),  # the first block pair always has both models
            "block_ratios": block_ratios[:MAX_SAMPLES_KEPT],
        },
        "duration_s": duration_s,
    }


def _forked_child(
    model_path: str,
    settings: dict[str, Any],
    out: str,
    memory_limit_bytes: int | None,
    cpu_affinity: list[int] | None,
    check_model: bool = True,
    paired_with: str | None = None,
) -> None:
    """Body of a forkserver child: limits first, then the model check and the benchmark (paired with a
    second model if given); errors go to the result file. Checking here, under the memory limit, keeps
    a hostile model's parse out of the agent's own process."""
    if memory_limit_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))
    if cpu_affinity:
        os.sched_setaffinity(0, cpu_affinity)
    try:
        result: dict[str, Any] = _benchmark_checked(
            Path(model_path), BenchmarkSettings(**settings), check_model, paired_with
        )
    except BenchmarkError as exc:
        result = {"error": str(exc)}
    except MemoryError:
        result = {"error": f"out of memory (limit {memory_limit_bytes} bytes)"}
    Path(out).write_text(json.dumps(result))
    os._exit(0)  # skip interpreter teardown (ONNX Runtime's unload alone costs tens of ms)


def _benchmark_checked(
    model_path: Path, settings: BenchmarkSettings, check_model: bool, paired_with: str | Path | None
) -> dict[str, Any]:
    paths = [Path(model_path)] + ([Path(paired_with)] if paired_with else [])
    if check_model:
        from edgecompress.runtime.modelcheck import check_onnx

        for path in paths:
            check_onnx(path)
    return benchmark_paired(*paths, settings) if paired_with else benchmark(paths[0], settings)


def _die_with_parent() -> None:
    """Own process group (the agent kills the whole group at the deadline: the child and anything
    it started) and SIGKILL when the parent dies (Linux PR_SET_PDEATHSIG). The parent is the
    forkserver, which exits when the agent does, so a kill -9'd agent takes its benchmark along."""
    parent = os.getppid()
    os.setpgid(0, 0)
    # A forkserver child holds the forkserver's "alive" pipe, which keeps the forkserver running
    # while the child lives; let go of it, so that the forkserver exits with the agent (and the
    # parent-death signal below then reaches this child).
    from multiprocessing import forkserver

    alive_fd = getattr(forkserver._forkserver, "_forkserver_alive_fd", None)
    if alive_fd is not None:
        with contextlib.suppress(OSError):
            os.close(alive_fd)
        forkserver._forkserver._forkserver_alive_fd = None
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


_FORKSERVER: Any = None


def _forkserver_context() -> Any:
    """A multiprocessing forkserver with numpy, ONNX Runtime and this module preloaded: each
    benchmark child is forked from it in milliseconds instead of starting a fresh interpreter, and
    still shares nothing with the caller (the server is a separate, clean process)."""
    global _FORKSERVER
    if _FORKSERVER is None:
        import multiprocessing

        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["edgecompress.runtime._preload"])
        _FORKSERVER = ctx
    return _FORKSERVER


def _warm_child(conn: Any) -> None:
    """A child forked ahead of time; it waits for one job, runs it and exits."""
    _die_with_parent()
    try:
        args = conn.recv()
    except (EOFError, OSError):  # the parent went away: nothing to do
        os._exit(0)
    conn.close()
    _forked_child(*args)


_NEXT_CHILD: list[Any] = []  # at most one pre-forked (process, connection), started while idle
_PREFORKING: list[threading.Thread] = []  # the thread forking it


def _prefork(ctx: Any) -> None:
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_warm_child, args=(child,), daemon=True)
    proc.start()
    child.close()
    _NEXT_CHILD.append((proc, parent))


def _run_forked(
    model_path: Path,
    settings: BenchmarkSettings,
    timeout_s: float,
    memory_limit_bytes: int | None,
    cpu_affinity: list[int] | None,
    check_model: bool,
    cancel: threading.Event | None = None,
    paired_with: Path | None = None,
) -> dict[str, Any]:
    ctx = _forkserver_context()
    if _PREFORKING:
        _PREFORKING.pop().join()
    if not _NEXT_CHILD or not _NEXT_CHILD[0][0].is_alive():
        _NEXT_CHILD.clear()
        _prefork(ctx)
    proc, conn = _NEXT_CHILD.pop()
    name = _label(model_path, paired_with)
    with tempfile.TemporaryDirectory(prefix="edgecompress-bench-") as tmp:
        out = Path(tmp) / "result.json"
        conn.send(
            (
                str(model_path),
                asdict(settings),
                str(out),
                memory_limit_bytes,
                cpu_affinity,
                check_model,
                str(paired_with) if paired_with else None,
            )
        )
        conn.close()
        end = time.monotonic() + max(0.0, timeout_s)
        while proc.is_alive() and not (cancel is not None and cancel.is_set()):
            left = end - time.monotonic()
            if left <= 0:
                break
            proc.join(left if cancel is None else min(0.1, left))  # with `cancel`: look every 0.1 s
        # Fork the next job's child in the background, off this job's path to its result.
        _PREFORKING.append(threading.Thread(target=_prefork, args=(ctx,), daemon=True))
        _PREFORKING[0].start()
        if proc.is_alive() and cancel is not None and cancel.is_set():
            _kill_group(proc.pid)
            proc.kill()
            proc.join(5)
            raise Cancelled(f"benchmark of {name} stopped: its job's lease is gone")
        if proc.is_alive():
            _kill_group(proc.pid)  # the child's own group: it and anything it started
            proc.kill()
            proc.join(5)
            raise BenchmarkError(f"benchmark of {name} exceeded its {timeout_s:.0f} s timeout")
        if proc.exitcode != 0 or not out.exists():
            code = proc.exitcode or 0
            reason = f"signal {-code}" if code < 0 else f"exit {code}"
            raise BenchmarkError(f"benchmark of {name} failed ({reason}): the benchmark process died")
        result = json.loads(out.read_text())
    if "error" in result:
        raise BenchmarkError(result["error"])
    return result


def _label(model_path: Path, paired_with: Path | None) -> str:
    return Path(model_path).name + (f" paired with {Path(paired_with).name}" if paired_with else "")


class Cancelled(BenchmarkError):
    """The benchmark was stopped on purpose (its job's lease was revoked or the job cancelled)."""


def _kill_group(pgid: int) -> None:
    import signal

    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def run_isolated(
    model_path: Path,
    settings: BenchmarkSettings,
    timeout_s: float = 300.0,
    memory_limit_bytes: int | None = None,
    cpu_affinity: list[int] | None = None,
    start_method: str = "spawn",
    check_model: bool | None = None,
    cancel: threading.Event | None = None,
    paired_with: Path | None = None,
) -> dict[str, Any]:
    """Run `benchmark` in a child process (`benchmark_paired` with `paired_with`); raise BenchmarkError
    on timeout, crash or bad output.

    `start_method="spawn"` starts a fresh interpreter per run; "forkserver" forks the child from a
    preloaded server process (what farm agents use: same isolation, ~1 s less per job), in its own
    process group, killed with its parent. `check_model` verifies an untrusted model inside the
    limited child (`modelcheck.check_onnx`); by default on the agents' path (forkserver) only.
    `cancel` (forkserver only): when set, the child's group is killed within 0.1 s and `Cancelled` is
    raised (the agent's job lost its lease: nobody wants the result)."""
    settings.validate()
    check = start_method == "forkserver" if check_model is None else check_model
    if start_method == "forkserver":
        return _run_forked(
            Path(model_path),
            settings,
            timeout_s,
            memory_limit_bytes,
            cpu_affinity,
            check,
            cancel,
            paired_with,
        )

    def limit_child() -> None:  # runs in the child before exec
        if memory_limit_bytes:
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))
        if cpu_affinity:
            os.sched_setaffinity(0, cpu_affinity)

    with tempfile.TemporaryDirectory(prefix="edgecompress-bench-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [
            sys.executable,
            "-m",
            "edgecompress.runtime.runner",
            "--model",
            str(model_path),
            "--settings",
            json.dumps(asdict(settings)),
            "--output",
            str(out),
            *(["--check-model"] if check else []),
            *(["--paired-with", str(paired_with)] if paired_with else []),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": str(settings.threads)}
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout_s, preexec_fn=limit_child, env=env
            )
        except subprocess.TimeoutExpired as exc:
            raise BenchmarkError(
                f"benchmark of {_label(model_path, paired_with)} exceeded its {timeout_s:.0f} s timeout"
            ) from exc
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or "").strip().splitlines()[-3:]
            reason = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
            raise BenchmarkError(
                f"benchmark of {_label(model_path, paired_with)} failed ({reason}): "
                f"{' | '.join(tail) or 'no output'}"
            )
        return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgecompress.runtime.runner",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, type=Path, help="ONNX model to benchmark")
    parser.add_argument("--settings", default="{}", help="BenchmarkSettings as JSON")
    parser.add_argument("--output", type=Path, help="write the result JSON here (default: stdout)")
    parser.add_argument("--check-model", action="store_true", help="verify the ONNX model first (untrusted)")
    parser.add_argument(
        "--paired-with", type=Path, help="a second model, benchmarked with the first in alternating blocks"
    )
    args = parser.parse_args(argv)
    try:
        settings = BenchmarkSettings.from_dict(json.loads(args.settings))
        result = _benchmark_checked(args.model, settings, args.check_model, args.paired_with)
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(result)
    if args.output:
        args.output.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
