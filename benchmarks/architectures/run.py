"""What each technique buys on real architectures, before any training: torchvision ResNet-18 and
MobileNetV3-small, timm ViT-Tiny and ConvNeXt-Atto, with random weights, float vs structured-pruned
vs static INT8 vs pruned + INT8: parameters, MACs, ONNX and gzip bytes, and p50 latency on the
emulated device classes (interleaved rounds; latency does not depend on the weight values).
Accuracy is not reported: the weights are random.

    python -m benchmarks.architectures.run            # the committed report (3x224x224, 5 rounds, 2 classes)
    python -m benchmarks.architectures.run --quick    # one model at 3x32x32, one round, one class (smoke)
    python -m benchmarks.architectures.run --objective latency --output DIR
        # INT8 children quantized for each class with precision per op group by measured cost
        # (quantize objective latency: a group stays INT8 only where that class measures it faster)

results.json holds every measurement; results.md is `render(results.json)`; results.png the plot.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from benchmarks.common import (
    VERDICT_RULE,
    exact_value,
    format_interval,
    machine_info,
    mean_interval,
    verdict,
    write_report,
)
from edgecompress.data import Dataset, load_digits
from edgecompress.edge import Measurement
from edgecompress.evaluate import model_stats
from edgecompress.export import export_onnx
from edgecompress.prune import StructuredConfig, prune_structured
from edgecompress.quantize.config import QuantConfig
from edgecompress.quantize.precision import RULE, quantize_static_measured
from edgecompress.reports import figure_png, markdown_table
from edgecompress.zoo import build_model

HERE = Path(__file__).resolve().parent
log = logging.getLogger(__name__)

MODELS = ("resnet18", "mobilenet_v3_small", "vit_tiny", "convnext_atto")
VARIANTS = ("float", "pruned", "int8", "pruned+int8")
DEVICE_CLASSES = ("rpi4-emulated", "jetson-orin-nano-emulated")
SETTINGS = {
    "input_shape": [3, 224, 224],
    # timm's vit_tiny_patch16_224 as published (its factory defaults to 32x32 with 8x8 patches)
    "model_kwargs": {"vit_tiny": {"img_size": 224, "patch_size": 16}},
    "prune_ratio": 0.5,
    "calibration_samples": 32,
    "rounds": 5,
    "min_runs": 20,
    "min_duration_s": 0.5,
}
QUICK = {
    **SETTINGS,
    "input_shape": [3, 32, 32],
    "model_kwargs": {},
    "rounds": 1,
    "min_runs": 5,
    "min_duration_s": 0.05,
    "calibration_samples": 8,
}
# the targets: what a user may expect from the defaults on every one of these architectures
MIN_MACS_REDUCTION = 2.0  # structured pruning at ratio 0.5
MIN_SPEEDUP = 1.0  # pruned + INT8 faster than float, on every emulated class
QUANTIZED = {"int8": "float", "pruned+int8": "pruned"}  # each INT8 child and its float parent
# objective latency: the weights are random, so accuracy cannot veto a group; latency alone decides
RANDOM_WEIGHTS_MAX_DROP = 0.99


def digits_rgb(size: int = 32, limit: int | None = None) -> Dataset:
    """sklearn digits (real images) at `size` x `size` with three channels (pixels repeated): the
    calibration data for 3-channel models; `limit` samples per split at most."""
    digits = load_digits()
    factor = size // 8
    arrays = {}
    for key, value in digits.arrays.items():
        value = value[:limit] if limit else value
        if key.startswith("x_"):
            value = np.repeat(np.repeat(np.repeat(value, 3, axis=1), factor, axis=2), factor, axis=3)
        arrays[key] = value
    return Dataset(f"digits-rgb{size}", "digits", arrays, digits.class_names)


def build_variants(
    name: str, settings: dict[str, Any], dataset: Dataset, out: Path, devices: list[str]
) -> dict[str, Any]:
    """The four ONNX files of one architecture (per device class: with objective latency each class gets
    INT8 children of its own) and what each transform reported."""
    shape = tuple(settings["input_shape"])
    spec = {"factory": f"edgecompress.architectures:{name}", "kwargs": settings["model_kwargs"].get(name, {})}
    model = build_model(spec, shape, dataset.num_classes, seed=0)
    start = time.perf_counter()
    pruned, report = prune_structured(
        model, shape, dataset.num_classes, StructuredConfig(ratio=settings["prune_ratio"]), progress=False
    )
    prune_s = time.perf_counter() - start
    floats = {v: out / f"{name}-{v}.onnx" for v in QUANTIZED.values()}
    export_onnx(model, shape, floats["float"])
    export_onnx(pruned, shape, floats["pruned"])
    per_class = settings.get("objective", "size") == "latency"
    paths: dict[str, dict[str, Path]] = {}
    quant: dict[str, Any] = {}
    precision: dict[str, Any] = {}
    for device in devices if per_class else devices[:1]:
        config = QuantConfig(calibration_samples=settings["calibration_samples"])
        if per_class:
            config = replace(
                config, objective="latency", target=device, per_op_max_drop=RANDOM_WEIGHTS_MAX_DROP
            )
        paths[device] = dict(floats)
        for target, source in QUANTIZED.items():
            tag = f"-{device}" if per_class else ""
            paths[device][target] = out / f"{name}-{target.replace('+', '-')}{tag}.onnx"
            proto, details = quantize_static_measured(floats[source], dataset, config)
            onnx.save(proto, str(paths[device][target]))
            if per_class:
                precision.setdefault(target, {})[device] = details["per_op"]
            else:
                quant[target] = details.get("attention_matmuls")
    paths = {d: paths[d if per_class else devices[0]] for d in devices}
    return {
        "paths": paths,
        **({"precision": precision} if per_class else {}),
        "prune": {
            "seconds": prune_s,
            "skipped": report["skipped"],
            "attention_heads": report["attention_heads"],
        },
        "attention_matmuls": quant,
    }


def measure(
    paths: dict[str, dict[str, dict[str, Path]]], settings: dict[str, Any], devices: list[str]
) -> dict:
    """p50 per round of every file on every class (`paths[model][class][variant]`); each round runs them
    in a rotated order."""
    files = [(m, v) for m in paths for v in VARIANTS]
    out: dict[str, Any] = {d: {m: {v: [] for v in VARIANTS} for m in paths} for d in devices}
    emulated = {}
    for device in devices:
        meter = Measurement(device, None, settings["min_runs"], settings["min_duration_s"])
        for r in range(settings["rounds"]):
            shift = r % len(files)
            for m, v in files[shift:] + files[:shift]:
                result = meter.latency(paths[m][device][v])
                out[device][m][v].append(result["p50_ms"])
                emulated[device] = result["emulated"]
            log.info("%s round %d/%d done", device, r + 1, settings["rounds"])
    return {"p50_ms": out, "emulated": emulated}


def run(models: list[str], devices: list[str], settings: dict[str, Any]) -> dict[str, Any]:
    info = machine_info()
    started = time.perf_counter()
    # calibration images only: 64 per split keeps 3x224x224 float32 in memory small (~40 MB a split)
    dataset = digits_rgb(settings["input_shape"][1], limit=64)
    results: dict[str, Any] = {"machine": info, "settings": settings, "devices": devices, "models": {}}
    with tempfile.TemporaryDirectory(prefix="edgecompress-arch-") as tmp:
        paths = {}
        for name in models:
            built = build_variants(name, settings, dataset, Path(tmp), devices)
            paths[name] = built.pop("paths")
            stats = {d: {v: model_stats(p).as_dict() for v, p in by_variant.items()}
                     for d, by_variant in paths[name].items()}  # fmt: skip
            # objective size: one set of files for every class, the layout of the first reports
            results["models"][name] = {"stats": stats if "precision" in built else stats[devices[0]], **built}
            log.info("%s built: %s", name, {v: s["macs"] for v, s in stats[devices[0]].items()})
        latency = measure(paths, settings, devices)
    for name in models:
        results["models"][name]["p50_ms"] = {d: latency["p50_ms"][d][name] for d in devices}
    results["emulated"] = latency["emulated"]
    results["seconds"] = time.perf_counter() - started
    return results


def speedup(model: dict[str, Any], device: str, variant: str, parent: str = "float") -> dict[str, Any]:
    """parent p50 / variant p50, paired per round: mean with its interval over the rounds."""
    rounds = model["p50_ms"][device]
    return mean_interval([f / v for f, v in zip(rounds[parent], rounds[variant], strict=True)])


def per_class(results: dict[str, Any]) -> bool:
    """Objective latency: INT8 children (and their stats) per device class."""
    return results["settings"].get("objective", "size") == "latency"


def stats_of(results: dict[str, Any], model: dict[str, Any], device: str) -> dict[str, Any]:
    return model["stats"][device] if per_class(results) else model["stats"]


def kept_float(model: dict[str, Any], variant: str, device: str) -> bool:
    """The op-level choice returned the float parent (every group float) for this class."""
    per_op = model.get("precision", {}).get(variant, {}).get(device)
    return bool(per_op and per_op.get("all_float"))


def not_slower(results: dict[str, Any], name: str, variant: str, device: str) -> str:
    """Objective latency's target line: the INT8 child vs its float parent on one class. Met where the
    speed-up's lower bound is ≥ 1x, or where the op-level choice kept the model float and says so."""
    model, parent = results["models"][name], QUANTIZED[variant]
    interval = speedup(model, device, variant, parent)
    head = f"{name}: {variant} not slower than {parent} on {device} (emulated) (≥ {MIN_SPEEDUP:g}x)"
    if kept_float(model, variant, device):
        return f"{head}: {format_interval(interval, unit='x')}, every op group kept float by the op-level choice — met"
    return f"{head}: {format_interval(interval, unit='x')} — {verdict(interval, MIN_SPEEDUP, True)}"


