"""`edgecompress profile`: per-node latency from ONNX Runtime's profiler on an emulated class, the
parts-add-up check, and the reports rendered from the result's data."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from edgecompress.errors import ConfigError
from edgecompress.profile import (
    ProfileConfig,
    _summarize,
    op_type_comparison,
    parse_trace,
    profile_markdown,
)
from tests.conftest import run_cli

# The digits CNN, wide enough that its nodes last several profiler ticks (1 µs) each.
WIDE_CNN = {"family": "cnn", "kwargs": {"widths": [64, 128], "depths": [2, 2]}}


@pytest.fixture(scope="module")
def wide_cnn_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgecompress.data import load_digits
    from edgecompress.export import export_onnx
    from edgecompress.zoo import build_model

    data = load_digits()
    model = build_model(WIDE_CNN, data.input_shape, data.num_classes, seed=0).eval()
    path = tmp_path_factory.mktemp("profile") / "cnn.onnx"
    export_onnx(model, tuple(data.input_shape), path)
    return path


@pytest.mark.latency
def test_profile_parts_add_up_on_the_digits_cnn(wide_cnn_onnx: Path, tmp_path: Path) -> None:
    """A real measurement through the CLI: 8 rounds on rpi4-emulated; every Conv of the graph is named,
    the shares are of the benchmark runner's p50, and the verdict is the stated rule on the numbers."""
    out, md = tmp_path / "profile.json", tmp_path / "profile.md"
    r = run_cli(
        "profile", str(wide_cnn_onnx), "--device-class", "rpi4-emulated", "--rounds", "8", "--runs", "100",
        "--output", str(out), "--markdown", str(md), "--no-track",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.read_text())
    m = result["models"]["model"]
    assert result["emulated"] is True and result["device_class"] == "rpi4-emulated"
    assert len(m["whole_round_p50_ms"]) == 8
    ops = [n["op"] for n in m["nodes"]]
    assert ops.count("Conv") == 4  # 2 stages x 2 convs (BatchNorm and ReLU fused into them)
    assert m["nodes"][0]["op"] == "Conv"  # the convolutions hold the time
    assert m["floor_p50_ms"] > 0 and m["whole_p50_ms"] > m["floor_p50_ms"]
    # the rule, applied again to the recorded numbers
    tol = result["config"]["tolerance"]
    calibration = result["profiler_calibration"]
    assert calibration["nodes"] == 64  # the chain's nodes are neither folded nor fused away
    assert len(calibration["round_overhead_per_node_ms"]) == 8
    overhead = calibration["overhead_per_node_ms"]
    assert m["profiler_overhead_per_node_ms"] == overhead
    gap = m["whole_p50_ms"] - (m["sum_node_p50_ms"] - overhead * len(m["nodes"]))
    assert m["gap_ms"] == pytest.approx(gap)
    allowed = tol * m["whole_p50_ms"] + 1e-3 * len(m["nodes"])
    assert m["allowed_ms"] == pytest.approx(allowed) and len(m["round_unexplained_ms"]) == 8
    assert m["unexplained_ms"] == pytest.approx(statistics.median(m["round_unexplained_ms"]))
    assert m["parts_add_up"] == (abs(m["unexplained_ms"]) <= allowed)  # paired by round
    assert m["parts_add_up"], (
        f"per round, whole − parts − floor: {m['round_unexplained_ms']} (allowed {allowed}); medians apart: "
        f"parts {m['sum_node_p50_ms']} + floor {m['floor_p50_ms']} vs whole {m['whole_p50_ms']}"
    )
    text = md.read_text()
    assert m["nodes"][0]["node"] in text and "emulated" in text
    assert (tmp_path / "profile-model.png").read_bytes()[:4] == b"\x89PNG"


def test_profile_refuses_qemu_classes_and_few_rounds(wide_cnn_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="QEMU"):
        ProfileConfig(device_class="rpi4-qemu").validate()
    with pytest.raises(ConfigError, match="rounds must be"):
        ProfileConfig(rounds=3).validate()
    r = run_cli("profile", str(wide_cnn_onnx), "--device-class", "rpi4", "--output", str(tmp_path / "p.json"))
    assert r.returncode == 2 and "emulated device classes only" in r.stderr
    assert not (tmp_path / "p.json").exists()


