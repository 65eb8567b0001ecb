"""Latency-aware vs uniform structured pruning at equal measured p50 on the digits CNN (64/128 channels):
per seed, a parent trained 3 epochs; the latency-aware child (`prune_for_latency`, latency_ratio 0.65);
a uniform Torch-Pruning magnitude child whose ratio is searched to the latency-aware child's measured
p50 (`budget_metric=latency`); both fine-tuned alike; equal p50 checked with interleaved rounds (8);
test accuracy reported (the choice uses no test images). 3 seeds; the verdict comes from the interval
of the paired difference (latency-aware − uniform) over seeds.

    python -m benchmarks.profile.prune_vs_uniform
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import machine_info, mean_interval, verdict, write_report
from edgecompress.data import load_digits
from edgecompress.edge import Measurement
from edgecompress.export import export_onnx
from edgecompress.prune.latency import prune_for_latency
from edgecompress.prune.structured import StructuredConfig, prune_structured
from edgecompress.reports import markdown_table
from edgecompress.train import TrainConfig, accuracy, fit
from edgecompress.zoo import build_model

HERE = Path(__file__).resolve().parent / "pruning"
SPEC = {"family": "cnn", "kwargs": {"widths": [64, 128], "depths": [2, 2]}}
SEEDS = (0, 1, 2)
LATENCY_RATIO = 0.65


def one_seed(data, seed: int, cache: str) -> dict[str, Any]:
    parent = build_model(SPEC, data.input_shape, data.num_classes, seed=seed)
    fit(parent, data, TrainConfig(epochs=3, batch_size=64, lr=1e-2, seed=seed), progress=False)
    ft = TrainConfig(epochs=5, batch_size=64, lr=1e-3, seed=seed)
    aware_cfg = StructuredConfig(
        latency_ratio=LATENCY_RATIO, finetune_after=ft, seed=seed, latency_cache=cache
    )
    aware, aware_report = prune_for_latency(
        parent, data.input_shape, data.num_classes, aware_cfg, data, False
    )
    target = aware_report["latency_aware"]["allocation"]["measured_ms"]
    uni_cfg = StructuredConfig(budget_metric="latency", budget=target, finetune_after=ft, seed=seed)
    uniform, uni_report = prune_structured(parent, data.input_shape, data.num_classes, uni_cfg, data, False)
    x_test, y_test = data.split("test")
    with tempfile.TemporaryDirectory() as tmp:
        for name, m in (("aware", aware), ("uniform", uniform)):
            export_onnx(m.eval(), tuple(data.input_shape), Path(tmp) / f"{name}.onnx")
        cmp = Measurement("rpi4-emulated", None, 200, 0.3).compare(
            Path(tmp) / "uniform.onnx", Path(tmp) / "aware.onnx", rounds=8
        )
    return {
        "seed": seed,
        "parent_test_accuracy": accuracy(parent, x_test, y_test),
        "aware": {"test_accuracy": accuracy(aware, x_test, y_test), "layer_ratios": aware_report["config"]["allocated_layer_ratios"],
                  "channels": aware_report["channels"], "predicted_ms": aware_report["latency_aware"]["allocation"]["predicted_ms"],
                  "measured_ms": target, "cache_hit": aware_report["latency_aware"]["cache_hit"]},
        "uniform": {"test_accuracy": accuracy(uniform, x_test, y_test), "ratio": uni_report["ratio"], "channels": uni_report["channels"],
                    "measured_ms": uni_report["budget"]["achieved"]},
        "equal_p50": {k: cmp[k] for k in ("speedup", "ci_low", "ci_high", "parent_p50_ms", "child_p50_ms")},
    }  # fmt: skip


def run() -> dict[str, Any]:
    data = load_digits()
    info = machine_info()
    with tempfile.TemporaryDirectory() as cache:
        seeds = [one_seed(data, s, cache) for s in SEEDS]
    diff = mean_interval([s["aware"]["test_accuracy"] - s["uniform"]["test_accuracy"] for s in seeds])
    ratio = mean_interval([s["equal_p50"]["speedup"] for s in seeds])
    return {
        "machine": {**info, "load_average_at_end": os.getloadavg(), "shared": True},
        "device_class": "rpi4-emulated", "emulated": True, "spec": SPEC, "latency_ratio": LATENCY_RATIO,
        "seeds": seeds, "accuracy_difference": diff, "p50_uniform_over_aware": ratio,
        "verdict": {"aware_beats_uniform": verdict(diff, 0.0, True, strict=True),
                    "equal_p50_within_5pct": "met" if all(s["equal_p50"]["ci_low"] >= 0.95 and s["equal_p50"]["ci_high"] <= 1.05 for s in seeds) else "not shown"},
        "command": "python -m benchmarks.profile.prune_vs_uniform",
    }  # fmt: skip


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    rows = [[s["seed"], s["parent_test_accuracy"], s["aware"]["test_accuracy"], s["uniform"]["test_accuracy"],
             s["aware"]["measured_ms"], s["uniform"]["measured_ms"],
             f"{s['equal_p50']['speedup']:.3f} [{s['equal_p50']['ci_low']:.3f}, {s['equal_p50']['ci_high']:.3f}]",
             ", ".join(f"{k}={v:g}" for k, v in s["aware"]["layer_ratios"].items()), s["uniform"]["ratio"]] for s in r["seeds"]]  # fmt: skip
    d = r["accuracy_difference"]
    return (
        f"# Latency-aware vs uniform pruning at equal p50 (digits CNN, {r['device_class']}, emulated)\n\n"
        f"Measured {m['date']} on {m['cpu_model']} ({m['cpu_count']} CPUs), git {m['git_commit']}; **a shared machine**, "
        f"load average {m['load_average_at_start'][0]:.2f} at start, {m['load_average_at_end'][0]:.2f} at end. "
        f"Command: `{r['command']}`. Digits' test split (270 images): one image is 0.37 pt.\n\n"
        + markdown_table(
            [
                "seed",
                "parent test acc",
                "latency-aware",
                "uniform",
                "aware p50 ms",
                "uniform p50 ms",
                "uniform/aware p50 [95 %]",
                "aware layer ratios",
                "uniform ratio",
            ],
            rows,
        )  # fmt: skip
        + f"\n\nLatency-aware − uniform test accuracy: mean {d['mean']:+.4f}, 95 % interval "
        f"[{d['low']:+.4f}, {d['high']:+.4f}] over {d['n']} seeds → **{r['verdict']['aware_beats_uniform']}** "
        f"(rule: met when the interval's lower bound > 0). Equal p50 within ±5 % in every seed (interval): "
        f"{r['verdict']['equal_p50_within_5pct']}.\n"
    )


def plot(r: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgecompress.reports import figure_png

    fig, ax = plt.subplots(figsize=(5, 3))
    for s in r["seeds"]:
        ax.plot(
            ["latency-aware", "uniform"],
            [s["aware"]["test_accuracy"], s["uniform"]["test_accuracy"]],
            marker="o",
            label=f"seed {s['seed']}",
        )
    ax.set_ylabel("test accuracy")
    ax.set_title("at equal measured p50 (rpi4-emulated)", fontsize=9)
    ax.legend(fontsize=7)
    return figure_png(fig)


if __name__ == "__main__":
    write_report(run(), HERE, render, plot, "results.png")
