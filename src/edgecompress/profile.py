"""Where the time goes on a device class: per-node latency from ONNX Runtime's own profiler.

Why the profiler and not layer-wise timing: timing layers one by one measures each in a session of its
own (its own per-call overhead, cold caches, no fusion), so the parts do not add up to the model; the
profiler times every node of the one optimised graph that the benchmark runs (after ONNX Runtime's
fusions), inside the same kind of session (the class's thread count, sequential execution, the same
graph optimisation level), pinned to the class's cores.

Method, per round (at least `MIN_LATENCY_ROUNDS`; with two models their rounds alternate): one child
process pinned like the benchmark child, with three sessions set up as the benchmark runner sets up
its own, called in turn, call by call (the order rotating), `runs` calls each after warm-up:
- the parts: the model with `SessionOptions.enable_profiling`; the trace's `Node` events (`dur`, op
  type, provider) are grouped by the `model_run` they fall into; per node, the median over the round's
  calls;
- the whole: the same model unprofiled, its end-to-end p50 over the round's calls;
- the floor: an Identity model with the same input: ONNX Runtime's per-call overhead (binding inputs,
  allocating outputs, the Python call) that belongs to no node.
The three are measured in the same moments of the machine: on a VM whose speed moves between phases of
a second or so, three separate processes (results written before 2026-12-07 evening) put them in
different phases (per-round differences of ±0.08 ms on a 0.15 ms model). A call follows calls of the
other two sessions, so the whole can be a little slower than in a tight loop of one model.
Across rounds: the median of the per-round values. Each node's share is its p50 over the whole's p50.

The profiler's own cost inside each node: with profiling on, every node's `dur` holds about 1.7 µs
that an unprofiled run does not spend (measured 1.67–1.87 µs per node on this machine's rpi4-emulated
class for chains of 64 and 256 element-wise nodes on 8 and 1,024 floats, a one-off check, not a
committed benchmark: a constant per node, not a share of the node's work). On a model of many small nodes that is most of the time (MobileNet-style:
22 nodes of 4–12 µs; ViT-Tiny: 417 nodes), so the raw parts add up to more than the whole. Each
round therefore also profiles a calibration chain of `CALIBRATION_NODES` Add/Mul nodes (whole, floor
and parts as above) and takes its overhead per node = (Σ node p50 − (whole − floor)) / nodes; the
median over rounds is subtracted from every node of the measured models (`cost_ms`; shares are of
it). The calibration is measured on its own graph, never fitted to the model it corrects; the raw
profiler figures stay in the result (`p50_ms`, `sum_node_p50_ms`).

The parts-add-up check: |whole − (Σ node p50 − nodes × overhead) − floor| ≤ `tolerance` × whole + 1 µs
× nodes, paired by round: the three terms of one round come from the same process, and the
median over rounds of that round's difference decides (`round_unexplained_ms`). Taken apart, the
medians of the whole and of the parts can come from different phases of a machine whose speed moves
(on an AVX2 EPYC VM one model's per-round p50 moved between 0.14 and 0.20 ms: parts 0.154 + floor
0.008 against a whole of 0.197 ms). Results written before the pairing judged the medians apart. Why this tolerance: the profiler reports whole microseconds per node (up to 1 µs lost per
node and call), the calibrated overhead is a median, and a median of sums is not a sum of medians;
on a shared machine the whole moves by several percent between rounds. The measured gap is in the
result either way (`gap_ms`, `gap_fraction`), and the check's verdict is the rule applied to it.
Results written before the calibration (no `profiler_overhead_per_node_ms`) used overhead 0.

Emulated classes only: the farm's runner does not profile, and under QEMU (the arm64 classes here)
per-node timings mean as little as whole-model ones (DESIGN.md), so a QEMU or real class is refused
with the reason. Per-op-type INT8-vs-float cost comes from `profile_models` with both models
(interleaved) and `op_type_comparison`.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecompress.errors import BenchmarkError, ConfigError
from edgecompress.runtime.devices import DEFAULT_DEVICE_CLASS
from edgecompress.stats import MIN_LATENCY_ROUNDS

SCHEMA = "edgecompress.profile/v1"
ROUND_METHOD = (
    "each round one pinned process calls the profiled session, the same model unprofiled (the whole) and "
    "the identity model (the floor) in turn, call by call"
)
NODE_RESOLUTION_MS = 1e-3  # the profiler's `dur` is in whole microseconds
CALIBRATION_NODES = 64  # element-wise nodes in the chain that measures the profiler's cost per node

# Op types that do the same work in a float graph and in its quantized child (for the INT8 comparison).
OP_FAMILIES = {
    "QLinearConv": "Conv",
    "ConvInteger": "Conv",
    "FusedConv": "Conv",
    "NchwcConv": "Conv",
    "QLinearMatMul": "MatMul",
    "MatMulInteger": "MatMul",
    "DynamicQuantizeMatMul": "MatMul",
    "MatMulIntegerToFloat": "MatMul",
    "FusedMatMul": "MatMul",
    "QGemm": "Gemm",
    "QLinearAdd": "Add",
    "QLinearMul": "Mul",
    "QLinearGlobalAveragePool": "GlobalAveragePool",
    "QLinearAveragePool": "AveragePool",
    "QLinearSigmoid": "Sigmoid",
    "QLinearLeakyRelu": "LeakyRelu",
    "QLinearConcat": "Concat",
    "QuantizeLinear": "(de)quantize",
    "DequantizeLinear": "(de)quantize",
    "DynamicQuantizeLinear": "(de)quantize",
    "ReorderInput": "(reorder)",
    "ReorderOutput": "(reorder)",
}


@dataclass
class ProfileConfig:
    """Settings of `edgecompress profile` (the library function, the CLI and the component)."""

    device_class: str = field(
        default=DEFAULT_DEVICE_CLASS, metadata={"help": "emulated device class to profile on"}
    )
    rounds: int = field(
        default=MIN_LATENCY_ROUNDS,
        metadata={"help": f"rounds (whole + profiled parts each); at least {MIN_LATENCY_ROUNDS}"},
    )
    runs: int = field(default=200, metadata={"help": "timed calls per round (whole and parts each)"})
    warmup_runs: int = field(default=20, metadata={"help": "untimed calls before each round's timing"})
    top: int = field(default=10, metadata={"help": "layers named in the report's table and plot"})
    tolerance: float = field(
        default=0.10,
        metadata={"help": "parts-add-up check: allowed |whole − Σ nodes − floor| as a fraction of the whole"},
    )

    def validate(self) -> None:
        from edgecompress.runtime.devices import profile as device_profile

        if self.rounds < MIN_LATENCY_ROUNDS:
            raise ConfigError(
                f"rounds must be ≥ {MIN_LATENCY_ROUNDS} (fewer cannot hold a latency claim), got {self.rounds}"
            )
        if self.runs < 10 or self.warmup_runs < 0 or self.top < 1:
            raise ConfigError(
                f"runs must be ≥ 10, warmup_runs ≥ 0 and top ≥ 1, got {self.runs}, {self.warmup_runs}, {self.top}"
            )
        if not 0 < self.tolerance < 1:
            raise ConfigError(f"tolerance must be in (0, 1), got {self.tolerance}")
        p = device_profile(self.device_class)
        if p.emulated is not True:
            why = (
                "under QEMU per-node timings are as meaningless as whole-model ones"
                if p.emulated == "qemu"
                else "the farm's runner does not profile; profile on the board itself or on its emulated class"
            )
            raise ConfigError(
                f"profile runs on emulated device classes only; {self.device_class!r} is {p.emulation} ({why})"
            )


def _session(model_path: Path, threads: int, providers: list[str], profile_prefix: str | None):
    """An ONNX Runtime session set up as the benchmark runner sets up its own."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    available = ort.get_available_providers()
    return ort.InferenceSession(str(model_path), opts, providers=[p for p in providers if p in available])