def _event(name, ts, dur, cat="Node", op="Conv"):
    return {
        "cat": cat,
        "name": name,
        "ts": ts,
        "dur": dur,
        "args": {"op_name": op, "provider": "CPUExecutionProvider"},
    }


def test_parse_trace_drops_warmup_and_fences() -> None:
    events = []
    for k, (a, b) in enumerate([(50, 9), (5, 3), (7, 2)]):  # first call: warm-up, slow
        t = 1000 * k
        events += [
            {"cat": "Session", "name": "model_run", "ts": t, "dur": 100},
            _event("conv_fence_before", t + 1, 0),
            _event("conv_kernel_time", t + 2, a),
            _event("gemm_kernel_time", t + 60, b, op="Gemm"),
        ]
    parsed = parse_trace(events, runs=2)
    assert parsed["nodes"]["conv"]["ms"] == [0.005, 0.007]
    assert parsed["nodes"]["gemm"]["ms"] == [0.003, 0.002] and parsed["nodes"]["gemm"]["op"] == "Gemm"
    assert parsed["model_run_ms"] == [0.1, 0.1]


def _rounds(whole_ms: float, nodes: dict[str, float], op: str = "Conv") -> list[dict]:
    parts = {
        "nodes": {n: {"op": op, "provider": "CPU", "ms": [v] * 5} for n, v in nodes.items()},
        "model_run_ms": [1.0],
    }
    return [{"whole_p50_ms": whole_ms, "parts": parts} for _ in range(8)]


def test_parts_are_judged_against_the_whole_of_their_own_round() -> None:
    """A machine whose speed moves between phases (1.0 and 1.5x): the whole's median falls in the slow
    phase and the parts' in the fast one. Judged apart they miss by a third of the whole; judged round by
    round, where parts and whole share a phase, they add up, and the verdict says so."""
    cfg = ProfileConfig()
    wholes, scales = (1.0, 1.0, 1.5, 1.5, 1.5), (1.0, 1.0, 1.0, 1.5, 1.5)
    rounds = [
        _rounds(whole, {"a": 0.6 * k, "b": 0.36 * k})[0] for whole, k in zip(wholes, scales, strict=True)
    ]
    out = _summarize(rounds, [0.04] * 5, cfg)
    assert out["whole_p50_ms"] == 1.5 and out["sum_node_p50_ms"] == pytest.approx(0.96)
    assert out["gap_ms"] - out["floor_p50_ms"] == pytest.approx(0.5)  # medians apart: 0.5 ms unexplained
    assert out["round_unexplained_ms"] == pytest.approx([0.0, 0.0, 0.5, 0.02, 0.02])
    assert out["unexplained_ms"] == pytest.approx(0.02) and out["parts_add_up"]
    # and a real miss stays a miss: 0.26 ms in no node in every round
    miss = _summarize(_rounds(1.0, {"a": 0.4, "b": 0.3}), [0.04] * 8, cfg)
    assert miss["round_unexplained_ms"] == pytest.approx([0.26] * 8) and not miss["parts_add_up"]


def test_calibration_is_the_chain_excess_per_node_median_over_rounds() -> None:
    """Per round: (Σ node p50 − (whole − floor)) / nodes of the calibration chain; the median decides."""
    from edgecompress.profile import _calibration

    rounds = [_rounds(whole, {f"n{i}": 0.002 for i in range(64)})[0] for whole in (0.050, 0.047, 0.060)]
    cal = _calibration(rounds, [0.003, 0.003, 0.003])
    expected = [(0.128 - (whole - 0.003)) / 64 for whole in (0.050, 0.047, 0.060)]
    assert cal["nodes"] == 64 and cal["round_overhead_per_node_ms"] == pytest.approx(expected)
    assert cal["overhead_per_node_ms"] == pytest.approx(expected[0])  # the middle one of the three


