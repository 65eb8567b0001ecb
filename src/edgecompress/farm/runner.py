"""The benchmark runner: one ONNX model, one device, one result in a fixed schema.

Method (DESIGN.md): load time measured apart from inference; warm-up runs; then timed runs until
both a minimum duration and a minimum count are met; latency percentiles, mean, stdev, throughput,
peak memory, thermal state before/after; the raw samples are kept. `run_isolated` runs it in a
child process with a wall-clock timeout, a memory limit and CPU affinity, so a hostile or broken
model cannot hang or kill the caller. The same code runs on a farm agent and in local emulation.

Run directly: `python -m edgecompress.farm.runner --model m.onnx --settings '{"threads": 1}'`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress.errors import BenchmarkError
from edgecompress.farm import device as device_facts
from edgecompress.io import sha256_file

SCHEMA = "edgecompress.benchmark/v1"
MAX_SAMPLES_KEPT = 20_000


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
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise BenchmarkError(f"unknown benchmark settings {sorted(unknown)}; known: {sorted(known)}")
        settings = cls(**data)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.threads < 1 or self.batch_size < 1 or self.min_runs < 1 or self.warmup_runs < 0:
            raise BenchmarkError(f"benchmark settings out of range: {asdict(self)}")
        if self.min_duration_s < 0 or self.max_runs < self.min_runs:
            raise BenchmarkError(f"benchmark settings out of range: {asdict(self)}")


def _percentile(sorted_ms: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(sorted_ms), q))


def summarize(samples_ms: list[float]) -> dict[str, float]:
    s = sorted(samples_ms)
    return {
        "p50": _percentile(s, 50), "p90": _percentile(s, 90), "p99": _percentile(s, 99),
        "mean": statistics.fmean(s), "stdev": statistics.stdev(s) if len(s) > 1 else 0.0,
        "min": s[0], "max": s[-1],
    }  # fmt: skip


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


def benchmark(model_path: Path, settings: BenchmarkSettings) -> dict[str, Any]:
    """Benchmark in this process (use `run_isolated` for untrusted models)."""
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
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[settings.graph_optimization]  # fmt: skip
    opts.log_severity_level = 3
    thermal_before = device_facts.thermal_state()
    rss_before = device_facts.current_rss_bytes()
    started_at = datetime.now(UTC).isoformat()
    t0 = time.perf_counter()
    try:
        session = ort.InferenceSession(str(model_path), opts, providers=providers)
    except Exception as exc:
        raise BenchmarkError(f"ONNX Runtime cannot load {model_path.name}: {str(exc)[:300]}") from exc
    load_ms = (time.perf_counter() - t0) * 1e3
    rss_after_load = device_facts.current_rss_bytes()
    feeds = _ort_input(session, settings.batch_size, settings.seed)
    try:
        for _ in range(settings.warmup_runs):
            session.run(None, feeds)
    except Exception as exc:
        raise BenchmarkError(f"ONNX Runtime failed to run {model_path.name}: {str(exc)[:300]}") from exc
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
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "schema": SCHEMA,
        "model_sha256": sha256_file(model_path),
        "model_bytes": model_path.stat().st_size,
        "settings": asdict(settings),
        "provider_used": session.get_providers()[0],
        "providers_available": available,
        "provider_fallback": fallback,
        "onnxruntime_version": ort.__version__,
        "load_ms": load_ms,
        "runs": len(samples),
        "duration_s": duration_s,
        "latency_ms": summarize(samples),
        "throughput_per_s": len(samples) * settings.batch_size / duration_s if duration_s > 0 else 0.0,
        "peak_rss_bytes": peak_rss,
        "model_memory_bytes": max(0, rss_after_load - rss_before),
        "thermal": {"before": thermal_before, "after": device_facts.thermal_state()},
        "started_at": started_at,
        "finished_at": datetime.now(UTC).isoformat(),
        "samples_ms": samples[:MAX_SAMPLES_KEPT],
        "samples_truncated": len(samples) > MAX_SAMPLES_KEPT,
    }


def run_isolated(
    model_path: Path,
    settings: BenchmarkSettings,
    timeout_s: float = 300.0,
    memory_limit_bytes: int | None = None,
    cpu_affinity: list[int] | None = None,
) -> dict[str, Any]:
    """Run `benchmark` in a child process; raise BenchmarkError on timeout, crash or bad output."""
    settings.validate()

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
            "edgecompress.farm.runner",
            "--model",
            str(model_path),
            "--settings",
            json.dumps(asdict(settings)),
            "--output",
            str(out),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": str(settings.threads)}
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout_s, preexec_fn=limit_child, env=env
            )
        except subprocess.TimeoutExpired as exc:
            raise BenchmarkError(
                f"benchmark of {Path(model_path).name} exceeded its {timeout_s:.0f} s timeout"
            ) from exc
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or "").strip().splitlines()[-3:]
            reason = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
            raise BenchmarkError(
                f"benchmark of {Path(model_path).name} failed ({reason}): {' | '.join(tail) or 'no output'}"
            )
        return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgecompress.farm.runner",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, type=Path, help="ONNX model to benchmark")
    parser.add_argument("--settings", default="{}", help="BenchmarkSettings as JSON")
    parser.add_argument("--output", type=Path, help="write the result JSON here (default: stdout)")
    args = parser.parse_args(argv)
    try:
        result = benchmark(args.model, BenchmarkSettings.from_dict(json.loads(args.settings)))
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