def parse_trace(events: list[dict[str, Any]], runs: int) -> dict[str, Any]:
    """Per-node durations (ms) of the last `runs` calls in an ONNX Runtime profiler trace: each `Node`
    event belongs to the `model_run` whose interval holds it (warm-up calls are dropped)."""
    model_runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    model_runs = model_runs[-runs:]
    if not model_runs:
        raise BenchmarkError("the ONNX Runtime trace has no model_run event")
    nodes: dict[str, dict[str, Any]] = {}
    node_events = sorted((e for e in events if e.get("cat") == "Node"), key=lambda e: e["ts"])
    i = 0
    for k, run in enumerate(model_runs):
        start, end = run["ts"], run["ts"] + run["dur"]
        while i < len(node_events) and node_events[i]["ts"] < start:
            i += 1
        while i < len(node_events) and node_events[i]["ts"] <= end:
            e = node_events[i]
            i += 1
            if not e["name"].endswith("_kernel_time"):
                continue  # fence_before / fence_after markers
            name = e["name"].removesuffix("_kernel_time")
            args = e.get("args", {})
            node = nodes.setdefault(
                name,
                {
                    "op": args.get("op_name", "?"),
                    "provider": args.get("provider", "?"),
                    "ms": [0.0] * len(model_runs),
                },
            )
            node["ms"][k] += e["dur"] / 1e3
    return {"nodes": nodes, "model_run_ms": [r["dur"] / 1e3 for r in model_runs]}


