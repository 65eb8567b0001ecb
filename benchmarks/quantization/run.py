"""Quantization benchmark: every method on the Fashion-MNIST CNN and an MLP, side by side, over seeds.

    python -m benchmarks.quantization.run                  # full run (Fashion-MNIST; the committed report)
    python -m benchmarks.quantization.run --models mlp     # one model (--merge keeps the others)
    python -m benchmarks.quantization.run --quick --out D  # digits, small models, few rows (smoke test)
    python -m benchmarks.quantization.run --render-only    # results.md and results.png from results.json

Rows per model: float, ONNX Runtime dynamic, static QDQ per-tensor and per-channel × MinMax / Entropy
/ Percentile, static with symmetric INT8 activations (S8S8, per-tensor: the aggressive PTQ that loses
accuracy), FP16, the S8S8 **repair** (mixed precision: the same S8S8 configuration with its most
sensitive nodes kept in float), QAT **as an alternative** (its own scheme, read from the exported
graph) and the auto-tuner's pick. Every row that draws calibration data (or trains) is repeated over
seeds (`QuantConfig.seed`: the calibration draw and QAT) and reported as mean with a 95 % interval.
The quantization settings follow the *target* device class's profile (`QuantConfig.target`), never
this machine's CPU. Selection (auto-tuner, mixed precision) uses the validation split; test is reported.
Latency: batch 1 on an emulated device class, every row interleaved with the float model in rounds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
DEVICE = "rpi4-emulated"  # where latency is measured, and the target the models are quantized for
# the targets (stored in results.json with the settings, so a report is rendered with its own thresholds):
# largest accuracy drop (test, points) of a recovery or the auto-tuner pick; the pick's speed and size
THRESHOLDS = {"max_drop_pt": 0.3, "min_speedup": 1.8, "min_size_ratio": 3.5}
MLP_SPEC = {"family": "mlp", "kwargs": {"hidden": [512, 256]}}
QUICK_SPECS = {
    "cnn": {"family": "cnn", "kwargs": {"widths": [8, 16], "depths": [1, 1]}},
    "mlp": {"family": "mlp", "kwargs": {"hidden": [64]}},
}
FULL = {"seeds": [0, 1, 2], "grid_seeds": [0], "calibration_methods": ["minmax", "entropy", "percentile"], "calibration_samples": 256,
        "qat_epochs": 1, "qat_lr": 1e-4, "qat_max_train_samples": 10000, "probe_samples": 1000,
        "latency_rounds": 7, "min_runs": 200, "min_duration_s": 0.5,
        "val_samples": None}  # fmt: skip
# the baseline CNN costs ~50x the MLP's compute per image: on the shared 2-core machine (load ~15-21) its
# run gets a minmax-only PTQ grid, QAT on 2,000 images, the first 2,000 validation images for everything
# that selects, 4 shorter latency rounds, no dynamic row (dynamic INT8 convolutions run ~6x slower than
# float here) and no fp16 row; all set before any CNN result was seen, recorded per model and rendered
FULL_BY_MODEL = {
    "cnn": {"calibration_methods": ["minmax"], "qat_max_train_samples": 2000, "val_samples": 2000,
            "latency_rounds": 4, "min_runs": 100, "min_duration_s": 0.3, "leave_out": ["dynamic", "fp16 (weights)"]},
}  # fmt: skip
QUICK = {"seeds": [0, 1], "grid_seeds": [0], "calibration_methods": ["minmax"], "calibration_samples": 64,
         "qat_epochs": 1, "qat_lr": 1e-4, "qat_max_train_samples": 600, "probe_samples": 200,
         "latency_rounds": 2, "min_runs": 20, "min_duration_s": 0.02,
         "val_samples": None}  # fmt: skip
ROLE_TEXT = {
    "baseline": "float model",
    "ptq": "post-training INT8",
    "s8s8": "the lossy PTQ (S8S8)",
    "repair": "S8S8 repair (mixed precision)",
    "alternative": "QAT, alternative to S8S8",
    "other": "not INT8 kernels",
    "autotune": "auto-tuner pick",
}
log = logging.getLogger("benchmarks.quantization")


def variants(settings: dict[str, Any], float_val: float) -> list[tuple[str, str, str, Any]]:
    """(row name, group, role, config). ONNX Runtime's stock PTQ options are 'peer'; this project's are
    'ours'. `reduce_range` is left to the target's profile (auto)."""
    from edgecompress.quantize import QuantConfig

    base = QuantConfig(calibration_samples=settings["calibration_samples"], target=DEVICE)
    s8 = replace(base, per_channel=False, activation_type="int8")
    rows = [("dynamic", "peer", "other", replace(base, method="dynamic"))]
    for grain in (False, True):
        for m in settings["calibration_methods"]:
            name = f"static {'per-channel' if grain else 'per-tensor'} {m}"
            rows.append((name, "peer", "ptq", replace(base, per_channel=grain, calibration_method=m)))
    if base.resolved().reduce_range:
        rows.append(("static per-channel minmax, full range (ORT default)", "peer", "ptq",
                     replace(base, reduce_range=False)))  # fmt: skip
    # the repair keeps S8S8 and leaves nodes in float until the probe (validation) reaches the float
    # model's validation accuracy minus the allowed drop
    target = max(0.0, float_val - settings["max_drop_pt"] / 100)
    return rows + [
        ("static per-tensor S8S8 minmax", "peer", "s8s8", s8),
        ("fp16 (weights)", "ours", "other", replace(base, method="fp16")),
        ("S8S8 repair: mixed precision (S8S8, sensitive nodes float)", "ours", "repair",
         replace(s8, method="mixed", target_accuracy=target, probe_samples=settings["probe_samples"])),
        ("QAT (alternative to S8S8)", "ours", "alternative",
         replace(base, method="qat", qat_epochs=settings["qat_epochs"], qat_lr=settings["qat_lr"],
                 qat_max_train_samples=settings["qat_max_train_samples"])),
    ]  # fmt: skip


