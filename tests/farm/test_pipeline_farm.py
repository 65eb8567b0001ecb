"""The pipeline's edge-benchmark goes through a controller and agents (a loopback farm by default)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecompress.runtime.devices import DEFAULT_DEVICE_CLASSES
from tests.farm.conftest import TINY


def test_edge_benchmark_step_runs_through_a_local_farm(tiny_model: Path, tmp_path: Path) -> None:
    """The step the edge_benchmark component calls, with no farm URL (a bare .onnx Model artifact)."""
    from edgecompress.edge import EdgeBenchmarkConfig, Measurement, edge_benchmark_step
    from edgecompress.io import sha256_file
    from edgecompress.step import Lineage

    config = EdgeBenchmarkConfig(
        DEFAULT_DEVICE_CLASSES,
        Measurement(
            bench_min_runs=TINY["min_runs"],
            bench_min_duration_s=TINY["min_duration_s"],
            bench_warmup_runs=TINY["warmup_runs"],
        ),
        timeout_s=120,
    )
    out = edge_benchmark_step(
        tiny_model,
        config,
        tmp_path / "bench.json",
        tmp_path / "report.html",
        lineage_ctx=Lineage(enabled=False),
    )
    assert set(out["results"]) == set(DEFAULT_DEVICE_CLASSES)
    job_ids = set()
    for cls, r in out["results"].items():
        assert r["backend"] == "farm" and r["emulated"] is True and r["device_class"] == cls
        assert r["agent_id"].endswith(f"{cls}-" + r["agent_id"].rsplit("-", 1)[1]) and r["job_id"] >= 1
        assert r["model_sha256"] == sha256_file(tiny_model)
        assert r["device"]["onnxruntime_version"] and r["runs"] >= TINY["min_runs"] and r["samples_ms"]
        assert r["thermal"]["before"] is not None and r["farm_timing"]["benchmark_wall_ms"] > 0
        job_ids.add(r["job_id"])
    assert len(job_ids) == 2
    assert "emulated" in (tmp_path / "report.html").read_text()


def test_local_run_farm_hands_url_and_token_to_the_tasks(
    tmp_path: Path, tiny_model: Path, monkeypatch
) -> None:
    import os

    from edgecompress.edge import edge_benchmark
    from edgecompress.farm.client import CLIENT_TOKEN_ENV
    from edgecompress.pipelines.local import _local_farm

    monkeypatch.delenv(CLIENT_TOKEN_ENV, raising=False)
    with _local_farm(["rpi4-emulated"], tmp_path) as url:
        assert url.startswith("http://127.0.0.1:") and os.environ[CLIENT_TOKEN_ENV]
        # what the edge-benchmark task does with the farm_url parameter
        results = edge_benchmark(tiny_model, ["rpi4-emulated"], TINY, farm_url=url, timeout_s=60)
    assert results["rpi4-emulated"]["emulated"] is True and results["rpi4-emulated"]["backend"] == "farm"
    assert CLIENT_TOKEN_ENV not in os.environ
    assert (tmp_path / "farm" / "farm.db").exists()


def test_measurement_on_a_farm_goes_through_the_farm_and_the_runtime_one_refuses(
    tmp_path: Path, tiny_model: Path, monkeypatch
) -> None:
    """edge.Measurement (the one latency path) sends a farm_url measurement to the farm as a job;
    runtime.measure.Measurement, which has no farm client (the runtime sits under the farm), names
    the one to use instead of measuring somewhere else."""
    from edgecompress.edge import Measurement
    from edgecompress.errors import ConfigError
    from edgecompress.farm.client import CLIENT_TOKEN_ENV, FarmClient
    from edgecompress.pipelines.local import _local_farm
    from edgecompress.runtime import measure

    settings = {"bench_min_runs": 5, "bench_min_duration_s": 0.0, "bench_warmup_runs": 1}
    monkeypatch.delenv(CLIENT_TOKEN_ENV, raising=False)
    with _local_farm(["rpi4-emulated"], tmp_path) as url:
        with pytest.raises(ConfigError, match="farm_url=.*edgecompress.edge.Measurement"):
            measure.Measurement("rpi4-emulated", url, **settings).latency(tiny_model)
        assert FarmClient(url).jobs() == []
        r = Measurement("rpi4-emulated", url, **settings).latency(tiny_model)
        jobs = FarmClient(url).jobs()
    assert r["emulated"] is True and r["p50_ms"] > 0 and len(r["samples_ms"]) >= 5
    assert [(j["device_class"], j["state"]) for j in jobs] == [("rpi4-emulated", "done")]