def targets(results: dict[str, Any]) -> list[str]:
    lines = []
    for name, model in results["models"].items():
        stats = stats_of(results, model, results["devices"][0])
        reduction = exact_value(stats["float"]["macs"] / max(1, stats["pruned"]["macs"]))
        lines.append(
            f"{name}: structured ratio {results['settings']['prune_ratio']} removes ≥ {MIN_MACS_REDUCTION:g}x "
            f"MACs: {format_interval(reduction, unit='x')} — {verdict(reduction, MIN_MACS_REDUCTION, True)}"
        )
        for device in results["devices"]:
            interval = speedup(model, device, "pruned+int8")
            lines.append(
                f"{name}: pruned + INT8 faster than float on {device} (emulated) (> {MIN_SPEEDUP:g}x): "
                f"{format_interval(interval, unit='x')} — {verdict(interval, MIN_SPEEDUP, True, strict=True)}"
            )
            if per_class(results):
                lines += [not_slower(results, name, variant, device) for variant in QUANTIZED]
    return lines


def _mb(n: float) -> str:
    return f"{n / 1e6:.2f}"


def class_table(results: dict[str, Any], device: str) -> str:
    """Objective latency: one table per class (its own INT8 children), speed-ups vs float and vs parent."""
    header = ["model", "variant", "params (M)", "MACs (M)", "ONNX (MB)", "gzip (MB)", "p50 ms",
              "speed-up vs float", "speed-up vs its float parent", "op groups in INT8"]  # fmt: skip
    rows = []
    for name, model in results["models"].items():
        for v in VARIANTS:
            s = model["stats"][device][v]
            row = [name, v, _mb(s["params"]), _mb(s["macs"]), _mb(s["onnx_bytes"]), _mb(s["gzip_bytes"])]
            row.append(f"{np.median(model['p50_ms'][device][v]):.2f}")
            row.append("1" if v == "float" else format_interval(speedup(model, device, v), unit="x"))
            if v in QUANTIZED:
                per_op = model["precision"][v][device]
                row += [format_interval(speedup(model, device, v, QUANTIZED[v]), unit="x"),
                        ", ".join(per_op["final"]["quantized_groups"]) or "none (float)"]  # fmt: skip
            else:
                row += ["—", "—"]
            rows.append(row)
    return markdown_table(header, rows)