HEADLINE = ("s8s8", "repair", "alternative", "autotune")  # the rows the targets read: every seed


def seeds_of(role: str, config: Any, settings: dict[str, Any]) -> list[int]:
    """Headline rows run every seed; the rest of the PTQ grid runs `grid_seeds` (a budget on this
    machine, said in the report); rows without a calibration draw are deterministic: one run."""
    if config.method in ("dynamic", "fp16"):
        return settings["seeds"][:1]
    return settings["seeds"] if role in HEADLINE else settings["grid_seeds"]


def scheme(path: Path) -> dict[str, Any]:
    """What the exported graph actually computes: activation and weight types, weight grain, and how
    many Conv/Gemm/MatMul layers kept float weights — read from the graph, not from the config."""
    from onnx import TensorProto, helper

    graph = onnx.load(str(path)).graph
    const = {i.name: i for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            const[n.output[0]] = n.attribute[0].t
    producer = {o: n for n in graph.node for o in n.output}

    def dtype(name: str) -> str:
        return helper.tensor_dtype_to_np_dtype(const[name].data_type).name if name in const else "?"

    activations, weights, grains = set(), set(), set()
    for n in graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] not in const:
            activations.add(dtype(n.input[2]) if len(n.input) > 2 and n.input[2] else "uint8")
        elif n.op_type == "DynamicQuantizeLinear":
            activations.add("uint8 (dynamic)")
        elif n.op_type == "DequantizeLinear" and n.input[0] in const and len(const[n.input[0]].dims) > 1:
            weights.add(dtype(n.input[0]))
            grains.add("per-channel" if int(np.prod(const[n.input[1]].dims)) > 1 else "per-tensor")
        elif n.op_type in ("MatMulInteger", "ConvInteger") and n.input[1] in const:
            weights.add(dtype(n.input[1]))
    layers = [
        n for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul", "MatMulInteger", "ConvInteger")
    ]
    float_layers = 0
    for n in layers:
        w = n.input[1]
        while w in producer and producer[w].op_type == "Cast":
            w = producer[w].input[0]
        if w in const and const[w].data_type in (TensorProto.FLOAT, TensorProto.FLOAT16):
            float_layers += 1
    return {"activations": sorted(activations) or ["float"], "weights": sorted(weights) or ["float"],
            "weight_grain": sorted(grains), "float_layers": float_layers, "layers": len(layers)}  # fmt: skip


