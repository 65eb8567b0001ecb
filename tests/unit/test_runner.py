import os

import pytest

from edgecompress.edge import benchmark_locally, edge_benchmark
from edgecompress.errors import BenchmarkError, ConfigError
from edgecompress.export import load_model_package
from edgecompress.runtime.runner import MAX_SAMPLES_KEPT, BenchmarkSettings, benchmark, run_isolated

FAST = {"warmup_runs": 5, "min_runs": 30, "min_duration_s": 0.2}


def test_runner_meets_both_minimums_and_keeps_samples(trained_model):
    onnx_path = load_model_package(trained_model).onnx_path
    result = benchmark(
        onnx_path, BenchmarkSettings(threads=1, warmup_runs=3, min_runs=50, min_duration_s=0.3)
    )
    assert result["runs"] >= 50 and result["duration_s"] >= 0.3
    # every sample up to the cap is kept (a fast model on a quiet machine runs past it in 0.3 s)
    assert len(result["samples_ms"]) == min(result["runs"], MAX_SAMPLES_KEPT)
    assert result["samples_truncated"] == (result["runs"] > MAX_SAMPLES_KEPT)
    lat = result["latency_ms"]
    assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert result["load_ms"] > 0 and result["peak_rss_bytes"] > 0
    assert result["provider_used"] == "CPUExecutionProvider" and result["provider_fallback"] is None


def test_missing_provider_falls_back_and_says_so(trained_model):
    onnx_path = load_model_package(trained_model).onnx_path
    result = benchmark(onnx_path, BenchmarkSettings(providers=["TensorrtExecutionProvider"], **FAST))
    assert result["provider_used"] == "CPUExecutionProvider"
    assert "TensorrtExecutionProvider" in result["provider_fallback"]


def test_isolated_runner_survives_garbage_and_timeouts(tmp_path, trained_model):
    garbage = tmp_path / "random.onnx"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(BenchmarkError, match="random.onnx"):
        run_isolated(garbage, BenchmarkSettings(**FAST), timeout_s=60)
    onnx_path = load_model_package(trained_model).onnx_path
    with pytest.raises(BenchmarkError, match="timeout"):
        # max_runs must not end the run early: a fast CI machine finishes 100k tiny-model runs in < 3 s
        slow = BenchmarkSettings(min_runs=10, min_duration_s=60, max_runs=10**9)
        run_isolated(onnx_path, slow, timeout_s=3)


def test_emulated_classes_are_labelled_and_pinned(trained_model):
    onnx_path = load_model_package(trained_model).onnx_path
    result = benchmark_locally(onnx_path, "rpi4-emulated", FAST)
    assert result["emulated"] is True and result["device_class"] == "rpi4-emulated"
    assert result["settings"]["threads"] == 1 and len(result["device"]["cpu_affinity"]) == 1
    with pytest.raises(ConfigError, match="unknown device class 'rpi5'"):
        edge_benchmark(onnx_path, ["rpi5"], FAST)


def test_bad_settings_are_rejected():
    with pytest.raises(BenchmarkError, match="unknown benchmark settings"):
        BenchmarkSettings.from_dict({"thread": 1})
    with pytest.raises(BenchmarkError, match="out of range"):
        BenchmarkSettings.from_dict({"min_runs": 0})