def table(results: dict[str, Any]) -> str:
    devices = results["devices"]
    header = ["model", "variant", "params (M)", "MACs (M)", "ONNX (MB)", "gzip (MB)"]
    header += [f"p50 ms {d}" for d in devices] + [f"speed-up vs float {d}" for d in devices]
    rows = []
    for name, model in results["models"].items():
        for v in VARIANTS:
            s = model["stats"][v]
            row = [name, v, _mb(s["params"]), _mb(s["macs"]), _mb(s["onnx_bytes"]), _mb(s["gzip_bytes"])]
            row += [f"{np.median(model['p50_ms'][d][v]):.2f}" for d in devices]
            row += ["1" if v == "float" else format_interval(speedup(model, d, v), unit="x") for d in devices]
            rows.append(row)
    return markdown_table(header, rows)


def notes(results: dict[str, Any]) -> list[str]:
    lines = []
    for name, model in results["models"].items():
        heads = model["prune"]["attention_heads"]
        if heads:
            lines.append(f"{name}: attention heads after pruning: {heads}")
        for message in model["prune"]["skipped"]:
            lines.append(f"{name}: {message}")
        for variant, by_class in model.get("precision", {}).items():
            for device, per_op in by_class.items():
                lines.append(f"{name} {variant} for {device}: {per_op['final']['why']}")
        for variant, choice in model["attention_matmuls"].items():
            if choice:
                lines.append(
                    f"{name} {variant}: {choice['nodes']} attention MatMuls kept in **{choice['chosen']}** "
                    f"(int8 measured {choice.get('speedup', float('nan')):.2f}x vs float MatMuls on "
                    f"{choice['device_class']}, median of {len(choice.get('int8_p50_ms', []))} rounds)"
                )
    return lines