def test_summary_verdict_is_the_rule_and_markdown_shows_the_data() -> None:
    cfg = ProfileConfig(top=2)
    ok = _summarize(_rounds(1.0, {"a": 0.6, "b": 0.3, "c": 0.05}), 0.04, cfg)
    assert ok["parts_add_up"] and ok["sum_node_p50_ms"] == pytest.approx(0.95)
    assert [n["node"] for n in ok["nodes"]] == ["a", "b", "c"] and ok["nodes"][0]["share"] == pytest.approx(
        0.6
    )
    bad = _summarize(_rounds(1.0, {"a": 0.4, "b": 0.3}), 0.04, cfg)  # 0.26 ms in no node
    assert not bad["parts_add_up"] and bad["unexplained_ms"] == pytest.approx(0.26)
    # more nodes than the whole: with the profiler's calibrated cost per node taken off, they add up
    many = {f"n{i}": 0.003 for i in range(100)}  # 0.3 ms of profiled nodes in a 0.15 ms model
    raw = _summarize(_rounds(0.15, many), 0.004, cfg)
    assert not raw["parts_add_up"] and raw["gap_ms"] == pytest.approx(-0.15)
    net = _summarize(_rounds(0.15, many), 0.004, cfg, overhead_ms=0.0016)
    assert net["sum_node_cost_ms"] == pytest.approx(0.14) and net["gap_ms"] == pytest.approx(0.01)
    assert net["parts_add_up"] and net["nodes"][0]["cost_ms"] == pytest.approx(0.0014)
    assert net["nodes"][0]["share"] == pytest.approx(0.0014 / 0.15)
    assert not _summarize(_rounds(0.15, many), 0.004, cfg, overhead_ms=0.0030)[
        "parts_add_up"
    ]  # over-corrected
    result = {
        "device_class": "rpi4-emulated", "device_description": "stand-in", "method": "profiler",
        "config": {"rounds": 8, "runs": 100, "tolerance": 0.1, "top": 2},
        "models": {"float": {"sha256": "f" * 64, **ok}, "int8": {"sha256": "e" * 64, **_summarize(
            _rounds(0.5, {"q": 0.3, "r": 0.15}, op="QLinearConv"), 0.04, cfg)}},
    }  # fmt: skip
    result["int8_vs_float"] = [
        {"float": "float", "int8": "int8", "rows": op_type_comparison(result, "float", "int8")}
    ]
    conv = result["int8_vs_float"][0]["rows"][0]
    assert conv["op_family"] == "Conv" and conv["int8_over_float"] == pytest.approx(0.45 / 0.95)
    text = profile_markdown(result)
    assert "| 1 | a | Conv | CPU | 0.6 | 60 | 63.1579 |" in text and "| 3 | c |" not in text  # top 2 only
    assert "| Conv | 0.95 | 0.45 | 0.4737 |" in text
    assert "**emulated**" in text


def test_a_tracked_profile_logs_its_report_json_and_headline(wide_cnn_onnx: Path, tmp_path: Path, tracking_uri) -> None:  # fmt: skip
    import mlflow

    from edgecompress.profile import HEADLINE, profile_step
    from edgecompress.step import Lineage

    config = ProfileConfig(rounds=8, runs=20, warmup_runs=5)
    result = profile_step(wide_cnn_onnx, config, tmp_path / "profile.json", tmp_path / "profile.html",
                          lineage_ctx=Lineage(experiment="profile-test"))  # fmt: skip
    exp = mlflow.get_experiment_by_name("profile-test")
    task = [r for r in mlflow.search_runs([exp.experiment_id], output_format="list")
            if r.data.tags.get("edgecompress.task") == "profile"]  # fmt: skip
    assert len(task) == 1
    logged = sorted(a.path for a in mlflow.MlflowClient().list_artifacts(task[0].info.run_id, "reports"))
    assert logged == ["reports/profile.html", "reports/profile.json"]
    m = result["models"]["model"]
    assert task[0].data.metrics == pytest.approx({f"profile.{k}": m[k] for k in HEADLINE})
    assert task[0].data.params["device_class"] == "rpi4-emulated"
