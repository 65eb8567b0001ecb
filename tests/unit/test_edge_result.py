"""The edge benchmark's typed result (issue 27 item 5): the step's JSON goes through
`EdgeBenchmarkResult` both ways, keeps every key the runner and the farm recorded, and a result that
lacks what reports read is a named error."""

from __future__ import annotations

import json

import pytest

from edgecompress.edge import (
    ClassBenchmark,
    EdgeBenchmarkConfig,
    EdgeBenchmarkResult,
    Measurement,
    edge_benchmark_step,
)
from edgecompress.errors import BenchmarkError
from edgecompress.step import Lineage


def test_the_step_result_round_trips_through_the_type(trained_model, tmp_path):
    config = EdgeBenchmarkConfig(
        ["rpi4-emulated"], Measurement(bench_min_runs=20, bench_min_duration_s=0.02, bench_warmup_runs=2)
    )
    out = edge_benchmark_step(
        trained_model, config, tmp_path / "bench.json", tmp_path / "report.html", Lineage(enabled=False)
    )
    saved = json.loads((tmp_path / "bench.json").read_text())
    typed = EdgeBenchmarkResult.from_json(saved)
    assert typed.to_json() == saved == out
    r = typed.results["rpi4-emulated"]
    assert r.emulated is True and r.runs >= 20 and len(r.samples_ms) == min(r.runs, len(r.samples_ms))
    assert r.latency_ms["p50"] > 0 and r.extra["device_class"] == "rpi4-emulated"  # the rest kept as it came
    assert "emulated" in (tmp_path / "report.html").read_text()


def test_a_result_without_latencies_is_a_named_error():
    with pytest.raises(BenchmarkError, match=r"lacks \['latency_ms', 'samples_ms'\]"):
        ClassBenchmark.from_json({"runs": 3, "load_ms": 1.0, "peak_rss_bytes": 1, "emulated": True})
