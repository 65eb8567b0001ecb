"""Quantization benchmark: every method on the Fashion-MNIST CNN and an MLP, side by side.

    python -m benchmarks.quantization.run            # full run (Fashion-MNIST; ~25 min on 2 busy cores)
    python -m benchmarks.quantization.run --quick    # digits, few rows (a smoke test; writes to --out)

Rows per model: float, ONNX Runtime dynamic, static QDQ per-tensor and per-channel × MinMax /
Entropy / Percentile, the ONNX Runtime default full-range static (to show the AVX2 overflow trap),
static with symmetric INT8 activations (S8S8, per-tensor: the aggressive PTQ that loses accuracy),
FP16, mixed precision (repairing that S8S8 model), QAT, and the auto-tuner's pick. Accuracy and
top-1 agreement with float are on the test split (the tuner and mixed precision select on
validation); latency is p50/p90 at batch 1 on the `rpi4-emulated` class (1 thread, one core of
this machine: emulated, not a real board).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from benchmarks.common import CACHE, baseline_model, fashion_mnist_dataset_artifact, machine_info, write_json
from edgecompress.data import load_dataset, load_digits, save_dataset
from edgecompress.export import load_model_package, onnx_logits
from edgecompress.measure import Measurement
from edgecompress.quantize import QuantConfig, quantize_model
from edgecompress.quantize.autotune import AutotuneConfig, Criterion, autotune
from edgecompress.reports import figure_png, markdown_table
from edgecompress.step import Lineage
from edgecompress.train import TrainConfig, train_step

HERE = Path(__file__).resolve().parent
DEVICE = "rpi4-emulated"
MLP_SPEC = {"family": "mlp", "kwargs": {"hidden": [512, 256]}}
# A smaller Fashion-MNIST CNN (same family as the baseline, 1/15 of its MACs), trained here in minutes
SMALL_CNN_SPEC = {"family": "cnn", "kwargs": {"widths": [16, 32, 64], "depths": [1, 1, 1]}}
log = logging.getLogger("benchmarks.quantization")


def cached_model(dataset_path: Path, spec: dict[str, Any], config: TrainConfig, tag: str) -> Path:
    key = hashlib.sha256(
        json.dumps([spec, asdict(config), dataset_path.name], sort_keys=True).encode()
    ).hexdigest()[:12]
    out = CACHE / f"quant-{tag}-{key}"
    if not (out / "model.json").exists():
        train_step(dataset_path, spec, out, config, Lineage(enabled=False), progress=False)
    return out


def variants(
    quick: bool, qat_samples: int, qat_epochs: int, target: float
) -> list[tuple[str, str, QuantConfig]]:
    """(row name, group, config). ONNX Runtime's stock PTQ options are 'peer'; what this project adds is 'ours'."""
    base = QuantConfig(calibration_samples=256)
    s8 = replace(base, per_channel=False, activation_type="int8")
    rows = [("dynamic", "peer", replace(base, method="dynamic"))]
    methods = ("minmax",) if quick else ("minmax", "entropy", "percentile")
    for grain in (False, True):
        for m in methods:
            name = f"static {'per-channel' if grain else 'per-tensor'} {m}"
            rows.append((name, "peer", replace(base, per_channel=grain, calibration_method=m)))
    if base.reduce_range:
        rows.append(
            ("static per-channel minmax, full range (ORT default)", "peer", replace(base, reduce_range=False))
        )
    rows += [
        ("static per-tensor S8S8 minmax", "peer", s8),
        ("fp16 (weights)", "ours", replace(base, method="fp16")),
        ("mixed precision (S8S8 + sensitive nodes float)", "ours",
         replace(s8, method="mixed", target_accuracy=target, probe_samples=1000)),
        ("qat", "ours", replace(base, method="qat", qat_epochs=qat_epochs, qat_lr=1e-4, qat_max_train_samples=qat_samples)),
    ]  # fmt: skip
    return rows


def measure(
    path: Path, x: np.ndarray, y: np.ndarray, float_pred: np.ndarray | None, bench: dict[str, Any]
) -> dict[str, Any]:
    pred = onnx_logits(path, x).argmax(1)
    lat = Measurement(DEVICE, None, bench["min_runs"], bench["min_duration_s"]).latency(path)
    return {
        "accuracy": float(np.mean(pred == y)),
        "top1_agreement": float(np.mean(pred == float_pred)) if float_pred is not None else 1.0,
        "onnx_bytes": path.stat().st_size, "p50_ms": lat["p50_ms"], "p90_ms": lat["p90_ms"], "_pred": pred,
    }  # fmt: skip


