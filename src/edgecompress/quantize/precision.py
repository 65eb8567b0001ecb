"""Precision per op group by measured cost: INT8 only where it is faster on the target.

ONNX Runtime's INT8 kernels are not faster than float everywhere: on x86 without VNNI, MobileNetV3's
hardswish/SE blocks and depthwise convolutions and a ViT's attention MatMuls run slower quantized
(benchmarks/architectures). With `objective="latency"` (opt-in; the default is size) static quantization decides
each op group on the target's emulated device class with the decisions' rule (`edgecompress.stats`):

- groups (`op_groups`): attention MatMuls, weight MatMul/Gemm, dense convolutions, 1x1 convolutions,
  depthwise/grouped convolutions, squeeze-excitation blocks, and everything else the quantizer touches
  (activations, element-wise ops, pooling, data movement);
- one group at a time, the others as decided so far (undecided ones quantized), the model with the
  group quantized and the model with it in float are timed in interleaved rounds
  (`Measurement.compare`, ≥ 8 rounds); the group stays quantized only where the speed-up's 95 % lower
  bound is above 1 **and** its accuracy drop on validation's selection part is within
  `per_op_max_drop` (paired, Tango interval reported);
- the child is compared with the float parent: the groups measured faster, every group not measured
  slower (small gains within the noise add up), and every group (group-by-group can mislead where
  Q/DQ boundaries between groups cost more than kernels save), each distinct one in interleaved
  rounds; the fastest whose lower bound is above 1 is kept; otherwise the float parent is returned and the
  details say so — never a slower "quantized" model.

`objective="size"` (the default: the per-group measurement costs minutes per call and, on the digits
CNN, returns the float parent, which would change the default pipeline's result) quantizes every group
and measures only an `attention_matmuls="auto"` choice; the pipeline's gate still rejects a child that
is not faster than its parent.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgecompress.data import Dataset, selection_size
from edgecompress.export import onnx_logits
from edgecompress.quantize.config import QuantConfig
from edgecompress.quantize.ptq import activation_matmuls, preprocess, quantize_static, weight_matmuls
from edgecompress.stats import MIN_LATENCY_ROUNDS, paired_difference_interval

log = logging.getLogger(__name__)

GROUPS = {
    "attention_matmul": "MatMuls of two activations (attention scores, weights x values)",
    "matmul_gemm": "MatMul/Gemm with a weight",
    "conv": "dense convolutions (kernel > 1)",
    "pointwise_conv": "1x1 convolutions",
    "depthwise_conv": "depthwise/grouped convolutions",
    "se_block": "squeeze-excitation blocks (pooling -> convolutions -> gate -> Mul)",
    "other": "activations, element-wise ops, pooling, data movement",
}
RULE = (
    "per op group, the others as decided so far: int8 where the interleaved speed-up of quantizing it "
    "has a 95% lower bound > 1 on the target's class and its accuracy drop on validation's selection "
    "part is <= per_op_max_drop; float where that upper bound is < 1 or the drop too large; the child "
    "(the groups measured faster, every group not measured slower, or every group; attention MatMuls "
    "as decided) with the largest speed-up over the float parent whose lower bound is > 1 is kept, "
    "else the float parent is returned"
)
# each latency measurement of the comparison: at least this many runs and seconds
BENCH_MIN_RUNS, BENCH_MIN_DURATION_S = 30, 0.3

Compare = Callable[[Path, Path], dict[str, Any]]


def quantizer_op_types() -> set[str]:
    """The op types ONNX Runtime's static quantizer touches by default (QOperator and QDQ registries)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return set(QDQRegistry) | set(QLinearOpsRegistry)


