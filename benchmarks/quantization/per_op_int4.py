"""Issue 26 items 3 and 4 measured: precision per op group (objective latency) on MobileNetV3-small and
the CNN, and INT4 vs INT8 vs float weights on ViT-Tiny, on one local emulated device class.

    python -m benchmarks.quantization.per_op_int4            # the committed report (dated folder)
    python -m benchmarks.quantization.per_op_int4 --quick    # small inputs, few runs (smoke)

Part 1, per model: the per-op child (objective latency: every op group decided by interleaved rounds,
`edgecompress.quantize.precision`) and the all-INT8 child (objective size) against the float parent,
each in its own interleaved comparison (`Measurement.compare`, ≥ 8 rounds, speed-up = geometric mean
of per-round ratios with a t interval); with every group's decision, speed-up [interval] and accuracy
drop [interval]. Part 2: ViT-Tiny float vs static INT8 vs INT4 weights (MatMulNBits + int4 QDQ
convolution), objective size, in rotating rounds: ONNX bytes and p50 per round. Random weights and
sklearn digits upscaled as data: accuracy figures are agreement on real images, not task accuracy.
The machine is shared: the load average before and after is in the JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from benchmarks.architectures.run import digits_rgb
from benchmarks.common import machine_info, rotating_rounds, write_report
from edgecompress.data import Dataset
from edgecompress.edge import Measurement
from edgecompress.evaluate import model_stats
from edgecompress.export import export_onnx
from edgecompress.quantize.config import QuantConfig
from edgecompress.quantize.precision import quantize_static_measured
from edgecompress.reports import figure_png, markdown_table
from edgecompress.stats import MIN_LATENCY_ROUNDS, speedup_interval
from edgecompress.zoo import build_model

HERE = Path(__file__).resolve().parent
OUT = HERE / "2026-12-06-per-op-int4"
log = logging.getLogger(__name__)

CNN = {"family": "cnn", "kwargs": {"widths": [32, 64, 128], "depths": [2, 2, 2]}}  # benchmarks' baseline
SETTINGS = {
    "device_class": "rpi4-emulated",
    "per_op": {
        "mobilenet_v3_small": {"spec": {"factory": "edgecompress.architectures:mobilenet_v3_small"},
                               "shape": [3, 224, 224]},
    },
    "vit": {"spec": {"factory": "edgecompress.architectures:vit_tiny", "kwargs": {"img_size": 224, "patch_size": 16}},
            "shape": [3, 224, 224]},
    "calibration_samples": 32, "rounds": MIN_LATENCY_ROUNDS, "min_runs": 10, "min_duration_s": 0.3,
    "int4_block_size": 32,
}  # fmt: skip
QUICK = {
    **SETTINGS,
    "per_op": {"cnn": {"spec": CNN, "shape": [1, 16, 16]}},
    "vit": {"spec": {"factory": "edgecompress.architectures:vit_tiny"}, "shape": [3, 32, 32]},
    "calibration_samples": 8, "min_runs": 5, "min_duration_s": 0.05,
}  # fmt: skip


def digits_at(shape: list[int]) -> Dataset:
    """Digits upscaled to `shape` (one or three channels), 64 images per split."""
    data = digits_rgb(shape[1], limit=64)
    if shape[0] == 1:
        arrays = {k: (v[:, :1] if k.startswith("x_") else v) for k, v in data.arrays.items()}
        data = Dataset(data.name.replace("rgb", "gray"), "digits", arrays, data.class_names)
    return data


def _speed(s: dict[str, Any]) -> dict[str, Any]:
    return {
        k: s[k]
        for k in ("speedup", "ci_low", "ci_high", "rounds", "parent_p50_ms", "child_p50_ms", "emulated")
    }


def per_op(name: str, entry: dict[str, Any], settings: dict[str, Any], tmp: Path) -> dict[str, Any]:
    shape = entry["shape"]
    data = digits_at(shape)
    model = build_model(entry["spec"], tuple(shape), data.num_classes, seed=0)
    paths = {v: tmp / f"{name}-{v}.onnx" for v in ("float", "per_op", "all_int8")}
    export_onnx(model, tuple(shape), paths["float"])
    config = QuantConfig(calibration_samples=settings["calibration_samples"], target=settings["device_class"])
    started = time.perf_counter()
    proto, details = quantize_static_measured(paths["float"], data, config)
    decide_s = time.perf_counter() - started
    onnx.save(proto, str(paths["per_op"]))
    onnx.save(
        quantize_static_measured(paths["float"], data, replace(config, objective="size"))[0],
        str(paths["all_int8"]),
    )
    meter = Measurement(settings["device_class"], None, settings["min_runs"], settings["min_duration_s"])
    compared = {
        v: _speed(meter.compare(paths["float"], paths[v], settings["rounds"])) for v in ("per_op", "all_int8")
    }
    return {
        "shape": shape, "decide_seconds": decide_s, "per_op": details["per_op"],
        "bytes": {v: p.stat().st_size for v, p in paths.items()}, "vs_float": compared,
    }  # fmt: skip


def speed_pairs(p50: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    """`a/b`: p50 of a over p50 of b, per round (geometric mean, t interval): above 1, b is faster."""
    return {
        f"{a}/{b}": speedup_interval(p50[a], p50[b])
        for a, b in (("float", "int8"), ("float", "int4"), ("int8", "int4"))
    }


def int4_vit(settings: dict[str, Any], tmp: Path) -> dict[str, Any]:
    entry = settings["vit"]
    shape = entry["shape"]
    data = digits_at(shape)
    model = build_model(entry["spec"], tuple(shape), data.num_classes, seed=0)
    paths = {v: tmp / f"vit-{v}.onnx" for v in ("float", "int8", "int4")}
    export_onnx(model, tuple(shape), paths["float"])
    base = QuantConfig(
        calibration_samples=settings["calibration_samples"], target=settings["device_class"], objective="size",
        int4_block_size=settings["int4_block_size"],
    )  # fmt: skip
    for v, bits in (("int8", 8), ("int4", 4)):
        onnx.save(
            quantize_static_measured(paths["float"], data, replace(base, weight_bits=bits))[0], str(paths[v])
        )
    ops = {v: sorted({n.op_type for n in onnx.load(str(p)).graph.node}) for v, p in paths.items()}
    meter = Measurement(settings["device_class"], None, settings["min_runs"], settings["min_duration_s"])
    p50 = rotating_rounds(list(paths), settings["rounds"], lambda v: meter.latency(paths[v])["p50_ms"])
    pairs = speed_pairs(p50)
    return {
        "shape": shape, "ops": ops, "p50_ms": p50,
        "stats": {v: model_stats(p).as_dict() for v, p in paths.items()},
        "speedup": pairs,  # a/b: p50 of a over p50 of b, per round, geometric mean with its t interval
    }  # fmt: skip


def run(settings: dict[str, Any]) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": machine_info(), "settings": settings, "per_op": {}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgecompress-perop-") as tmp:
        for name, entry in settings["per_op"].items():
            results["per_op"][name] = per_op(name, entry, settings, Path(tmp))
            log.info("%s done", name)
        results["int4_vit"] = int4_vit(settings, Path(tmp))
    results["seconds"] = time.perf_counter() - started
    results["load_average_at_end"] = os.getloadavg()
    return results


def _iv(s: dict[str, Any]) -> str:
    return f"{s['speedup']:.2f}x [{s['ci_low']:.2f}, {s['ci_high']:.2f}]"


def _slower(s: dict[str, Any]) -> str:
    return "slower" if s["ci_high"] < 1 else "faster" if s["ci_low"] > 1 else "undecided"


def render(results: dict[str, Any]) -> str:
    m, s = results["machine"], results["settings"]
    cls = f"{s['device_class']} (emulated)"
    lines = [
        "# Precision per op group by measured cost, and INT4 weights (issue 26 items 3, 4)", "",
        f"{m['date']}, commit {m['git_commit']}, {m['cpu_model']} ({m['cpu_count']} cores, shared), "
        f"onnxruntime {m['onnxruntime']}; load average at start {m['load_average_at_start']}, at end "
        f"{results['load_average_at_end']}; {results['seconds']:.0f} s. Device class {cls}: emulated, not "
        "board figures. Random weights; data: sklearn digits upscaled (accuracy = agreement on real images).",
        "", "Command: `python -m benchmarks.quantization.per_op_int4`", "",
        "## Per-op precision: is an INT8 child ever slower than float now?", "",
    ]  # fmt: skip
    rows = []
    for name, r in results["per_op"].items():
        for v, label in (("all_int8", "all INT8 (objective size)"), ("per_op", "per-op (objective latency)")):
            c = r["vs_float"][v]
            rows.append([name, label, r["bytes"][v], f"{c['parent_p50_ms']:.3f}", f"{c['child_p50_ms']:.3f}",
                         _iv(c), _slower(c)])  # fmt: skip
    lines += [markdown_table(["model", "child", "ONNX bytes", "float p50 ms", "child p50 ms",
                              "speed-up vs float [95 % CI]", "verdict"], rows), ""]  # fmt: skip
    for name, r in results["per_op"].items():
        p = r["per_op"]
        final = p["final"]
        head = f"### {name} {r['shape']}: decisions ({r['decide_seconds']:.0f} s)"
        kept = "every group stays float: the float parent is returned" if p["all_float"] else (
            f"quantized groups: {', '.join(final['quantized_groups'])}")  # fmt: skip
        lines += [head, "", f"Result: {kept}. {final.get('why', '')}".strip(), ""]
        rows = [[g["group"], g["nodes"], g["chosen"],
                 _iv({"speedup": g["speedup"], "ci_low": g["speedup_ci"][0], "ci_high": g["speedup_ci"][1]}),
                 f"{g['accuracy_drop'] * 100:+.2f} [{g['accuracy_drop_ci'][0] * 100:+.2f}, {g['accuracy_drop_ci'][1] * 100:+.2f}]",
                 g["why"], "yes" if g.get("in_child") else "no"] for g in p["groups"] if "speedup" in g]  # fmt: skip
        lines += [markdown_table(["group", "nodes", "decision", "speed-up of quantizing it [95 % CI]",
                                  "accuracy drop pt [95 % CI]", "why", "in the child"], rows), ""]  # fmt: skip
        for c in final.get("candidates", []):
            iv = {"speedup": c["speedup"], "ci_low": c["speedup_ci"][0], "ci_high": c["speedup_ci"][1]}
            lines.append(f"- candidate '{c['name']}' ({', '.join(c['groups'])}) vs float: {_iv(iv)}")
        lines.append("")
    lines += [f"Rule: {next(iter(results['per_op'].values()))['per_op']['rule']}.", ""]
    v = results["int4_vit"]
    lines += [f"## INT4 vs INT8 vs float weights: ViT-Tiny {v['shape']} on {cls}", ""]
    rows = [[k, v["stats"][k]["onnx_bytes"], v["stats"][k]["gzip_bytes"], f"{np.median(v['p50_ms'][k]):.2f}",
             ", ".join(o for o in v["ops"][k] if o in ("MatMulNBits", "DequantizeLinear", "MatMul", "Gemm", "Conv"))]
            for k in v["p50_ms"]]  # fmt: skip
    lines += [
        markdown_table(
            ["weights", "ONNX bytes", "gzip bytes", "p50 ms (median of rounds)", "weight ops"], rows
        ),
        "",
    ]
    rows = [[k, _iv(i), _slower(i)] for k, i in v["speedup"].items()]
    lines += [markdown_table(["pair (a/b: p50 of a over p50 of b)", "ratio [95 % CI]", "b is"], rows), ""]
    size = v["stats"]["int4"]["onnx_bytes"] / v["stats"]["int8"]["onnx_bytes"]
    lines.append(
        f"INT4 weights are {size:.2f}x the INT8 file; on {cls} INT4 is {_slower(v['speedup']['int8/int4'])} than "
        f"INT8 and {_slower(v['speedup']['float/int4'])} than float (the verdicts from the intervals above). "
        "Op types listed are the saved graph's, before ONNX Runtime's optimizations."
    )
    return "\n".join(lines)


def plot(results: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    labels, mids, errs = [], [], [[], []]
    for name, r in results["per_op"].items():
        for v in ("all_int8", "per_op"):
            c = r["vs_float"][v]
            labels.append(f"{name}\n{v}")
            mids.append(c["speedup"])
            errs[0].append(c["speedup"] - c["ci_low"])
            errs[1].append(c["ci_high"] - c["speedup"])
    a.bar(
        range(len(mids)),
        mids,
        yerr=errs,
        color=["tab:red" if lab.endswith("all_int8") else "tab:green" for lab in labels],
    )
    a.axhline(1, color="grey", ls="--", lw=1)
    a.set_xticks(range(len(mids)), labels, fontsize=7)
    a.set_ylabel("speed-up over float (95 % CI)")
    a.set_title(f"INT8 children on {results['settings']['device_class']} (emulated)")
    v = results["int4_vit"]
    for k in v["p50_ms"]:
        b.scatter(v["stats"][k]["onnx_bytes"] / 1e6, np.median(v["p50_ms"][k]), s=60)
        b.annotate(
            k,
            (v["stats"][k]["onnx_bytes"] / 1e6, np.median(v["p50_ms"][k])),
            xytext=(4, 3),
            textcoords="offset points",
        )
    b.set_xlabel("ONNX MB")
    b.set_ylabel("p50 ms")
    b.set_title(f"ViT-Tiny {v['shape']}: float / INT8 / INT4 weights")
    return figure_png(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small inputs, few runs (smoke test)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--render", action="store_true", help="re-render results.md and the plot from results.json"
    )
    args = parser.parse_args()
    if args.render:
        out = args.out or OUT
        results = json.loads((out / "results.json").read_text())
        # the first run stored b/a under the a/b names: recomputed from the stored per-round p50s
        results["int4_vit"]["speedup"] = speed_pairs(results["int4_vit"]["p50_ms"])
        write_report(results, out, render, plot, "results.png")
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("onnxruntime", "root"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    results = run(QUICK if args.quick else SETTINGS)
    write_report(results, args.out or OUT, render, plot, "results.png")


if __name__ == "__main__":
    main()