def bench_model(
    name: str, package_dir: Path, dataset_path: Path, quick: bool, workdir: Path
) -> dict[str, Any]:
    ds = load_dataset(dataset_path)
    package = load_model_package(package_dir)
    module = package.load_module()
    x, y = ds.split("test")
    xv, yv = ds.split("val")
    bench = {"min_runs": 50 if quick else 300, "min_duration_s": 0.1 if quick else 1.5}
    float_val = float(np.mean(onnx_logits(package.onnx_path, xv).argmax(1) == yv))
    rows, notes, timings = [], {}, {}
    start = time.monotonic()
    base = measure(package.onnx_path, x, y, None, bench)
    float_pred = base.pop("_pred")
    rows.append({"name": "float", "group": "baseline", **base})
    qat_samples = 2000 if quick else 20000
    for row_name, group, cfg in variants(quick, qat_samples, 1, float_val - 0.003):
        t0 = time.monotonic()
        log.info("%s: %s", name, row_name)
        proto, details = quantize_model(package.onnx_path, ds, cfg, module)
        path = workdir / f"{name}-{len(rows)}.onnx"
        onnx.save_model(proto, str(path))
        m = measure(path, x, y, float_pred, bench)
        m.pop("_pred")
        rows.append({"name": row_name, "group": group, **m})
        timings[row_name] = time.monotonic() - t0
        if "excluded_nodes" in details:
            notes[row_name] = {
                "excluded_nodes": details["excluded_nodes"],
                "probe_accuracy": details["probe_accuracy"],
            }
        if "torch_vs_onnx_top1_agreement" in details:
            notes[row_name] = {
                k: details[k] for k in ("torch_vs_onnx_top1_agreement", "torch_vs_onnx_max_abs_error")
            }
    t0 = time.monotonic()
    measurement = Measurement(DEVICE, None, bench["min_runs"], bench["min_duration_s"])
    cfg = AutotuneConfig(Criterion(0.003), "latency", measurement, calibration_samples=256, qat_epochs=1,
                         qat_max_train_samples=qat_samples)  # fmt: skip
    result = autotune(package.onnx_path, ds, cfg, module, workdir / f"{name}-autotune")
    pick_name = f"auto-tuner pick ({result['pick']})" + ("" if result["passed"] else " NOT PASSED")
    m = measure(Path(result["pick_path"]), x, y, float_pred, bench)
    m.pop("_pred")
    rows.append({"name": pick_name, "group": "ours", **m})
    timings["autotune"] = time.monotonic() - t0
    trials = [{"name": t["name"], "passed": t["passed"], "reasons": t["reasons"],
               **{k: t.get("check", {}).get(k) for k in ("accuracy_drop", "speedup", "size_ratio")}}
              for t in result["trials"]]  # fmt: skip
    return {"baseline": "float", "rows": rows, "autotune_pick": pick_name,
            "_extra": {"autotune_trials": trials, "autotune_passed": result["passed"], "float_val_accuracy": float_val,
                       "notes": notes, "seconds": time.monotonic() - start, "row_seconds": timings}}  # fmt: skip


def table(model: dict[str, Any]) -> str:
    f = next(r for r in model["rows"] if r["name"] == model["baseline"])
    rows = [[r["name"], r["group"], r["accuracy"] * 100, (r["accuracy"] - f["accuracy"]) * 100, r["top1_agreement"],
             r["onnx_bytes"], f["onnx_bytes"] / r["onnx_bytes"], r["p50_ms"], r["p90_ms"], f["p50_ms"] / r["p50_ms"]]
            for r in model["rows"]]  # fmt: skip
    return markdown_table(["row", "group", "test acc %", "Δ points", "top-1 agreement", "ONNX bytes", "× smaller",
                           "p50 ms", "p90 ms", "× faster (p50)"], rows)  # fmt: skip


def plot(models: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.8), squeeze=False)
    colors = {"baseline": "black", "peer": "tab:blue", "ours": "tab:orange"}
    for ax, (name, model) in zip(axes[0], models.items(), strict=True):
        f = next(r for r in model["rows"] if r["name"] == model["baseline"])
        for r in model["rows"]:
            ax.scatter(
                f["p50_ms"] / r["p50_ms"],
                r["accuracy"] * 100,
                color=colors[r["group"]],
                marker="*" if r["name"] == model["autotune_pick"] else "o",
                s=150 if r["name"] == model["autotune_pick"] else 30,
            )
            ax.annotate(r["name"][:38], (f["p50_ms"] / r["p50_ms"], r["accuracy"] * 100), fontsize=6, xytext=(3, 2),
                        textcoords="offset points")  # fmt: skip
        ax.axvline(1.0, color="grey", lw=0.8, ls=":")
        ax.set_xlabel(f"speed-up over float, p50 on {DEVICE} (1 thread)")
        ax.set_ylabel("test accuracy %")
        ax.set_title(f"{name}: blue = ONNX Runtime PTQ options, orange = ours, ★ = auto-tuner")
    return figure_png(fig)