def render(results: dict[str, Any]) -> str:
    m, s = results["machine"], results["settings"]
    shape = "x".join(map(str, s["input_shape"]))
    patch = s.get("model_kwargs", {}).get("vit_tiny", {}).get("patch_size", 8)
    lines = [
        "# Architectures: what pruning and INT8 buy on real models (random weights)",
        "",
        f"torchvision ResNet-18 and MobileNetV3-small, timm ViT-Tiny ({patch}x{patch} patches) and ConvNeXt-Atto at "
        f"{shape}, built with random weights (`edgecompress.architectures`). Float vs structured pruning "
        f"(ratio {s['prune_ratio']}, no fine-tuning) vs static INT8 (QDQ per-channel, "
        f"{s['calibration_samples']} calibration images of sklearn digits at {shape}) vs both. "
        "**Accuracy is not reported: the weights are random**; sizes, MACs and latency do not depend on "
        "the weight values.",
        "",
        f"Latency: p50 per round (median of ≥ {s['min_runs']} runs, ≥ {s['min_duration_s']} s) on the "
        f"**emulated** device classes {', '.join(results['devices'])} (thread caps on this machine, not "
        f"board figures), {s['rounds']} interleaved rounds (the order rotates every round); the p50 column is "
        "the median over rounds, the speed-up the mean of the per-round ratios with its 95 % interval.",
        "",
        *(_per_class_sections(results) if per_class(results) else [table(results)]),
        "",
        "## Targets",
        "",
        *[f"- {t}" for t in targets(results)],
        "",
        f"Verdicts (benchmarks.common.verdict): {VERDICT_RULE} MACs are counted from the graph (exact); a "
        "speed-up must be more than 1x, so an interval touching 1 is undecided.",
        "",
        "## Notes",
        "",
        *[f"- {n}" for n in notes(results)],
        "",
        f"Machine: {m['cpu_model']} ({m['cpu_count']} CPUs, load average at start "
        f"{', '.join(f'{x:.1f}' for x in m['load_average_at_start'])}), torch {m['torch']}, onnxruntime "
        f"{m['onnxruntime']}, commit {m['git_commit']}, {m['date']}; the run took {results['seconds']:.0f} s."
        + (f" Command: `{results['command']}`." if "command" in results else ""),
        "",
        "![p50 latency per variant](results.png)",
        "",
    ]
    return "\n".join(lines)