def _conv_kind(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> str:
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("group", 1) > 1:
        return "depthwise_conv"
    kernel = attrs.get("kernel_shape") or (
        list(inits[node.input[1]].dims[2:]) if node.input[1] in inits else []
    )
    return "pointwise_conv" if kernel and all(k == 1 for k in kernel) else "conv"


def _se_nodes(graph: onnx.GraphProto) -> set[str]:
    """Nodes of squeeze-excitation blocks: from a global pooling, forward along single paths, to the
    Mul that gates the block's input (at most 6 nodes deep)."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    found: set[str] = set()
    for start in graph.node:
        if start.op_type not in ("GlobalAveragePool", "ReduceMean"):
            continue
        path, node = [start], start
        for _ in range(6):
            nxt = consumers.get(node.output[0], [])
            if len(nxt) != 1:
                break
            node = nxt[0]
            path.append(node)
            if node.op_type == "Mul":
                if any(n.op_type == "Conv" for n in path):
                    found.update(n.name for n in path)
                break
    return found


def op_groups(proto: onnx.ModelProto) -> dict[str, list[str]]:
    """The nodes static quantization would touch, by group (`GROUPS`, only the non-empty ones)."""
    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    attention, weighted = set(activation_matmuls(proto)), set(weight_matmuls(proto))
    se = _se_nodes(graph)
    touched = quantizer_op_types()
    groups: dict[str, list[str]] = {g: [] for g in GROUPS}
    for node in graph.node:
        if node.op_type not in touched:
            continue
        if node.name in se:
            group = "se_block"
        elif node.name in attention:
            group = "attention_matmul"
        elif node.name in weighted:
            group = "matmul_gemm"
        elif node.op_type in ("Conv", "ConvTranspose"):
            group = _conv_kind(node, inits)
        else:
            group = "other"
        groups[group].append(node.name)
    return {g: names for g, names in groups.items() if names}


def decide(speed: dict[str, Any], accuracy_drop: float, max_drop: float) -> tuple[str, str]:
    """The rule for one group: (`int8` or `float`, why)."""
    if not speed["timing_meaningful"]:
        return "float", "no speed verdict on this class (timings not meaningful)"
    interval = f"{speed['speedup']:.2f}x [{speed['ci_low']:.2f}, {speed['ci_high']:.2f}]"
    if not speed["ci_low"] > 1.0:
        return "float", f"quantized is not faster: {interval}"
    if accuracy_drop > max_drop + 1e-12:
        return "float", f"faster ({interval}) but costs {accuracy_drop * 100:.2f} pt > {max_drop * 100:g} pt"
    return "int8", f"faster: {interval}, accuracy drop {accuracy_drop * 100:+.2f} pt"


class _Variants:
    """Static quantizations of one model with a given set of groups in float, built once each."""

    def __init__(
        self, onnx_path: Path, dataset: Dataset, config: QuantConfig, groups: dict[str, list[str]], tmp: Path
    ) -> None:
        self.onnx_path, self.dataset, self.config, self.groups = Path(onnx_path), dataset, config, groups
        self.tmp = tmp
        self.built: dict[frozenset[str], Path] = {}
        x, self.y = dataset.split("val", selection_size(dataset.size("val")))
        self.x = x
        self.correct: dict[Path, np.ndarray] = {}

    def path(self, quantized: frozenset[str]) -> Path:
        if not quantized:
            return self.onnx_path
        if quantized not in self.built:
            floats = [n for g, names in self.groups.items() if g not in quantized and g != "attention_matmul"
                      for n in names]  # fmt: skip
            cfg = replace(
                self.config,
                objective="size",
                nodes_to_exclude=tuple(dict.fromkeys([*self.config.nodes_to_exclude, *floats])),
                attention_matmuls="int8" if "attention_matmul" in quantized else "float",
            )
            path = self.tmp / f"variant-{len(self.built)}.onnx"
            onnx.save(quantize_static(self.onnx_path, self.dataset, cfg), str(path))
            self.built[quantized] = path
        return self.built[quantized]

    def accuracy_drop(self, parent: Path, child: Path) -> dict[str, Any]:
        """Paired accuracy drop (parent - child) on validation's selection part, with Tango's interval."""
        for p in (parent, child):
            if p not in self.correct:
                self.correct[p] = onnx_logits(p, self.x).argmax(1) == self.y
        a, b, n = self.correct[parent], self.correct[child], len(self.y)
        if n == 0:
            return {"drop": 0.0, "interval": [0.0, 0.0], "samples": 0}
        low, high = paired_difference_interval(int(np.sum(a & ~b)), int(np.sum(b & ~a)), n)
        return {"drop": float(a.mean() - b.mean()), "interval": [low, high], "samples": n}


def _speed_row(speed: dict[str, Any]) -> dict[str, Any]:
    rounds = speed.get("latency_rounds", {})
    return {
        "speedup": speed["speedup"], "speedup_ci": [speed["ci_low"], speed["ci_high"]],
        "float_p50_ms": rounds.get("parent_ms", []), "int8_p50_ms": rounds.get("child_ms", []),
        "emulated": speed.get("emulated"), "timing_meaningful": speed["timing_meaningful"],
    }  # fmt: skip


def default_compare(config: QuantConfig) -> Compare | None:
    """Interleaved rounds on the target's emulated class, or None where it cannot be emulated here."""
    from edgecompress.edge import Measurement
    from edgecompress.runtime.devices import emulated_classes

    if config.target not in emulated_classes():
        return None
    meter = Measurement(config.target, None, BENCH_MIN_RUNS, BENCH_MIN_DURATION_S)
    return lambda parent, child: meter.compare(parent, child, MIN_LATENCY_ROUNDS)


def quantize_static_measured(
    onnx_path: Path, dataset: Dataset, config: QuantConfig
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Static quantization for `config.objective`: latency decides each op group's precision by
    measurement on the target's emulated class (`quantize_per_op`; the attention-MatMul choice is one of
    those groups); size (the default) quantizes every group and measures only an `auto` attention-MatMul
    choice."""
    if config.objective == "latency":
        return quantize_per_op(onnx_path, dataset, config)
    with tempfile.TemporaryDirectory(prefix="edgecompress-quant-") as tmp:
        names = activation_matmuls(onnx.load(str(preprocess(Path(onnx_path), Path(tmp) / "pre.onnx"))))
    if config.attention_matmuls != "auto" or not names:
        return quantize_static(onnx_path, dataset, config), {}
    return _measure_attention_matmuls(onnx_path, dataset, config, len(names))


def _measure_attention_matmuls(
    onnx_path: Path, dataset: Dataset, config: QuantConfig, nodes: int
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Objective size with `attention_matmuls="auto"`: every group quantized, except that the attention
    MatMuls (u8 x s8 activation MatMuls, slower than float on x86 without VNNI more often than not) are
    built both ways and timed in interleaved rounds on the target's emulated class; int8 is kept only
    where its speed-up's 95 % lower bound is above 1."""
    details: dict[str, Any] = {"nodes": nodes, "device_class": config.target}
    compare = default_compare(config)
    if compare is None:
        log.info("attention MatMuls quantized: target %s cannot be emulated here to compare", config.target)
        return quantize_static(onnx_path, dataset, config), {
            "attention_matmuls": {**details, "chosen": "int8"}
        }
    variants = {
        v: quantize_static(onnx_path, dataset, replace(config, attention_matmuls=v))
        for v in ("int8", "float")
    }
    with tempfile.TemporaryDirectory(prefix="edgecompress-quant-") as tmp:
        paths = {v: Path(tmp) / f"{v}.onnx" for v in variants}
        for v, proto in variants.items():
            onnx.save(proto, str(paths[v]))
        speed = compare(paths["float"], paths["int8"])
    chosen = "int8" if speed["timing_meaningful"] and speed["ci_low"] > 1.0 else "float"
    details.update(
        float_p50_ms=speed["latency_rounds"]["parent_ms"],
        int8_p50_ms=speed["latency_rounds"]["child_ms"],
        speedup=speed["speedup"],
        speedup_ci=[speed["ci_low"], speed["ci_high"]],
        emulated=speed["emulated"],
        chosen=chosen,
    )
    log.info(
        "attention MatMuls (%d) in %s: int8 speed-up %.2fx, kept %s",
        nodes,
        config.target,
        speed["speedup"],
        chosen,
    )
    return variants[chosen], {"attention_matmuls": details}


def quantize_per_op(
    onnx_path: Path, dataset: Dataset, config: QuantConfig, compare: Compare | None = None
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Static quantization with each op group's precision decided by measured cost (module docstring).

    `compare(parent, child)` returns `Measurement.compare`'s dict (speed-up, `ci_low`, `ci_high`,
    `timing_meaningful`, …); by default the target's emulated class measures it. Returns the model and
    details: `per_op` (rule, one row per group: decision, speed-up [interval], accuracy drop [interval],
    why; the final check against the float parent) and, where attention MatMuls were measured, the
    `attention_matmuls` record."""
    config = config.resolved()
    with tempfile.TemporaryDirectory(prefix="edgecompress-quant-") as tmp:
        groups = op_groups(onnx.load(str(preprocess(Path(onnx_path), Path(tmp) / "pre.onnx"))))
    compare = compare or default_compare(config)
    if compare is None:
        log.info("every op group quantized: target %s cannot be emulated here to compare", config.target)
        note = f"not measured: {config.target} cannot be emulated here; every group quantized"
        details: dict[str, Any] = {"per_op": {"rule": RULE, "measured": False, "note": note}}
        if "attention_matmul" in groups and config.attention_matmuls == "auto":
            details["attention_matmuls"] = {
                "nodes": len(groups["attention_matmul"]), "device_class": config.target, "chosen": "int8",
            }  # fmt: skip
        return quantize_static(onnx_path, dataset, config), details
    with tempfile.TemporaryDirectory(prefix="edgecompress-precision-") as tmp:
        variants = _Variants(Path(onnx_path), dataset, config, groups, Path(tmp))
        return _decide_groups(variants, config, compare)


def _final_child(
    variants: _Variants, compare: Compare, rows: list[dict[str, Any]], state: dict[str, str]
) -> tuple[frozenset[str], dict[str, Any]]:
    """The child against its float parent. Up to three candidates: the groups each measured faster
    quantized (strict); every group not measured slower nor too costly in accuracy (gains within the
    noise can add up); every group (one group at a time can mislead: on the digits CNN each group
    measured slower quantized with the others as decided, while its whole INT8 child is faster; Q/DQ
    boundaries between groups cost more than the kernels save). Attention MatMuls keep their own
    choice. Each distinct candidate is compared with the parent in interleaved rounds; the fastest
    whose lower bound is above 1 is returned, else the float parent."""
    strict = frozenset(g for g, v in state.items() if v == "int8")
    lenient = strict | frozenset(
        r["group"] for r in rows
        if r["group"] != "attention_matmul" and "speedup" in r and not r["measured_slower"] and r["accuracy_ok"]
    )  # fmt: skip
    too_costly = {r["group"] for r in rows if "speedup" in r and not r["accuracy_ok"]}
    every = frozenset(
        g for g in state if (g != "attention_matmul" or state[g] == "int8") and g not in too_costly
    )
    final: dict[str, Any] = {"candidates": []}
    for name, groups in (("each group faster", strict), ("no group slower", lenient), ("every group", every)):
        if not groups or any(set(c["groups"]) == groups for c in final["candidates"]):
            continue
        speed = compare(variants.onnx_path, variants.path(groups))
        final["candidates"].append({
            "name": name, "groups": sorted(groups), **_speed_row(speed),
            "accuracy": variants.accuracy_drop(variants.onnx_path, variants.path(groups)),
            "faster": bool(speed["timing_meaningful"]) and speed["ci_low"] > 1.0,
        })  # fmt: skip
    passed = [c for c in final["candidates"] if c["faster"]]
    if passed:
        best = max(passed, key=lambda c: c["speedup"])
        final.update(
            {k: best[k] for k in ("speedup", "speedup_ci", "float_p50_ms", "int8_p50_ms", "accuracy")}
        )
        final["quantized_groups"] = best["groups"]
        final["why"] = (
            f"kept '{best['name']}': {best['speedup']:.2f}x [{best['speedup_ci'][0]:.2f}, "
            f"{best['speedup_ci'][1]:.2f}] faster than the float parent"
        )
        quantized = frozenset(best["groups"])
    else:
        final["quantized_groups"] = []
        final["why"] = (
            "no quantized child is faster than its float parent on this class "
            + "; ".join(f"('{c['name']}': {c['speedup']:.2f}x [{c['speedup_ci'][0]:.2f}, {c['speedup_ci'][1]:.2f}])"
                        for c in final["candidates"])
            + ": the float parent is returned"
        )  # fmt: skip
        quantized = frozenset()
    for r in rows:
        r["in_child"] = r["group"] in quantized
    return quantized, final


def _decide_groups(
    variants: _Variants, config: QuantConfig, compare: Compare
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    groups = variants.groups
    fixed = {"attention_matmul": config.attention_matmuls} if config.attention_matmuls != "auto" else {}
    state = {g: fixed.get(g, "int8") for g in groups}
    rows: list[dict[str, Any]] = []
    details: dict[str, Any] = {}
    for group in groups:
        if group in fixed:
            rows.append({"group": group, "nodes": len(groups[group]), "chosen": fixed[group],
                         "why": f"fixed by attention_matmuls={fixed[group]}"})  # fmt: skip
            continue
        others = frozenset(g for g, v in state.items() if v == "int8" and g != group)
        as_float, as_int8 = variants.path(others), variants.path(others | {group})
        speed = compare(as_float, as_int8)
        accuracy = variants.accuracy_drop(as_float, as_int8)
        chosen, why = decide(speed, accuracy["drop"], config.per_op_max_drop)
        state[group] = chosen
        slower = bool(speed["timing_meaningful"]) and speed["ci_high"] < 1.0
        rows.append({
            "group": group, "description": GROUPS[group], "nodes": len(groups[group]), "chosen": chosen,
            "measured_slower": slower, "accuracy_ok": accuracy["drop"] <= config.per_op_max_drop + 1e-12,
            **_speed_row(speed), "accuracy_drop": accuracy["drop"], "accuracy_drop_ci": accuracy["interval"],
            "accuracy_samples": accuracy["samples"], "why": why,
        })  # fmt: skip
        log.info("op group %s (%d nodes): %s, %s", group, len(groups[group]), chosen, why)
        if group == "attention_matmul":
            details["attention_matmuls"] = {
                "nodes": len(groups[group]), "device_class": config.target, **_speed_row(speed), "chosen": chosen,
            }  # fmt: skip
    quantized, final = _final_child(variants, compare, rows, state)
    all_float = not quantized
    float_nodes = [n for g, names in groups.items() if g not in quantized for n in names]
    details["per_op"] = {
        "rule": RULE, "measured": True, "device_class": config.target, "weight_bits": config.weight_bits,
        "groups": rows, "final": final, "all_float": all_float, "float_nodes": float_nodes,
    }  # fmt: skip
    if all_float:
        log.warning("objective latency on %s: %s", config.target, final["why"])
    return onnx.load(str(variants.path(quantized))), details