def targets(models: dict[str, Any]) -> list[str]:
    lines = []
    if "cnn" not in models:
        lines.append(
            "- CNN (the cached Fashion-MNIST baseline): **NOT MEASURED in this run** — the baseline was still being "
            "trained when this run was made, and training a smaller CNN here took 16 min per epoch on the shared "
            "machine. Once `benchmarks/.cache` holds it: `python -m benchmarks.quantization.run --models cnn --merge`."
        )
    for key in ("cnn", "cnn-small"):
        cnn = models.get(key)
        if not cnn:
            continue
        f = cnn["rows"][0]
        p = next(r for r in cnn["rows"] if r["name"] == cnn["autotune_pick"])
        speed, small = f["p50_ms"] / p["p50_ms"], f["onnx_bytes"] / p["onnx_bytes"]
        drop = (f["accuracy"] - p["accuracy"]) * 100
        ok = speed >= 1.8 and small >= 3.5 and drop <= 0.3
        which = "" if key == "cnn" else " (the small CNN, NOT the baseline CNN the target names)"
        lines.append(
            f"- {key} auto-tuner pick{which}: {speed:.2f}× faster (target ≥ 1.8), {small:.2f}× smaller (≥ 3.5), "
            f"accuracy {-drop:+.2f} points vs float (drop ≤ 0.3): **{'met' if ok else 'MISSED'}**"
        )
    for name, model in models.items():
        f = model["rows"][0]
        lossy = [
            r for r in model["rows"] if r["group"] == "peer" and (f["accuracy"] - r["accuracy"]) * 100 > 1
        ]
        fixes = [r for r in model["rows"] if r["name"].startswith(("mixed", "qat"))]
        for r in lossy:
            best = max(fixes, key=lambda q: q["accuracy"]) if fixes else None
            if best is None:
                continue
            gap = (f["accuracy"] - best["accuracy"]) * 100
            lines.append(f"- {name}: `{r['name']}` loses {(f['accuracy'] - r['accuracy']) * 100:.2f} points; best recovery "
                         f"`{best['name']}` is at {-gap:+.2f} points vs float (target: drop ≤ 0.3): "
                         f"**{'met' if gap <= 0.3 else 'MISSED'}**")  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="digits, small models, few rows (smoke test)")
    parser.add_argument(
        "--models", default="cnn,mlp", help="comma-separated: cnn, mlp, cnn-small (default cnn,mlp)"
    )
    parser.add_argument(
        "--out", type=Path, default=HERE, help="where results.json/.md/.png go (default: this folder)"
    )
    parser.add_argument(
        "--merge", action="store_true", help="keep the other models already in --out/results.json"
    )
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite results.md/.png from results.json"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("onnxruntime", "edgecompress.farm"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("EDGECOMPRESS_NO_PROGRESS", "1")
    started = time.monotonic()
    if args.render_only:
        results = json.loads((args.out / "results.json").read_text())
        extras = json.loads((args.out / "details.json").read_text())
        (args.out / "results.png").write_bytes(plot(results["models"]))
        seconds = sum(e["seconds"] for e in extras.values())
        (args.out / "results.md").write_text(markdown(results, extras, seconds, args))
        return 0
    machine = machine_info()
    names = [n for n in args.models.split(",") if n]
    models: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-quant-") as tmp:
        work = Path(tmp)
        if args.quick:
            data = work / "digits.npz"
            save_dataset(load_digits(), data)
            packages = {
                "cnn": lambda: train_small(data, {"family": "cnn", "kwargs": {"widths": [8, 16], "depths": [1, 1]}}, work / "cnn"),
                "mlp": lambda: train_small(data, {"family": "mlp", "kwargs": {"hidden": [64]}}, work / "mlp"),
            }  # fmt: skip
        else:
            data = fashion_mnist_dataset_artifact()
            packages = {
                "cnn": baseline_model,
                "mlp": lambda: cached_model(data, MLP_SPEC, TrainConfig(epochs=3, batch_size=128), "mlp"),
                "cnn-small": lambda: cached_model(
                    data, SMALL_CNN_SPEC, TrainConfig(epochs=3, batch_size=128), "cnn-small"
                ),
            }
        for name in names:
            models[name] = bench_model(name, packages[name](), data, args.quick, work)
    extras = {n: m.pop("_extra") for n, m in models.items()}
    machine["load_average_at_end"] = os.getloadavg()
    if args.merge and (args.out / "results.json").exists():
        old = json.loads((args.out / "results.json").read_text())
        old_extras = json.loads((args.out / "details.json").read_text())
        models = {**{k: v for k, v in old["models"].items() if k not in models}, **models}
        extras = {**{k: v for k, v in old_extras.items() if k not in extras}, **extras}
        machine["merged_from_earlier_run"] = old["machine"]
    results = {"machine": machine, "models": models}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "results.json", results)
    write_json(args.out / "details.json", extras)
    (args.out / "results.png").write_bytes(plot(models))
    (args.out / "results.md").write_text(markdown(results, extras, time.monotonic() - started, args))
    print((args.out / "results.md").read_text())
    return 0