def _per_class_sections(results: dict[str, Any]) -> list[str]:
    lines = [
        '**INT8 per class, precision per op group by measured cost** (`QuantConfig(objective="latency")`, '
        "`edgecompress.quantize.precision`): each class gets INT8 children of its own. Per op group, the "
        "model with it quantized and with it in float are timed in interleaved rounds on that class; the "
        "child kept is the fastest candidate whose speed-up over its float parent has a 95 % lower bound "
        "above 1, else the float parent itself. The weights are random, so accuracy cannot veto a group "
        f"here (`per_op_max_drop` {RANDOM_WEIGHTS_MAX_DROP}); latency alone decides. The rule: {RULE}.",
    ]
    for device in results["devices"]:
        lines += ["", f"### {device} (emulated)", "", class_table(results, device)]
    return lines


def plot(results: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    devices = results["devices"]
    fig, axes = plt.subplots(1, len(devices), figsize=(6 * len(devices), 4), squeeze=False)
    names = list(results["models"])
    width = 0.8 / len(VARIANTS)
    for ax, device in zip(axes[0], devices, strict=True):
        for i, v in enumerate(VARIANTS):
            values = [float(np.median(results["models"][n]["p50_ms"][device][v])) for n in names]
            ax.bar(np.arange(len(names)) + i * width, values, width, label=v)
        ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, fontsize=8)
        ax.set_ylabel("p50 latency (ms, batch 1)")
        ax.set_title(f"{device} (emulated)")
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    return figure_png(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one model, one round, one device class")
    parser.add_argument("--models", default="", help="comma-separated subset of " + ",".join(MODELS))
    parser.add_argument("--output", type=Path, default=HERE, help="folder for results.json/.md/.png")
    parser.add_argument(
        "--objective",
        choices=("size", "latency"),
        default="size",
        help="quantize objective: size (every op group INT8; the committed first reports) or latency "
        "(INT8 children per class, op groups kept INT8 only where that class measures them faster)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=0,
        help=f"interleaved timing rounds per class (0: {SETTINGS['rounds']}, or 1 with --quick); more rounds "
        "narrow the speed-up intervals on a noisy class",
    )
    args = parser.parse_args(argv)
    if args.rounds < 0:
        parser.error("--rounds must be ≥ 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    models = [m for m in args.models.split(",") if m] or (
        ["mobilenet_v3_small"] if args.quick else list(MODELS)
    )
    devices = list(DEVICE_CLASSES[:1] if args.quick else DEVICE_CLASSES)
    settings = QUICK if args.quick else SETTINGS
    if args.rounds:
        settings = {**settings, "rounds": args.rounds}
    results = run(
        models, devices, {**settings, "objective": args.objective} if args.objective != "size" else settings
    )
    results["command"] = "python -m benchmarks.architectures.run " + " ".join(argv or sys.argv[1:])
    write_report(results, args.output, render, plot, "results.png")
    print(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