def scheme_text(s: dict[str, Any]) -> str:
    grain = f" {'/'.join(s['weight_grain'])}" if s["weight_grain"] else ""
    return (
        f"{'/'.join(s['activations'])} / {'/'.join(s['weights'])}{grain} / "
        f"{s['float_layers']} of {s['layers']} float"
    )


def evaluate(path: Path, data: Any, float_test_pred: np.ndarray | None) -> dict[str, Any]:
    from edgecompress.export import onnx_logits

    out = {}
    for split in ("val", "test"):
        x, y = data.split(split)
        pred = onnx_logits(path, x).argmax(1)
        out[f"{split}_accuracy"] = float(np.mean(pred == y))
        if split == "test":
            out["_test_pred"] = pred
            out["top1_agreement"] = (
                1.0 if float_test_pred is None else float(np.mean(pred == float_test_pred))
            )
    out["onnx_bytes"] = path.stat().st_size
    out["scheme"] = scheme(path)
    return out


def interleaved_latency(paths: dict[str, Path], settings: dict[str, Any]) -> dict[str, list[float]]:
    """Each row's p50 per round; every round measures every model once, in an order that rotates and
    flips from round to round, so load on the shared machine hits all rows alike."""
    from benchmarks.common import rotating_rounds
    from edgecompress.edge import Measurement

    meter = Measurement(DEVICE, None, settings["min_runs"], settings["min_duration_s"])
    return rotating_rounds(
        list(paths), settings["latency_rounds"], lambda n: meter.latency(paths[n])["p50_ms"]
    )


