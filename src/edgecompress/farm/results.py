"""What the controller accepts as a benchmark result: the runner's schema, checked, not trusted.

An enrolled agent can still be buggy or compromised, so a `done` result must be a plausible
measurement: the runner's schema tag, a positive run count, finite positive latencies in order
(min ≤ p50 ≤ p90 ≤ p99 ≤ max, mean within [min, max]), raw samples whose count matches the run
count (capped at the runner's MAX_SAMPLES_KEPT, with `samples_truncated` saying so), each finite and
positive, and no NaN or Infinity anywhere. Who ran it (agent id, device class, `emulated`) is not
taken from the payload: `stamp` sets every provenance field (`PROVENANCE`) from the enrolment, the
job and the class's device profile, and keeps what the agent claimed, where it disagrees, under
`agent_reported`.
"""

from __future__ import annotations

import math
from typing import Any

from edgecompress.runtime.runner import MAX_SAMPLES_KEPT, PAIR_SCHEMA, SCHEMA

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
    """Raise ResultRejected unless `result` is a plausible benchmark result: one model's, or a paired
    job's (`runner.benchmark_paired`: two such results and their ratio from the same moments)."""
    _all_finite(result)
    if result.get("schema") == PAIR_SCHEMA:
        _check_pair(result)
        return
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


def _check_pair(result: dict[str, Any]) -> None:
    results = result.get("results")
    if not isinstance(results, list) or len(results) != 2 or not all(isinstance(r, dict) for r in results):
        raise ResultRejected("a paired result needs result.results: one result per model, two in all")
    for i, each in enumerate(results):
        try:
            check_result(each)
        except ResultRejected as exc:
            raise ResultRejected(f"result.results[{i}]: {exc}") from exc
        if each.get("schema") != SCHEMA:
            raise ResultRejected(f"result.results[{i}] must be one model's result ({SCHEMA!r})")
    pairing = result.get("pairing")
    ratios = pairing.get("block_ratios") if isinstance(pairing, dict) else None
    if not isinstance(ratios, list) or not ratios or not all(_finite(r) and r > 0 for r in ratios):
        raise ResultRejected("result.pairing.block_ratios must hold finite positive ratios")
    ratio = pairing.get("ratio")
    if not _finite(ratio) or not min(ratios) <= ratio <= max(ratios):
        raise ResultRejected("result.pairing.ratio must lie within its block ratios")


def check_matches_job(result: dict[str, Any], paired_job: bool) -> None:
    """A one-model job's result is not a pair. A paired job's may be its first model's alone: an agent
    older than paired jobs runs only that, and the client then measures the models one job each."""
    if result.get("schema") == PAIR_SCHEMA and not paired_job:
        raise ResultRejected("this job has one model: a paired result (two models) is not its result")


# The fields of a stored result that say where and how it was measured. The controller sets every one
# of them (`stamp`); the payload's own values, where they disagree, are kept only under
# `agent_reported` (docs/farm.md, "Provenance of a stored result").
PROVENANCE = (
    "job_id",
    "agent_id",
    "device_class",
    "backend",
    "emulated",
    "device_description",
    "timing_meaningful",
    "emulation",
    "timing_note",
)


def provenance(
    job_id: int, agent_id: str, device_class: str, enrolled_emulated: bool, agent_says_emulated: bool = False
) -> dict[str, Any]:
    """The provenance fields of a result of job `job_id`, from the controller's own knowledge: the
    job (id, class), the agent's enrolment (id, `emulated`) and the class's device profile.

    `emulated` is true when the enrolment says so, when the class's profile is emulated or QEMU
    (whatever the enrolment says), or when the agent itself says so: a result can be labelled
    emulated by anyone, but presented as a real board only when the enrolment, the profile and the
    agent all agree. `timing_meaningful` is false for a QEMU class. `device_description` is the
    profile's (a class without a profile says so)."""
    from edgecompress.runtime.devices import profiles, timing_note

    profile = profiles().get(device_class)
    emulated = bool(enrolled_emulated or agent_says_emulated or (profile is not None and profile.emulated))
    note = timing_note(device_class)
    out: dict[str, Any] = {
        "job_id": job_id,
        "agent_id": agent_id,
        "device_class": device_class,
        "backend": "farm",
        "emulated": emulated,
        "device_description": profile.description if profile else f"{device_class} (no device profile)",
        "timing_meaningful": note is None,
    }
    if note:
        out.update({"emulation": "qemu", "timing_note": note})
    return out


def stamp(
    result: dict[str, Any], agent_id: str, device_class: str, emulated: bool, job_id: int | None = None
) -> dict[str, Any]:
    """The result as stored: every provenance field comes from `provenance` (the enrolment, the job,
    the class's profile), never from the payload. Payload values that disagree move to
    `agent_reported` (`device.emulated` as `agent_reported["device.emulated"]`); the payload's own
    `agent_reported` is dropped (only the controller writes it). A paired result: each model's too."""
    if result.get("schema") == PAIR_SCHEMA and isinstance(result.get("results"), list):
        result = {
            **result,
            "results": [stamp(r, agent_id, device_class, emulated, job_id) for r in result["results"]],
        }
    payload = {k: v for k, v in result.items() if k != "agent_reported"}
    device = payload.get("device") if isinstance(payload.get("device"), dict) else None
    says_emulated = (
        payload.get("emulated") is True
        or bool(payload.get("emulated_profile"))
        or (device is not None and device.get("emulated") is True)
    )
    known = provenance(
        job_id if job_id is not None else payload.get("job_id"),
        agent_id,
        device_class,
        emulated,
        says_emulated,
    )
    reported = {k: payload.pop(k) for k in PROVENANCE if k in payload and payload[k] != known.get(k)}
    out = {**payload, **known}
    if device is not None:
        if "emulated" in device and device["emulated"] != known["emulated"]:
            reported["device.emulated"] = device["emulated"]
        out["device"] = {**device, "emulated": known["emulated"]}
    if reported:
        out["agent_reported"] = reported
    return out