def _profiled_child(
    model_path: str,
    identity_path: str,
    threads: int,
    providers: list[str],
    affinity,
    runs: int,
    warmup: int,
    out: str,
) -> None:
    """Body of the profiling child, pinned like the benchmark child: the profiled session, the same
    model unprofiled (the whole) and the identity model (the floor), called in turn, call by call (the
    order rotating), so that the three are measured in the same moments of the machine."""
    if affinity:
        os.sched_setaffinity(0, affinity)
    try:
        import time

        from edgecompress.runtime.runner import _ort_input

        with tempfile.TemporaryDirectory(prefix="edgecompress-profile-") as tmp:
            profiled = _session(Path(model_path), threads, providers, str(Path(tmp) / "ort"))
            whole = _session(Path(model_path), threads, providers, None)
            floor = _session(Path(identity_path), threads, providers, None)
            sessions = {"parts": profiled, "whole_ms": whole, "floor_ms": floor}
            feeds = {k: _ort_input(v, 1, 0) for k, v in sessions.items()}
            timed: dict[str, list[float]] = {"whole_ms": [], "floor_ms": []}
            for _ in range(warmup):
                for key, session in sessions.items():
                    session.run(None, feeds[key])
            keys = list(sessions)
            clock = time.perf_counter_ns
            for j in range(runs):
                for key in keys[j % 3 :] + keys[: j % 3]:
                    t = clock()
                    sessions[key].run(None, feeds[key])
                    took = clock() - t
                    if key in timed:
                        timed[key].append(took / 1e6)
            trace = Path(profiled.end_profiling())
            result = {**parse_trace(json.loads(trace.read_text()), runs), **timed}
    except Exception as exc:  # the parent raises it with the model's name
        result = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    Path(out).write_text(json.dumps(result))


def profiled_round(
    model_path: Path, identity_path: Path, device_class: str, runs: int, warmup: int, timeout_s: float = 600
) -> dict:
    """One round of `model_path` on an emulated class, in a pinned child process: per-node timings
    (`nodes`), and the whole's and the floor's call times (`whole_ms`, `floor_ms`) from the same moments."""
    import multiprocessing

    from edgecompress.runtime.devices import emulated_device_class

    cls = emulated_device_class(device_class)
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="edgecompress-profile-") as tmp:
        out = Path(tmp) / "parts.json"
        args = (
            str(model_path), str(identity_path), cls.threads, list(cls.providers), cls.cpu_affinity(), runs,
            warmup, str(out),
        )  # fmt: skip
        proc = ctx.Process(target=_profiled_child, args=args, daemon=True)
        proc.start()
        proc.join(timeout_s)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
            raise BenchmarkError(f"profiling {Path(model_path).name} exceeded {timeout_s:.0f} s")
        if not out.exists():
            raise BenchmarkError(
                f"profiling {Path(model_path).name} failed: the child died ({proc.exitcode})"
            )
        result = json.loads(out.read_text())
    if "error" in result:
        raise BenchmarkError(f"profiling {Path(model_path).name} failed: {result['error']}")
    return result