def bench_model(
    name: str,
    package_dir: Path,
    data_path: Path,
    settings: dict[str, Any],
    work: Path,
    machine: dict[str, Any],
) -> dict[str, Any]:
    """`machine` is read when the run starts (its commit is the code that ran, not a later checkout)."""
    from benchmarks.common import mean_interval
    from edgecompress.data import load_dataset
    from edgecompress.edge import Measurement
    from edgecompress.export import load_model_package
    from edgecompress.gate import speedup_interval
    from edgecompress.quantize import quantize_model
    from edgecompress.quantize.autotune import AutotuneConfig, Criterion, autotune

    machine = dict(machine)
    start = time.monotonic()
    data = load_dataset(data_path)
    if settings[
        "val_samples"
    ]:  # everything that selects (mixed probe, auto-tuner, QAT's epoch check) sees these
        n = settings["val_samples"]
        data = replace(
            data, arrays={**data.arrays, "x_val": data.arrays["x_val"][:n], "y_val": data.arrays["y_val"][:n]}
        )
    package = load_model_package(package_dir)
    module = package.load_module()
    base = evaluate(package.onnx_path, data, None)
    float_pred = base.pop("_test_pred")
    rows = [{"name": "float", "group": "baseline", "role": "baseline", "config": None,
             "per_seed": [{"seed": None, **base, "details": {}, "seconds": 0.0}]}]  # fmt: skip
    paths = {"float": package.onnx_path}
    for row_name, group, role, cfg in variants(settings, base["val_accuracy"]):
        if row_name in settings.get("leave_out", ()):
            continue
        per_seed = []
        for seed in seeds_of(role, cfg, settings):
            t0 = time.monotonic()
            log.info("%s: %s, seed %d", name, row_name, seed)
            proto, details = quantize_model(package.onnx_path, data, replace(cfg, seed=seed), module)
            path = work / f"{name}-{len(rows)}-{seed}.onnx"
            onnx.save_model(proto, str(path))
            m = evaluate(path, data, float_pred)
            m.pop("_test_pred")
            keep = (
                "excluded_nodes",
                "probe_accuracy",
                "torch_vs_onnx_top1_agreement",
                "torch_vs_onnx_max_abs_error",
            )
            per_seed.append({"seed": seed, **m, "details": {k: details[k] for k in keep if k in details},
                             "seconds": time.monotonic() - t0})  # fmt: skip
            paths.setdefault(row_name, path)  # latency: the first seed's model (latency is the graph's)
        params = cfg.resolved().as_params()
        params.pop("seed")
        rows.append({"name": row_name, "group": group, "role": role, "config": params, "per_seed": per_seed})
    measurement = Measurement(DEVICE, None, settings["min_runs"], settings["min_duration_s"])
    per_seed, trials = [], {}
    for seed in settings["seeds"]:
        t0 = time.monotonic()
        log.info("%s: auto-tuner, seed %d", name, seed)
        cfg = AutotuneConfig(Criterion.of(settings["max_drop_pt"] / 100), "latency", measurement, seed=seed,
                             calibration_samples=settings["calibration_samples"], qat_epochs=settings["qat_epochs"],
                             qat_max_train_samples=settings["qat_max_train_samples"],
                             probe_samples=settings["probe_samples"])  # fmt: skip
        result = autotune(package.onnx_path, data, cfg, module, work / f"{name}-autotune-{seed}")
        m = evaluate(Path(result["pick_path"]), data, float_pred)
        m.pop("_test_pred")
        per_seed.append({"seed": seed, **m, "details": {"pick": result["pick"], "passed": result["passed"]},
                         "seconds": time.monotonic() - t0})  # fmt: skip
        paths.setdefault("auto-tuner pick", Path(result["pick_path"]))
        trials[str(seed)] = [
            {"name": t["name"], "passed": t["passed"], "reasons": t["reasons"]} for t in result["trials"]
        ]
    rows.append({"name": "auto-tuner pick", "group": "ours", "role": "autotune", "config": None,
                 "per_seed": per_seed, "autotune_trials": trials})  # fmt: skip
    rounds = interleaved_latency(paths, settings)
    f = rows[0]["per_seed"][0]
    for row in rows:
        ps = row["per_seed"]
        row["summary"] = {
            "seeds": len(ps),
            "val_change_pt": mean_interval([(p["val_accuracy"] - f["val_accuracy"]) * 100 for p in ps]),
            "test_change_pt": mean_interval([(p["test_accuracy"] - f["test_accuracy"]) * 100 for p in ps]),
            "test_accuracy_pct": mean_interval([p["test_accuracy"] * 100 for p in ps]),
            "top1_agreement": mean_interval([p["top1_agreement"] for p in ps]),
            "size_ratio": mean_interval([f["onnx_bytes"] / p["onnx_bytes"] for p in ps]),
        }
        ratio = speedup_interval(rounds["float"], rounds[row["name"]])
        row["latency"] = {
            "rounds_p50_ms": rounds[row["name"]], "p50_ms": float(np.median(rounds[row["name"]])),
            "speedup": {"mean": ratio["speedup"], "low": ratio["ci_low"], "high": ratio["ci_high"],
                        "n": len(rounds["float"]), "confidence": 0.95, "method": "bootstrap over rounds"},
        }  # fmt: skip
    machine["load_average_at_end"] = list(os.getloadavg())
    return {"machine": machine, "settings": settings, "seconds": time.monotonic() - start, "rows": rows,
            "float": {"val_accuracy": f["val_accuracy"], "test_accuracy": f["test_accuracy"],
                      "onnx_bytes": f["onnx_bytes"]}}  # fmt: skip


def target_settings() -> dict[str, Any]:
    """What the target's profile decides, recorded beside the results."""
    from edgecompress.quantize import QuantConfig
    from edgecompress.runtime.devices import profile, quantization_target

    board = quantization_target(DEVICE)
    return {"device_class": DEVICE, "emulated": profile(DEVICE).emulated, "quantization_target": board.name,
            "target_isa": board.isa, "target_int8_dot_product": board.int8_dot_product,
            "reduce_range": QuantConfig(target=DEVICE).resolved().reduce_range,
            "threads": profile(DEVICE).threads}  # fmt: skip