def train_small(data: Path, spec: dict[str, Any], out: Path) -> Path:
    train_step(data, spec, out, TrainConfig(epochs=3, batch_size=64), Lineage(enabled=False), progress=False)
    return out


NOTES = """## Notes (read before quoting the table)

- **Emulated device, shared machine.** `rpi4-emulated` is one thread on one core of this x86 machine, not a
  Raspberry Pi. The machine was shared with other agents (load average above); tiny models (tens of µs) have
  latency noise of the same order as the differences between INT8 variants. Compare ratios, and only large ones.
- **AVX2 without VNNI: full-range INT8 weights overflow.** ONNX Runtime's U8S8 kernels multiply pairs into a
  saturating int16 (`vpmaddubsw`); with 8-bit weights the QDQ kernels then disagree with the QDQ graph's own
  semantics (measured on the digits CNN: max |Δlogit| 0.39, top-1 agreement 0.78 between ORT with and without
  optimisations). `QuantConfig.reduce_range` therefore defaults to on for x86 CPUs without VNNI (7-bit weights);
  the "full range (ORT default)" row shows the default ORT setting next to it.
- **Symmetric INT8 activations (S8S8) + ReLU removal = a broken model.** ONNX Runtime's static quantizer drops
  the `Relu` after each Gemm/Conv, relying on the output QuantizeLinear to clamp at zero — which only holds for
  asymmetric UINT8 activations (zero point 0 = qmin). With symmetric INT8 activations the zero point sits in the
  middle of the range and negative pre-activations pass through: the MLP falls to ~31 %. The graph itself
  computes this (same accuracy with ORT optimisations disabled), so it is not a kernel issue. This is the
  "PTQ loses > 1 point" case of the issue's second target. Mixed precision (keeping the most sensitive Gemms in
  float, which keeps their ReLU) recovers part of it but cannot reach the target while keeping ≥ 1 layer INT8;
  QAT recovers to float accuracy, but **with its own activation scheme (UINT8 asymmetric)**, so it repairs the
  model rather than the S8S8 configuration; the honest fix for S8S8 on ORT is not to use it with ReLU nets.
- **FP16** stores weights in float16 and casts them once at session load (ORT's CPU provider has no float16
  convolution kernels on x86): half the size, float speed and accuracy.
- **QAT** here is 1 epoch on 20k training samples with distillation from the float parent (budget of this
  benchmark); the exported QDQ graph runs as QLinearConv/QGemm in ORT (checked in tests).
"""


def markdown(
    results: dict[str, Any], extras: dict[str, Any], seconds: float, args: argparse.Namespace
) -> str:
    m = results["machine"]
    lines = ["# Quantization benchmark", "",
             f"Reproduce: `python -m benchmarks.quantization.run{' --quick' if args.quick else ''}` "
             f"({seconds / 60:.1f} min here). Machine: {m['cpu_model']}, {m['cpu_count']} cores, ONNX Runtime "
             f"{m['onnxruntime']}, torch {m['torch']}, INT8 dot-product instructions (VNNI): "
             f"{'no → 7-bit weights (reduce_range)' if m.get('int8_reduce_range_needed') else 'yes → full-range weights'}, "
             f"commit {m['git_commit']}; load average {m['load_average_at_start']} at "
             f"start, {m['load_average_at_end']} at end (the machine was shared with other jobs: absolute timings are noisy, "
             "ratios were measured side by side in one run).", "",
             f"Latency: batch 1 on `{DEVICE}` (ONNX Runtime CPU, 1 thread pinned to one core of this x86 machine — "
             "**emulated, not a Raspberry Pi**). Accuracy and agreement with float: test split. The auto-tuner "
             "(criterion: ≤ 0.3 point drop on the validation split; objective: p50 latency on the same class) and "
             "mixed precision select on validation, never on test.", "", "## Targets", "", *targets(results["models"]), ""]  # fmt: skip
    for name, model in results["models"].items():
        ex = extras[name]
        lines += [
            f"## {name}",
            "",
            table(model),
            "",
            f"Auto-tuner trials ({'passed' if ex['autotune_passed'] else 'none passed'}):",
            "",
        ]
        lines += [
            f"- {t['name']}: {'PASS' if t['passed'] else '; '.join(t['reasons'])}"
            for t in ex["autotune_trials"]
        ]
        if ex["notes"]:
            lines += ["", "Notes: " + json.dumps(ex["notes"])]
        lines += ["", f"Time: {ex['seconds']:.0f} s for this model.", ""]
    lines += ["![accuracy vs speed-up](results.png)", "", NOTES]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
