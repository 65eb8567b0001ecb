"""What the controller accepts as a benchmark result: the runner's schema, checked, not trusted.

An enrolled agent can still be buggy or compromised, so a `done` result must be a plausible
measurement: the runner's schema tag, a positive run count, finite positive latencies in order
(min ≤ p50 ≤ p90 ≤ p99 ≤ max, mean within [min, max]), raw samples whose count matches the run
count (capped at the runner's MAX_SAMPLES_KEPT, with `samples_truncated` saying so), each finite and
positive, and no NaN or Infinity anywhere. Who ran it (agent id, device class, `emulated`) is not
taken from the payload: `stamp` overwrites it from the enrolment and the job.
"""

from __future__ import annotations

import math
from typing import Any

from edgecompress.farm.runner import MAX_SAMPLES_KEPT, SCHEMA

PERCENTILES = ("min", "p50", "p90", "p99", "max")


class ResultRejected(ValueError):
    """The result is not a plausible measurement (HTTP 422 with this reason)."""


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _all_finite(value: Any, path: str = "result") -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ResultRejected(f"{path} is {value}: results must be finite numbers")
    if isinstance(value, dict):
        for k, v in value.items():
            _all_finite(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _all_finite(v, f"{path}[{i}]")


def check_result(result: dict[str, Any]) -> None:
    """Raise ResultRejected unless `result` is a plausible benchmark result."""
    _all_finite(result)
    if result.get("schema") != SCHEMA:
        raise ResultRejected(f"result.schema must be {SCHEMA!r}, got {result.get('schema')!r}")
    runs = result.get("runs")
    if not isinstance(runs, int) or isinstance(runs, bool) or runs < 1:
        raise ResultRejected(f"result.runs must be a positive integer, got {runs!r}")
    latency = result.get("latency_ms")
    if not isinstance(latency, dict):
        raise ResultRejected("result.latency_ms is missing")
    for key in (*PERCENTILES, "mean"):
        if not _finite(latency.get(key)) or latency[key] <= 0:
            raise ResultRejected(
                f"result.latency_ms.{key} must be a finite positive number, got {latency.get(key)!r}"
            )
    if "stdev" in latency and (not _finite(latency["stdev"]) or latency["stdev"] < 0):
        raise ResultRejected("result.latency_ms.stdev must be a finite number >= 0")
    ordered = [latency[k] for k in PERCENTILES]
    if ordered != sorted(ordered):
        raise ResultRejected(f"result.latency_ms out of order (min ≤ p50 ≤ p90 ≤ p99 ≤ max): {ordered}")
    if not latency["min"] <= latency["mean"] <= latency["max"]:
        raise ResultRejected("result.latency_ms.mean lies outside [min, max]")
    samples = result.get("samples_ms")
    if not isinstance(samples, list):
        raise ResultRejected("result.samples_ms is missing")
    expected = min(runs, MAX_SAMPLES_KEPT)
    if len(samples) != expected:
        raise ResultRejected(
            f"result.samples_ms has {len(samples)} samples for {runs} runs (expected {expected})"
        )
    if bool(result.get("samples_truncated")) != (runs > MAX_SAMPLES_KEPT):
        raise ResultRejected("result.samples_truncated does not match the run count")
    if not all(_finite(s) and s > 0 for s in samples):
        raise ResultRejected("result.samples_ms must hold finite positive latencies")
    if not runs > MAX_SAMPLES_KEPT and not min(samples) <= latency["p50"] <= max(samples):
        raise ResultRejected("result.latency_ms.p50 lies outside the samples")
    for key, low in (("duration_s", 0.0), ("load_ms", 0.0), ("throughput_per_s", 0.0)):
        if key in result and (not _finite(result[key]) or result[key] < low):
            raise ResultRejected(f"result.{key} must be a finite number >= {low}")
    if not result.get("duration_s", 1.0) > 0:
        raise ResultRejected("result.duration_s must be positive")


def stamp(result: dict[str, Any], agent_id: str, device_class: str, emulated: bool) -> dict[str, Any]:
    """The result as stored: who ran it comes from the enrolment and the job, not the payload. A class
    whose profile says `emulated: qemu` gets `emulation: qemu` and `timing_meaningful: false`."""
    from edgecompress.profiles import timing_note

    out = {**result, "agent_id": agent_id, "device_class": device_class, "emulated": emulated}
    note = timing_note(device_class)
    if note:
        out.update({"emulation": "qemu", "timing_meaningful": False, "timing_note": note})
    return out