def _row(model: dict[str, Any], role: str) -> dict[str, Any] | None:
    return next((r for r in model["rows"] if r["role"] == role), None)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its threshold, the measured mean and interval, and the verdict
    (benchmarks.common.verdict: the interval decides, met / missed / undecided). Per model: the S8S8 repair and
    QAT as an alternative, each on its own; on the baseline CNN: the auto-tuner pick's speed, size
    and accuracy."""
    from benchmarks.common import verdict

    out = []

    def add(model: str, target: str, interval: dict[str, Any], threshold: float, unit: str) -> None:
        out.append({"model": model, "target": target, "threshold": threshold, "unit": unit, "interval": interval,
                    "verdict": verdict(interval, threshold, higher_is_better=True)})  # fmt: skip

    for name, model in results["models"].items():
        limits = model["settings"]
        for role in ("repair", "alternative"):
            row = _row(model, role)
            if row is not None:
                add(name, f"{ROLE_TEXT[role]}: test accuracy change vs float", row["summary"]["test_change_pt"],
                    -limits["max_drop_pt"], " pt")  # fmt: skip
        pick = _row(model, "autotune")
        if name == "cnn" and pick is not None:
            add(
                name,
                "auto-tuner pick: speed-up over float (p50)",
                pick["latency"]["speedup"],
                limits["min_speedup"],
                "×",
            )
            add(
                name,
                "auto-tuner pick: size ratio",
                pick["summary"]["size_ratio"],
                limits["min_size_ratio"],
                "×",
            )
            add(name, "auto-tuner pick: test accuracy change vs float", pick["summary"]["test_change_pt"],
                -limits["max_drop_pt"], " pt")  # fmt: skip
    return out


def cell(interval: dict[str, Any], digits: int = 2, unit: str = "") -> str:
    """`mean [low, high]`; the bare value where one run stands behind it (deterministic rows) or where
    the interval is narrower than the digits shown (a size ratio hardly depends on the seed): never a
    zero-width interval."""
    from benchmarks.common import has_interval, narrower_than_shown

    f = f"{{:.{digits}f}}"
    if not has_interval(interval):
        return f"{f.format(interval['mean'])}{unit} (n=1)"
    if narrow := narrower_than_shown(interval, digits=digits):
        return f"{f.format(interval['mean'])}{unit} ({narrow}, n={interval['n']})"
    return f"{f.format(interval['mean'])} [{f.format(interval['low'])}, {f.format(interval['high'])}]{unit}"


def model_table(model: dict[str, Any]) -> str:
    from edgecompress.reports import markdown_table

    rows = []
    for r in model["rows"]:
        s, lat = r["summary"], r["latency"]
        schemes = sorted({scheme_text(p["scheme"]) for p in r["per_seed"]})
        rows.append([r["name"], r["group"], s["seeds"], cell(s["val_change_pt"]), cell(s["test_change_pt"]),
                     cell(s["top1_agreement"], 4), cell(s["size_ratio"]), f"{lat['p50_ms']:.4f}",
                     "1 (itself)" if r["role"] == "baseline" else cell(lat["speedup"]), "; ".join(schemes)])  # fmt: skip
    return markdown_table(["row", "group", "seeds", "val Δ pt", "test Δ pt", "top-1 agreement", "× smaller",
                           "p50 ms (median of rounds)", "× faster (p50, interleaved)",
                           "activations / weights / float layers (from the graph)"], rows)  # fmt: skip


def render(results: dict[str, Any]) -> str:
    """results.md, every figure from results.json."""
    from benchmarks.common import VERDICT_RULE, baseline_line
    from edgecompress.reports import markdown_table

    t = results["target"]
    lines = ["# Quantization benchmark", ""]
    if results["quick"]:
        lines += ["**Quick smoke run (digits, small models) — not the committed figures.**", ""]
    lines += [
        f"Reproduce: `python -m benchmarks.quantization.run{' --quick' if results['quick'] else ''}`. "
        "The rows the targets read (S8S8, its repair, QAT, the auto-tuner) ran every seed (the seed draws the "
        "calibration sample and drives QAT); the rest of the PTQ grid ran the grid seeds (time budget of this "
        "shared machine) and deterministic rows (no calibration draw) ran once: the `seeds` column says which, "
        "and n=1 cells have no interval. Intervals are 95 % (Student t over seeds; for speed-ups, bootstrap over "
        "interleaved rounds).", "",
        f"Quantized for device class `{t['device_class']}`, which stands in for `{t['quantization_target']}` "
        f"({t['target_isa']}, INT8 dot product: {t['target_int8_dot_product']}): its profile sets "
        f"reduce_range **{'on' if t['reduce_range'] else 'off'}** (7-bit weights only for x86 targets without "
        "VNNI). Latency: batch 1 on that class, "
        f"{'**emulated** (ONNX Runtime on this x86 machine, ' if t['emulated'] else '('}{t['threads']} thread(s)), "
        "in rounds in which every row is measured once, order rotating; ratios come from the "
        "same rounds. Accuracy: validation (where settings are selected) and test (reported).", "",
        *([f"The cnn is the benchmarks' baseline CNN. {baseline_line(results)}", ""]
          if "cnn" in results["models"] else []),
        "## Targets", "",
        markdown_table(["model", "target", "threshold", "measured mean [95 % interval]", "verdict"],
                       [[x["model"], x["target"], f"≥ {x['threshold']:g}{x['unit']}", cell(x["interval"], 2, x["unit"]),
                         f"**{x['verdict']}**"] for x in targets(results)]),
        "", f"Verdicts (benchmarks.common.verdict): {VERDICT_RULE} The S8S8 repair and QAT are separate rows with separate verdicts: "
        "the repair keeps the S8S8 configuration; QAT is a different configuration (its scheme column is "
        "read from its graph), so it is an alternative to S8S8, not a repair of it.", "",
    ]  # fmt: skip
    for name, model in results["models"].items():
        m, fl, s = model["machine"], model["float"], model["settings"]
        val_text = "all" if s.get("val_samples") is None else f"the first {s['val_samples']}"
        lines += [
            f"## {name}", "",
            f"Float model: val {fl['val_accuracy'] * 100:.2f} % ("
            f"{val_text} validation images, "
            f"used by every selection and the `val Δ` column), test {fl['test_accuracy'] * 100:.2f} %, "
            f"{fl['onnx_bytes']:,} bytes. Run: {model['seconds'] / 60:.1f} min on {m['cpu_model']} "
            f"({m['cpu_count']} cores shared with other jobs; load average {m['load_average_at_start'][0]:.1f} at "
            f"start, {m['load_average_at_end'][0]:.1f} at end), commit {m['git_commit']}, {m['date']}, "
            f"onnxruntime {m['onnxruntime']}, torch {m['torch']}; this host's INT8 kernels "
            f"{'saturate (no VNNI): accuracy here is not the target board' if m['int8_reduce_range_needed'] else 'have VNNI (no u8×s8 saturation)'}.",
            "",
            f"Settings: seeds {', '.join(map(str, s['seeds']))} (grid: {', '.join(map(str, s['grid_seeds']))}); "
            f"{s['calibration_samples']} calibration images from the training split; mixed precision probes "
            f"{s['probe_samples']} validation images and stops at the float validation accuracy minus "
            f"{s['max_drop_pt']:g} pt; QAT {s['qat_epochs']} epoch(s) on at most {s['qat_max_train_samples']} "
            f"training images, lr {s['qat_lr']:g}; latency {s['latency_rounds']} rounds, each measurement at least "
            f"{s['min_runs']} runs and {s['min_duration_s']:g} s."
            + (f" Left out for time on this machine: {', '.join(s['leave_out'])}." if s.get("leave_out") else ""),
            "", model_table(model), "",
        ]  # fmt: skip
        for r in model["rows"]:
            if r["role"] == "repair":
                lines.append(f"- `{r['name']}`, nodes kept in float per seed: " + "; ".join(
                    f"seed {p['seed']}: {len(p['details'].get('excluded_nodes', []))} "
                    f"(probe accuracy {p['details'].get('probe_accuracy', float('nan')) * 100:.2f} %)"
                    for p in r["per_seed"]) + ".")  # fmt: skip
            if r["role"] == "alternative":
                lines.append(f"- `{r['name']}`: torch vs ONNX top-1 agreement per seed " + ", ".join(
                    f"{p['details'].get('torch_vs_onnx_top1_agreement', float('nan')):.4f}" for p in r["per_seed"])
                    + ".")  # fmt: skip
            if r["role"] == "autotune":
                for p in r["per_seed"]:
                    trials = r["autotune_trials"][str(p["seed"])]
                    lines.append(f"- auto-tuner, seed {p['seed']}: pick `{p['details']['pick']}` "
                                 f"({'passed' if p['details']['passed'] else '**no trial passed**: best failure'}); " + "; ".join(
                        f"{x['name']}: {'PASS' if x['passed'] else ', '.join(x['reasons'])}" for x in trials) + ".")  # fmt: skip
        lines.append("")
    lines += [
        "![test accuracy change vs speed-up](results.png)", "",
        "## How to read it", "",
        "- `val Δ` / `test Δ`: accuracy change vs the float model in points (mean over seeds). The auto-tuner "
        "and mixed precision select on validation; test never chose anything.",
        "- S8S8: ONNX Runtime's static quantizer drops the `Relu` after each Conv/Gemm, which is only exact "
        "when the activation's zero point is the quantized minimum (asymmetric UINT8). With symmetric INT8 "
        "activations negative values pass: the loss in the S8S8 row is the graph's own arithmetic.",
        "- FP16 stores weights as float16 and casts them once at session load (no float16 convolution kernels "
        "on x86 CPUs): half the size, float speed.",
        "- Latency depends on the graph, not the seed: each row's first-seed model is timed.",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.common import error_bar
    from edgecompress.reports import figure_png

    models = results["models"]
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.8), squeeze=False)
    colors = {"baseline": "black", "peer": "tab:blue", "ours": "tab:orange"}
    for ax, (name, model) in zip(axes[0], models.items(), strict=True):
        for r in model["rows"]:
            sp, ch = r["latency"]["speedup"], r["summary"]["test_change_pt"]
            ax.errorbar(sp["mean"], ch["mean"], xerr=error_bar(sp), yerr=error_bar(ch), fmt="*" if r["role"] == "autotune" else "o",
                        ms=10 if r["role"] == "autotune" else 4, color=colors[r["group"]], capsize=2)  # fmt: skip
            ax.annotate(
                r["name"][:34],
                (sp["mean"], ch["mean"]),
                fontsize=6,
                xytext=(3, 2),
                textcoords="offset points",
            )
        ax.axvline(1.0, color="grey", lw=0.8, ls=":")
        ax.axhline(-model["settings"]["max_drop_pt"], color="grey", lw=0.8, ls="--")
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_xlabel(f"speed-up over float, p50 on {results['target']['device_class']} (interleaved)")
        ax.set_ylabel("test accuracy change, points (symlog)")
        ax.set_title(f"{name} (blue: ONNX Runtime PTQ options, orange: ours, ★: auto-tuner)", fontsize=9)
    return figure_png(fig)


def cached_model(dataset_path: Path, spec: dict[str, Any], config: Any, tag: str) -> Path:
    from benchmarks.common import CACHE, cache_key
    from edgecompress.step import Lineage
    from edgecompress.train import train_step

    key = cache_key(spec, config, dataset_path.name)
    out = CACHE / f"quant-{tag}-{key}"
    if not (out / "model.json").exists():
        train_step(dataset_path, spec, out, config, Lineage(enabled=False), progress=False)
    return out


def write(results: dict[str, Any], out: Path) -> None:
    from benchmarks.common import write_report

    write_report(results, out, render, plot, "results.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="digits, small models, few rows (smoke test)")
    parser.add_argument("--models", default="cnn,mlp", help="comma-separated: cnn, mlp (default cnn,mlp)")
    parser.add_argument(
        "--out", type=Path, default=HERE, help="where results.json/.md/.png go (default: here)"
    )
    parser.add_argument(
        "--merge", action="store_true", help="keep the other models already in --out/results.json"
    )
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite results.md/.png from results.json"
    )
    parser.add_argument(
        "--combine", type=Path, help="take the models of another run's results.json into --out's, then render"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("onnxruntime", "edgecompress.farm", "edgecompress.runtime"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("EDGECOMPRESS_NO_PROGRESS", "1")
    if (args.render_only or args.merge) and not (args.out / "results.json").exists():
        print(f"error: {args.out / 'results.json'} does not exist (--render-only / --merge)", file=sys.stderr)
        return 2
    if args.combine is not None:
        if not args.combine.is_file() or not (args.out / "results.json").exists():
            print(f"error: --combine needs {args.combine} and {args.out / 'results.json'}", file=sys.stderr)
            return 2
        results, other = (json.loads(p.read_text()) for p in (args.out / "results.json", args.combine))
        merged = {
            **results["models"],
            **other["models"],
        }  # each model keeps its own machine, commit, settings
        results["models"] = {k: merged[k] for k in ("cnn", "mlp") if k in merged}
        write(results, args.out)
        return 0
    if args.render_only:
        write(json.loads((args.out / "results.json").read_text()), args.out)
        return 0
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in ("cnn", "mlp")]
    if unknown or not names:
        print(
            f"error: --models {args.models!r}: unknown {unknown or 'empty'}; choose from cnn, mlp",
            file=sys.stderr,
        )
        return 2
    from benchmarks.common import (
        baseline_cached,
        baseline_record,
        fashion_mnist_dataset_artifact,
        machine_info,
    )
    from edgecompress.data import load_digits, save_dataset
    from edgecompress.step import Lineage
    from edgecompress.train import TrainConfig, train_step

    def settings(name: str) -> dict[str, Any]:
        return {**(QUICK if args.quick else {**FULL, **FULL_BY_MODEL.get(name, {})}), **THRESHOLDS}

    machine = machine_info()
    models: dict[str, Any] = {}
    baselines: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="bench-quant-") as tmp:
        work = Path(tmp)
        if args.quick:
            data = work / "digits.npz"
            save_dataset(load_digits(), data)
        else:
            data = fashion_mnist_dataset_artifact()
        for name in names:
            if args.quick:
                package = work / name
                train_step(data, QUICK_SPECS[name], package, TrainConfig(epochs=3, batch_size=64),
                           Lineage(enabled=False), progress=False)  # fmt: skip
            elif name == "cnn":
                package = baseline_cached()
                if package is None:
                    print("error: the baseline CNN is not in benchmarks/.cache (benchmarks.common.baseline_model "
                          "trains it, about an hour here); nothing written", file=sys.stderr)  # fmt: skip
                    return 2
            else:
                package = cached_model(data, MLP_SPEC, TrainConfig(epochs=3, batch_size=128), "mlp")
            models[name] = bench_model(name, package, data, settings(name), work, machine)
            baselines[name] = package
        results = {"benchmark": "quantization", "quick": args.quick,
                   "target": target_settings(), "selection_split": "validation", "models": models}  # fmt: skip
        if "cnn" in models:  # the cnn row is the benchmarks' baseline; the mlp has its own float parent
            results.update(baseline_record(baselines["cnn"]))
        if args.merge:
            old = json.loads((args.out / "results.json").read_text())
            results["models"] = {**{k: v for k, v in old["models"].items() if k not in models}, **models}
        order = [k for k in ("cnn", "mlp") if k in results["models"]]
        results["models"] = {k: results["models"][k] for k in order}
        write(results, args.out)
    shutil.rmtree(work, ignore_errors=True)
    print((args.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