def identity_model(model_path: Path, out: Path) -> Path:
    """An ONNX model that returns its input unchanged, with `model_path`'s inputs: the per-call floor."""
    import onnx
    from onnx import helper

    model = onnx.load(str(model_path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    outputs = []
    for i in inputs:
        out_info = onnx.ValueInfoProto()
        out_info.CopyFrom(i)
        out_info.name = f"{i.name}_out"
        outputs.append(out_info)
    nodes = [helper.make_node("Identity", [i.name], [f"{i.name}_out"]) for i in inputs]
    graph = helper.make_graph(nodes, "identity", inputs, outputs)
    opset = [o for o in model.opset_import if o.domain in ("", "ai.onnx")] or [helper.make_opsetid("", 17)]
    onnx.save(helper.make_model(graph, opset_imports=opset, ir_version=model.ir_version), str(out))
    return out


def calibration_model(out: Path, nodes: int = CALIBRATION_NODES) -> Path:
    """A chain of `nodes` Add/Mul nodes on 8 floats (each with its own constant, so none folds or fuses):
    nearly all of its time is per-node cost, which is what the profiler's own overhead is measured on."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 8])
    chain, constants, prev = [], [], "input"
    for i in range(nodes):
        constants.append(numpy_helper.from_array(np.full([1], 1.0 + i * 1e-3, np.float32), f"c{i}"))
        chain.append(
            helper.make_node("Add" if i % 2 == 0 else "Mul", [prev, f"c{i}"], [f"t{i}"], name=f"n{i}")
        )
        prev = f"t{i}"
    y = helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, 8])
    graph = helper.make_graph(chain, "profiler-calibration", [x], [y], constants)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(out))
    return out


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _node_rows(rounds: list[dict[str, Any]], whole: float, overhead_ms: float) -> list[dict[str, Any]]:
    nodes = []
    for name in rounds[0]["parts"]["nodes"]:
        per_round = [_median(r["parts"]["nodes"][name]["ms"]) for r in rounds if name in r["parts"]["nodes"]]
        first = rounds[0]["parts"]["nodes"][name]
        p50 = _median(per_round)
        cost = max(p50 - overhead_ms, 0.0)
        nodes.append(
            {
                "node": name,
                "op": first["op"],
                "provider": first["provider"],
                "p50_ms": p50,
                "cost_ms": cost,
                "share": cost / whole if whole > 0 else float("nan"),
                "round_min_ms": min(per_round),
                "round_max_ms": max(per_round),
            }
        )
    return sorted(nodes, key=lambda n: -n["p50_ms"])


def _round_unexplained(entry: dict[str, Any], floor_ms: float, overhead_ms: float) -> float:
    """One round's whole − (Σ node p50 − nodes × overhead) − floor: all three measured in that round."""
    nodes = entry["parts"]["nodes"].values()
    return (
        entry["whole_p50_ms"] - (sum(_median(n["ms"]) for n in nodes) - overhead_ms * len(nodes)) - floor_ms
    )


def _summarize(
    rounds: list[dict[str, Any]],
    floor_ms: float | list[float],
    config: ProfileConfig,
    overhead_ms: float = 0.0,
) -> dict[str, Any]:
    """One model's rounds against the rule; `floor_ms` per round (or one for all), `overhead_ms` the
    profiler's calibrated cost per node. The verdict is paired by round: on a machine whose speed moves
    between phases, medians of the whole and of the parts taken apart can come from different phases."""
    floors = list(floor_ms) if isinstance(floor_ms, list) else [floor_ms] * len(rounds)
    whole = _median([r["whole_p50_ms"] for r in rounds])
    nodes = _node_rows(rounds, whole, overhead_ms)
    total = sum(n["p50_ms"] for n in nodes)
    corrected = total - overhead_ms * len(nodes)  # unclipped: the overhead is a mean per node
    gap = whole - corrected
    allowed = config.tolerance * whole + NODE_RESOLUTION_MS * len(nodes)
    per_round = [_round_unexplained(r, f, overhead_ms) for r, f in zip(rounds, floors, strict=True)]
    unexplained = _median(per_round)
    by_op: dict[str, float] = defaultdict(float)
    for n in nodes:
        by_op[n["op"]] += n["cost_ms"]
    return {
        "whole_p50_ms": whole,
        "whole_round_p50_ms": [r["whole_p50_ms"] for r in rounds],
        "profiled_model_run_p50_ms": _median([_median(r["parts"]["model_run_ms"]) for r in rounds]),
        "sum_node_p50_ms": total,
        "profiler_overhead_per_node_ms": overhead_ms,
        "sum_node_cost_ms": corrected,
        "floor_p50_ms": _median(floors),
        "gap_ms": gap,
        "gap_fraction": gap / whole if whole > 0 else float("nan"),
        "round_unexplained_ms": per_round,
        "unexplained_ms": unexplained,
        "allowed_ms": allowed,
        "parts_add_up": abs(unexplained) <= allowed,
        "nodes": nodes,
        "op_types": dict(sorted(by_op.items(), key=lambda kv: -kv[1])),
    }


CALIBRATION = "(profiler calibration)"


def _calibration(rounds: list[dict[str, Any]], floors: list[float]) -> dict[str, Any]:
    """The profiler's cost per node from the calibration chain's rounds: per round, (Σ node p50 −
    (whole − floor)) / nodes; the median over rounds is the overhead."""
    per_round = []
    for entry, floor in zip(rounds, floors, strict=True):
        nodes = entry["parts"]["nodes"]
        total = sum(_median(n["ms"]) for n in nodes.values())
        per_round.append((total - (entry["whole_p50_ms"] - floor)) / max(len(nodes), 1))
    return {
        "model": f"chain of {CALIBRATION_NODES} Add/Mul nodes on 8 floats",
        "nodes": len(rounds[0]["parts"]["nodes"]),
        "round_overhead_per_node_ms": per_round,
        "overhead_per_node_ms": _median(per_round),
    }


def profile_models(paths: dict[str, Path], config: ProfileConfig) -> dict[str, Any]:
    """Profile one or more ONNX models on `config.device_class`: rounds alternate between the models
    and the profiler's calibration chain (and between whole, parts and floor inside a round). Returns
    the result JSON (see the module's doc)."""
    from edgecompress.io import sha256_file
    from edgecompress.runtime.devices import profile as device_profile

    config.validate()
    if not paths:
        raise ConfigError("profile needs at least one model")
    for label, path in paths.items():
        if not Path(path).is_file():
            raise ConfigError(f"profile: model {label!r}: no ONNX file at {path}")
    with tempfile.TemporaryDirectory(prefix="edgecompress-profile-") as tmp:
        measured = {**paths, CALIBRATION: calibration_model(Path(tmp) / "calibration.onnx")}
        labels = list(measured)
        rounds: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
        floors = {
            label: identity_model(Path(measured[label]), Path(tmp) / f"identity-{i}.onnx")
            for i, label in enumerate(labels)
        }
        floor_ms: dict[str, list[float]] = {label: [] for label in labels}
        for i in range(config.rounds):
            for label in labels if i % 2 == 0 else labels[::-1]:
                parts = profiled_round(
                    Path(measured[label]), floors[label], config.device_class, config.runs, config.warmup_runs
                )
                whole_ms, floor_calls = parts.pop("whole_ms"), parts.pop("floor_ms")
                rounds[label].append({"whole_p50_ms": _median(whole_ms), "parts": parts})
                floor_ms[label].append(_median(floor_calls))
    calibration = _calibration(rounds[CALIBRATION], floor_ms[CALIBRATION])
    overhead = calibration["overhead_per_node_ms"]
    p = device_profile(config.device_class)
    return {
        "schema": SCHEMA,
        "device_class": config.device_class,
        "emulated": True,
        "device_description": p.description,
        "method": "ONNX Runtime profiler (SessionOptions.enable_profiling), Node events per model_run; "
        + ROUND_METHOD,
        "config": {k: getattr(config, k) for k in ProfileConfig.__dataclass_fields__},
        "profiler_calibration": calibration,
        "models": {
            label: {
                "path": str(paths[label]),
                "sha256": sha256_file(Path(paths[label])),
                **_summarize(rounds[label], floor_ms[label], config, overhead),
            }
            for label in paths
        },
    }


def _cost(node: dict[str, Any]) -> float:
    """A node's time net of the profiler's own cost (results before the calibration: its raw p50)."""
    return node.get("cost_ms", node["p50_ms"])


def _calibrated(result: dict[str, Any]) -> bool:
    return "profiler_calibration" in result


def op_family(op: str) -> str:
    return OP_FAMILIES.get(op, op)


def op_type_comparison(result: dict[str, Any], float_label: str, int8_label: str) -> list[dict[str, Any]]:
    """Per op family (QLinearConv and Conv are one row): p50 sums of the float model and its INT8 child
    from one interleaved profile, and INT8 / float (> 1: INT8 is slower for that op family)."""
    sums: dict[str, dict[str, float]] = defaultdict(lambda: {float_label: 0.0, int8_label: 0.0})
    for label in (float_label, int8_label):
        for node in result["models"][label]["nodes"]:
            sums[op_family(node["op"])][label] += _cost(node)
    rows = [
        {
            "op_family": op,
            "float_ms": v[float_label],
            "int8_ms": v[int8_label],
            "int8_over_float": v[int8_label] / v[float_label] if v[float_label] > 0 else None,
        }
        for op, v in sums.items()
    ]
    return sorted(rows, key=lambda r: -(r["float_ms"] + r["int8_ms"]))


def shares_png(summary: dict[str, Any], top: int, title: str) -> bytes:
    """Bar chart: the top nodes' shares of the end-to-end p50, the rest, and what no node holds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgecompress.reports import figure_png

    nodes = summary["nodes"][:top]
    labels = [f"{n['node'][-40:]} ({n['op']})" for n in nodes]
    values = [100 * n["share"] for n in nodes]
    rest = sum(_cost(n) for n in summary["nodes"][top:])
    labels += ["other nodes", "outside nodes (whole − Σ nodes)"]
    values += [100 * rest / summary["whole_p50_ms"], 100 * summary["gap_fraction"]]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(labels) + 1.2))
    ax.barh(range(len(labels))[::-1], values, color=["#4477aa"] * len(nodes) + ["#999999", "#cc6677"])
    ax.set_yticks(range(len(labels))[::-1], labels, fontsize=8)
    ax.set_xlabel("% of end-to-end p50")
    ax.set_title(title, fontsize=9)
    return figure_png(fig)


def _summary_rows(result: dict[str, Any]) -> list[list[Any]]:
    calibrated = _calibrated(result)
    rows = []
    for label, m in result["models"].items():
        row = [label, m["whole_p50_ms"], m["sum_node_p50_ms"]]
        if calibrated:
            row += [1e3 * m["profiler_overhead_per_node_ms"], m["sum_node_cost_ms"]]
        row += [
            m["floor_p50_ms"],
            m["gap_ms"],
            100 * m["gap_fraction"],
            m["unexplained_ms"],
            m["allowed_ms"],
            m["parts_add_up"],
            len(m["nodes"]),
        ]
        rows.append(row)
    return rows


def _summary_headers(result: dict[str, Any]) -> list[str]:
    if not _calibrated(result):
        return SUMMARY_HEADERS
    return [*SUMMARY_HEADERS[:3], "profiler µs/node", "Σ node cost ms", *SUMMARY_HEADERS[3:]]


SUMMARY_HEADERS = [
    "model",
    "whole p50 ms",
    "Σ node p50 ms",
    "per-call floor ms",
    "gap ms",
    "gap %",
    "gap − floor ms",
    "allowed ms",
    "parts add up",
    "nodes",
]
TOP_HEADERS = [
    "#",
    "node (ORT, optimised graph)",
    "op",
    "provider",
    "p50 ms",
    "share %",
    "% of Σ nodes",
    "rounds min–max ms",
]


def _top_headers(result: dict[str, Any]) -> list[str]:
    if not _calibrated(result):
        return TOP_HEADERS
    return [*TOP_HEADERS[:5], "cost ms", "share %", "% of Σ node cost", TOP_HEADERS[-1]]


def _top_rows(result: dict[str, Any], summary: dict[str, Any], top: int) -> list[list[Any]]:
    calibrated = _calibrated(result)
    total = summary["sum_node_cost_ms"] if calibrated else summary["sum_node_p50_ms"]
    rows = []
    for i, n in enumerate(summary["nodes"][:top]):
        row = [i + 1, n["node"], n["op"], n["provider"], n["p50_ms"]]
        row += [n["cost_ms"]] if calibrated else []
        row += [
            100 * n["share"],
            100 * _cost(n) / total if total > 0 else float("nan"),
            f"{n['round_min_ms']:.4f}–{n['round_max_ms']:.4f}",
        ]
        rows.append(row)
    return rows


def _op_headers(result: dict[str, Any]) -> list[str]:
    return ["op type", "Σ cost ms" if _calibrated(result) else "Σ p50 ms", "% of whole"]


def _op_rows(summary: dict[str, Any]) -> list[list[Any]]:
    return [[op, ms, 100 * ms / summary["whole_p50_ms"]] for op, ms in summary["op_types"].items()]


def _preamble(result: dict[str, Any]) -> str:
    c = result["config"]
    text = (
        f"Device class `{result['device_class']}` (**emulated**: {result['device_description']}; not board "
        f"figures). {result['method']}; {c['rounds']} interleaved rounds × {c['runs']} calls. The whole is "
        "the benchmark runner's p50; the per-call floor is an Identity model's p50 through the same runner. "
    )
    if not _calibrated(result):
        return text + (
            f"Rule: parts add up when |whole − Σ nodes − floor| ≤ {c['tolerance']:g} × whole + 1 µs × nodes."
        )
    cal = result["profiler_calibration"]
    paired = all("round_unexplained_ms" in m for m in result["models"].values())
    rule = (
        "Rule, paired by round: parts add up when the median over rounds of whole − (Σ nodes − nodes × "
        f"overhead) − floor, each measured in one round (the gap − floor column), is within ±({c['tolerance']:g}"
        " × whole + 1 µs × nodes)."
        if paired
        else "Rule: parts add up when |whole − (Σ nodes − nodes × overhead) − floor| ≤ "
        f"{c['tolerance']:g} × whole + 1 µs × nodes."
    )
    return text + (
        f"The profiler's own cost per node, measured in the same rounds on a {cal['model']} "
        f"(Σ node p50 − (whole − floor)) / nodes, median over rounds: "
        f"{1e3 * cal['overhead_per_node_ms']:.3f} µs; a node's cost is its p50 less that (at least 0), and "
        f"shares are of the cost. {rule}"
    )


def profile_markdown(result: dict[str, Any], plots: dict[str, str] | None = None) -> str:
    """The report in Markdown; `plots` maps a model label to an image path (relative) to link."""
    from edgecompress.reports import markdown_table

    top = result["config"]["top"]
    parts = [
        f"# Profile on {result['device_class']}",
        "",
        _preamble(result),
        "",
        markdown_table(_summary_headers(result), _summary_rows(result)),
    ]
    for label, m in result["models"].items():
        parts += [
            "",
            f"## {label} (sha256 {m['sha256'][:12]})",
            "",
            markdown_table(_top_headers(result), _top_rows(result, m, top)),
        ]
        parts += ["", markdown_table(_op_headers(result), _op_rows(m))]
        if plots and label in plots:
            parts += ["", f"![{label}: shares of the end-to-end p50]({plots[label]})"]
    for cmp in result.get("int8_vs_float", []):
        rows = [
            [r["op_family"], r["float_ms"], r["int8_ms"], r["int8_over_float"] or "—"] for r in cmp["rows"]
        ]
        parts += [
            "",
            f"## INT8 ({cmp['int8']}) vs float ({cmp['float']}) per op family",
            "",
            markdown_table(["op family", "float ms", "int8 ms", "int8 / float"], rows),
        ]
    return "\n".join(parts) + "\n"


def write_markdown(result: dict[str, Any], path: Path) -> None:
    """The Markdown report at `path` and each model's bar chart beside it (`<stem>-<label>.png`)."""
    from edgecompress.io import write_text

    path = Path(path)
    plots = {}
    for label, m in result["models"].items():
        png = path.with_name(f"{path.stem}-{label}.png")
        png.write_bytes(
            shares_png(m, result["config"]["top"], f"{label} on {result['device_class']} (emulated)")
        )
        plots[label] = png.name
    write_text(path, profile_markdown(result, plots))


def profile_html(result: dict[str, Any]) -> str:
    from edgecompress.reports import html_page, html_table, png_img_tag

    top = result["config"]["top"]
    sections = [
        (
            "Summary",
            f"<p>{_preamble(result)}</p>" + html_table(_summary_headers(result), _summary_rows(result)),
        )
    ]
    for label, m in result["models"].items():
        plot = png_img_tag(shares_png(m, top, f"{label} on {result['device_class']} (emulated)"), label)
        sections.append(
            (f"{label}: top {top} nodes", html_table(_top_headers(result), _top_rows(result, m, top)) + plot)
        )
        sections.append((f"{label}: per op type", html_table(_op_headers(result), _op_rows(m))))
    for cmp in result.get("int8_vs_float", []):
        rows = [
            [r["op_family"], r["float_ms"], r["int8_ms"], r["int8_over_float"] or "—"] for r in cmp["rows"]
        ]
        sections.append(
            (
                "INT8 vs float per op family",
                html_table(["op family", "float ms", "int8 ms", "int8 / float"], rows),
            )
        )
    return html_page(f"Profile on {result['device_class']}", sections)


HEADLINE = ("whole_p50_ms", "sum_node_p50_ms", "sum_node_cost_ms", "floor_p50_ms", "gap_ms", "gap_fraction")


def profile_step(
    model_path: Path,
    config: ProfileConfig,
    output_path: Path,
    report_path: Path | None = None,
    compare_path: Path | None = None,
    lineage_ctx: Any = None,
) -> dict[str, Any]:
    """Profile a Model artifact (or a bare .onnx file); with `compare_path`, also its INT8 (or other)
    child, interleaved, and the per-op-family comparison. Writes the JSON result and the HTML report
    (logged to the task's MLflow run with the headline numbers as metrics)."""
    from edgecompress import lineage
    from edgecompress.export import load_model_package
    from edgecompress.io import write_json
    from edgecompress.step import Lineage, write_report

    def onnx_of(path: Path) -> tuple[Path, dict[str, Any]]:
        path = Path(path)
        if path.is_file() and path.suffix == ".onnx":
            return path, {}
        package = load_model_package(path)
        return package.onnx_path, package.info

    ctx = lineage_ctx or Lineage()
    config.validate()
    onnx_path, info = onnx_of(model_path)
    paths = {"model": onnx_path}
    if compare_path is not None:
        paths["compared"], _ = onnx_of(compare_path)
    ctx.check()
    params = {
        "device_class": config.device_class,
        "rounds": config.rounds,
        "runs": config.runs,
        "model_id": info.get("mlflow_model_id"),
    }
    with ctx.task("profile", params):
        result = profile_models(paths, config)
        if compare_path is not None:
            result["int8_vs_float"] = [
                {
                    "float": "model",
                    "int8": "compared",
                    "rows": op_type_comparison(result, "model", "compared"),
                }
            ]
        write_json(Path(output_path), result)
        lineage.log_report(Path(output_path))  # the JSON (every node) beside the report in MLflow
        if report_path is not None:
            write_report(report_path, profile_html(result))
        if ctx.enabled:
            import mlflow

            m = result["models"]["model"]
            mlflow.log_metrics({f"profile.{k}": float(m[k]) for k in HEADLINE})
    return result
