"""Latency-aware vs uniform structured pruning at equal measured p50: per seed, a parent (trained per
seed, or once and shared with `--shared-parent`); the latency-aware child (`prune_for_latency`,
latency_ratio 0.65); a uniform Torch-Pruning magnitude child whose ratio is searched to the
latency-aware child's measured p50 (`budget_metric=latency`); both fine-tuned alike; equal p50 checked
with interleaved rounds (8); test accuracy reported (the choice uses no test images). 3 seeds; the
verdict comes from the interval of the paired difference (latency-aware − uniform) over seeds.

    python -m benchmarks.profile.prune_vs_uniform          # digits CNN (64/128), the first report
    python -m benchmarks.profile.prune_vs_uniform --dataset fashion-mnist --model cnn \
        --parent-epochs 3 --finetune-epochs 1 --shared-parent --out benchmarks/profile/pruning/DATE-fmnist-cnn
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import machine_info, mean_interval, verdict, write_report
from edgecompress.data import load_digits, load_fashion_mnist
from edgecompress.edge import Measurement
from edgecompress.export import export_onnx
from edgecompress.prune.latency import NETADAPT_ROUNDS, prune_for_latency
from edgecompress.prune.structured import LATENCY_METHODS, StructuredConfig, model_cost, prune_structured
from edgecompress.reports import markdown_table
from edgecompress.train import TrainConfig, accuracy, fit
from edgecompress.zoo import build_model

HERE = Path(__file__).resolve().parent / "pruning"
SPEC = {"family": "cnn", "kwargs": {"widths": [64, 128], "depths": [2, 2]}}
# the models a run may name: the digits CNN above, the Fashion-MNIST baseline CNN and the zoo's
# MobileNet-style model
SPECS = {
    "cnn": {"digits": SPEC, "fashion-mnist": {"family": "cnn", "kwargs": {"widths": [32, 64, 128], "depths": [2, 2, 2]}}},
    "mobilenet": {"digits": {"family": "mobilenet"}, "fashion-mnist": {"family": "mobilenet"}},
}  # fmt: skip
# what the report says of the machine (`--quiet-machine`: nothing else was started on it)
MACHINE = {
    True: "**a shared machine**",
    False: "**a quiet machine** (nothing else was started on it during the run)",
}
DATASETS = {"digits": load_digits, "fashion-mnist": load_fashion_mnist}
SEEDS = (0, 1, 2)
LATENCY_RATIO = 0.65
# the first (digits) report's settings; a run names its own and records them
DEFAULTS = {"dataset": "digits", "model": "cnn", "parent_epochs": 3, "finetune_epochs": 5, "batch_size": 64,
            "parent_lr": 1e-2, "finetune_lr": 1e-3, "shared_parent": False, "latency_ratio": LATENCY_RATIO}  # fmt: skip


def train_parent(data, spec: dict[str, Any], settings: dict[str, Any], seed: int):
    parent = build_model(spec, data.input_shape, data.num_classes, seed=seed)
    config = TrainConfig(epochs=settings["parent_epochs"], batch_size=settings["batch_size"],
                         lr=settings["parent_lr"], seed=seed)  # fmt: skip
    fit(parent, data, config, progress=False)
    return parent


def one_seed(data, seed: int, cache: str, settings: dict[str, Any] = DEFAULTS, parent=None) -> dict[str, Any]:
    import copy

    spec = SPECS[settings["model"]][settings["dataset"]]
    parent = copy.deepcopy(parent) if parent is not None else train_parent(data, spec, settings, seed)
    ft = TrainConfig(epochs=settings["finetune_epochs"], batch_size=settings["batch_size"],
                     lr=settings["finetune_lr"], seed=seed)  # fmt: skip
    if settings.get("uniform_ratio"):
        # uniform first, at a fixed ratio; the latency-aware child is then asked for its measured p50
        uni_cfg = StructuredConfig(ratio=settings["uniform_ratio"], finetune_after=ft, seed=seed)
        uniform, uni_report = prune_structured(
            parent, data.input_shape, data.num_classes, uni_cfg, data, False
        )
        uni_report["ratio"] = settings["uniform_ratio"]
        uni_ms = model_cost(uniform, data.input_shape, "latency", "rpi4-emulated")
        # asked for the uniform child's p50: in ms (one measurement), or ("ratio") as its share of the
        # parent's, measured interleaved, which NetAdapt re-anchors to the parent every iteration
        asked = (
            {"latency_ratio": 1 / interleaved(parent, uniform, data.input_shape)["speedup"]}
            if settings.get("match") == "ratio"
            else {"target_latency_ms": uni_ms}
        )
        aware_cfg = StructuredConfig(
            **asked, finetune_after=ft, seed=seed, latency_cache=cache,
            latency_method=settings.get("latency_method", "table"),
            netadapt_finetune_samples=settings.get("netadapt_finetune_samples", 0),
            latency_tolerance=settings.get("latency_tolerance", StructuredConfig.latency_tolerance),
            latency_points=tuple(settings.get("latency_points", StructuredConfig.latency_points)),
        )  # fmt: skip
        aware, aware_report = prune_for_latency(
            parent, data.input_shape, data.num_classes, aware_cfg, data, False
        )
        target = aware_report["latency_aware"]["allocation"]["measured_ms"]
    else:
        aware_cfg = StructuredConfig(
            latency_ratio=settings.get("latency_ratio", LATENCY_RATIO),
            finetune_after=ft,
            seed=seed,
            latency_cache=cache,
            latency_method=settings.get("latency_method", "table"),
            latency_points=tuple(settings.get("latency_points", StructuredConfig.latency_points)),
        )
        aware, aware_report = prune_for_latency(
            parent, data.input_shape, data.num_classes, aware_cfg, data, False
        )
        target = aware_report["latency_aware"]["allocation"]["measured_ms"]
        uni_cfg = StructuredConfig(budget_metric="latency", budget=target, finetune_after=ft, seed=seed)
        uniform, uni_report = prune_structured(
            parent, data.input_shape, data.num_classes, uni_cfg, data, False
        )
        uni_ms = uni_report["budget"]["achieved"]
    x_test, y_test = data.split("test")
    cmp = interleaved(uniform, aware, data.input_shape)
    return {
        "seed": seed,
        "parent_test_accuracy": accuracy(parent, x_test, y_test),
        "aware": {"test_accuracy": accuracy(aware, x_test, y_test), "layer_ratios": aware_report["config"]["allocated_layer_ratios"],
                  "channels": aware_report["channels"], "predicted_ms": aware_report["latency_aware"]["allocation"]["predicted_ms"],
                  "measured_ms": target, "cache_hit": aware_report["latency_aware"]["cache_hit"],
                  # the plan's own measurements (closed-loop attempts or NetAdapt moves), for diagnosis
                  "plan": [{k: v for k, v in a.items() if k != "proposals"}
                           for a in aware_report["latency_aware"]["allocation"].get("refinements", [])],
                  # the table the allocation was predicted from (table method): per unit, kept fraction -> p50
                  "table": _table_points(aware_report["latency_aware"])},
        "uniform": {"test_accuracy": accuracy(uniform, x_test, y_test), "ratio": uni_report["ratio"], "channels": uni_report["channels"],
                    "measured_ms": uni_ms},
        "equal_p50": {k: cmp[k] for k in ("speedup", "ci_low", "ci_high", "parent_p50_ms", "child_p50_ms")},
    }  # fmt: skip


def _table_points(section: dict[str, Any]) -> dict[str, Any] | None:
    table = section.get("table")
    if not table or "layers" not in table:
        return None
    return {
        "base_p50_ms": table["base_p50_ms"],
        "units": {n: [[p["keep"], p["channels"], p["p50_ms"]] for p in layer["points"]]
                  for n, layer in table["layers"].items()},
    }  # fmt: skip


def interleaved(reference, model, input_shape) -> dict[str, Any]:
    """`model` against `reference` on rpi4-emulated, 8 interleaved rounds: speedup = reference / model."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, m in (("reference", reference), ("model", model)):
            export_onnx(m.eval(), tuple(input_shape), Path(tmp) / f"{name}.onnx")
        return Measurement("rpi4-emulated", None, 200, 0.3).compare(
            Path(tmp) / "reference.onnx", Path(tmp) / "model.onnx", rounds=8
        )


def run(settings: dict[str, Any] = DEFAULTS) -> dict[str, Any]:
    data = DATASETS[settings["dataset"]]()
    info = machine_info()
    spec = SPECS[settings["model"]][settings["dataset"]]
    parent = train_parent(data, spec, settings, SEEDS[0]) if settings["shared_parent"] else None
    with tempfile.TemporaryDirectory() as cache:
        seeds = [one_seed(data, s, cache, settings, parent) for s in SEEDS]
    diff = mean_interval([s["aware"]["test_accuracy"] - s["uniform"]["test_accuracy"] for s in seeds])
    ratio = mean_interval([s["equal_p50"]["speedup"] for s in seeds])
    return {
        "machine": {**info, "load_average_at_end": os.getloadavg(), "shared": not settings.get("quiet_machine")},
        "device_class": "rpi4-emulated", "emulated": True, "spec": spec, "latency_ratio": settings["latency_ratio"],
        **({} if settings == DEFAULTS else {"settings": settings}),
        **({"netadapt_measurement": {"paired_rounds": NETADAPT_ROUNDS, "recorded": "by the run"}}
           if settings.get("latency_method") == "netadapt" else {}),
        "seeds": seeds, "accuracy_difference": diff, "p50_uniform_over_aware": ratio,
        "verdict": {"aware_beats_uniform": verdict(diff, 0.0, True, strict=True),
                    "equal_p50_within_5pct": "met" if all(s["equal_p50"]["ci_low"] >= 0.95 and s["equal_p50"]["ci_high"] <= 1.05 for s in seeds) else "not shown"},
        "command": command(settings),
    }  # fmt: skip


def command(settings: dict[str, Any]) -> str:
    line = "python -m benchmarks.profile.prune_vs_uniform"
    if settings == DEFAULTS:
        return line
    flags = [f"--dataset {settings['dataset']}", f"--model {settings['model']}",
             f"--parent-epochs {settings['parent_epochs']}", f"--finetune-epochs {settings['finetune_epochs']}",
             *([f"--uniform-ratio {settings['uniform_ratio']:g}"] if settings.get("uniform_ratio")
               else [f"--latency-ratio {settings['latency_ratio']:g}"]),
             *([f"--latency-method {settings['latency_method']}"] if settings.get("latency_method", "table") != "table" else []),
             *([f"--netadapt-finetune-samples {settings['netadapt_finetune_samples']}"] if settings.get("netadapt_finetune_samples") else []),
             *([f"--match {settings['match']}"] if settings.get("match", "ms") != "ms" else []),
             *([f"--latency-tolerance {settings['latency_tolerance']:g}"] if "latency_tolerance" in settings else []),
             *([f"--latency-points {','.join(f'{k:g}' for k in settings['latency_points'])}"]
               if "latency_points" in settings else []),
             *(["--quiet-machine"] if settings.get("quiet_machine") else [])]  # fmt: skip
    return " ".join([line, *flags, *(["--shared-parent"] if settings["shared_parent"] else [])])


def _title(r: dict[str, Any]) -> tuple[str, str]:
    """The model named in the title, and the sentence on what one test image is worth."""
    settings = r.get("settings", DEFAULTS)
    method = f"({settings['latency_method']}) " if "latency_method" in settings else ""
    if settings.get("netadapt_finetune_samples"):
        method = (f"({settings['latency_method']}, each proposal fine-tuned on {settings['netadapt_finetune_samples']:,} "
                  "training images and picked by validation accuracy) ")  # fmt: skip
    anchored = ", re-anchored to the parent every iteration"  # NetAdapt before paired measurements
    if netadapt := r.get("netadapt_measurement"):
        recorded = "" if netadapt["recorded"] == "by the run" else f"; {netadapt['recorded']}"
        anchored = (
            f"; each NetAdapt proposal measured as its ratio to the parent in {netadapt['paired_rounds']} "
            f"paired rounds, times the parent's p50 measured once{recorded}"
        )
    asked = (
        f"its p50 as a share of the parent's, measured in 8 interleaved rounds (latency_ratio{anchored})"
        if settings.get("match") == "ratio"
        else "its measured p50 (target_latency_ms)"
    )
    if "latency_tolerance" in settings:
        asked += f", latency_tolerance {settings['latency_tolerance']:g}"
    if "latency_points" in settings:
        asked += (
            f", latency table at kept fractions {', '.join(f'{k:g}' for k in settings['latency_points'])}"
        )
    order = (
        f"the uniform child pruned at ratio {settings['uniform_ratio']:g} first, the latency-aware child "
        f"{method}asked for {asked}"
        if settings.get("uniform_ratio")
        else f"the latency-aware child {method}at latency_ratio "
        f"{r['latency_ratio']:g}, the uniform ratio searched "
        "(0.05 steps) to its measured p50"
    )
    if settings["dataset"] == "digits":
        return "digits CNN", "Digits' test split (270 images): one image is 0.37 pt."
    parent = "one parent (seed 0) shared by the seeds" if settings["shared_parent"] else "a parent per seed"
    return (
        f"{settings['dataset']} {settings['model']}",
        f"Fashion-MNIST's test split (10,000 images): one image is 0.01 pt. Settings fixed before the run: "
        f"{parent}, trained {settings['parent_epochs']} epochs (lr {settings['parent_lr']}); both children "
        f"fine-tuned {settings['finetune_epochs']} epoch(s) (lr {settings['finetune_lr']}), batch "
        f"{settings['batch_size']}; {order}; the seeds vary the fine-tuning.",
    )


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    rows = [[s["seed"], s["parent_test_accuracy"], s["aware"]["test_accuracy"], s["uniform"]["test_accuracy"],
             s["aware"]["measured_ms"], s["uniform"]["measured_ms"],
             f"{s['equal_p50']['speedup']:.3f} [{s['equal_p50']['ci_low']:.3f}, {s['equal_p50']['ci_high']:.3f}]",
             ", ".join(f"{k}={v:g}" for k, v in s["aware"]["layer_ratios"].items()), s["uniform"]["ratio"]] for s in r["seeds"]]  # fmt: skip
    d = r["accuracy_difference"]
    what, per_image = _title(r)
    return (
        f"# Latency-aware vs uniform pruning at equal p50 ({what}, {r['device_class']}, emulated)\n\n"
        f"Measured {m['date']} on {m['cpu_model']} ({m['cpu_count']} CPUs), git {m['git_commit']}; "
        f"{MACHINE[m.get('shared', True)]}, load average {m['load_average_at_start'][0]:.2f} at start, {m['load_average_at_end'][0]:.2f} at end. "
        f"Command: `{r['command']}`. {per_image}\n\n"
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
        f"{r['verdict']['equal_p50_within_5pct']}.\n\n"
        f"Target (issue 26: latency-aware beats uniform at equal p50 within ±5 %): **{target_verdict(r)}** "
        "(rule: met when both lines above are met; not met when equal p50 is not shown, whatever the "
        "accuracy line says: the two children are then not compared at equal latency).\n"
    )


def target_verdict(r: dict[str, Any]) -> str:
    """The issue's target from the two recorded verdicts: accuracy counts only at equal p50."""
    if r["verdict"]["equal_p50_within_5pct"] != "met":
        return "not met: equal p50 not shown"
    return r["verdict"]["aware_beats_uniform"]


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


def parse_settings(argv: list[str] | None = None) -> tuple[dict[str, Any], Path]:
    """The run's settings (as recorded in its results.json) and its output folder, from the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", choices=sorted(DATASETS), default=DEFAULTS["dataset"])
    parser.add_argument("--model", choices=sorted(SPECS), default=DEFAULTS["model"])
    parser.add_argument("--parent-epochs", type=int, default=DEFAULTS["parent_epochs"])
    parser.add_argument("--finetune-epochs", type=int, default=DEFAULTS["finetune_epochs"])
    parser.add_argument(
        "--shared-parent", action="store_true", help="train one parent (seed 0) for every seed"
    )
    parser.add_argument(
        "--latency-ratio", type=float, default=LATENCY_RATIO, help="the latency-aware child's target"
    )
    parser.add_argument(
        "--uniform-ratio",
        type=float,
        default=0.0,
        help="prune uniformly at this ratio first and ask the latency-aware child for its measured p50 "
        "(instead of searching a uniform ratio to the latency-aware child's p50)",
    )
    parser.add_argument(
        "--latency-method",
        choices=LATENCY_METHODS,
        default="table",
        help="the latency-aware child's allocation (StructuredConfig.latency_method)",
    )
    parser.add_argument(
        "--netadapt-finetune-samples",
        type=int,
        default=0,
        help="netadapt: fine-tune each proposal on this many training images and pick by validation "
        "accuracy (StructuredConfig.netadapt_finetune_samples; 0: least importance per ms)",
    )
    parser.add_argument(
        "--match",
        choices=("ms", "ratio"),
        default="ms",
        help="with --uniform-ratio: ask the latency-aware child for the uniform child's p50 in ms (one "
        "measurement) or as a ratio of the parent's (interleaved rounds)",
    )
    parser.add_argument(
        "--latency-tolerance",
        type=float,
        default=None,
        help="the latency-aware child's window under the target (StructuredConfig.latency_tolerance)",
    )
    parser.add_argument(
        "--latency-points",
        type=_kept_fractions,
        default=None,
        help="table method: the kept fractions the latency table measures per unit, comma-separated "
        "(StructuredConfig.latency_points; default 0.75,0.5,0.25)",
    )
    parser.add_argument(
        "--quiet-machine",
        action="store_true",
        help="say in the report that nothing else was started on the machine during the run",
    )
    parser.add_argument("--out", type=Path, default=HERE, help="folder for results.json/.md/.png")
    args = parser.parse_args(argv)
    lr = {"digits": (1e-2, 1e-3), "fashion-mnist": (3e-3, 1e-3)}[args.dataset]
    batch = {"digits": 64, "fashion-mnist": 128}[args.dataset]
    settings = {"dataset": args.dataset, "model": args.model, "parent_epochs": args.parent_epochs,
                "finetune_epochs": args.finetune_epochs, "batch_size": batch, "parent_lr": lr[0],
                "finetune_lr": lr[1], "shared_parent": args.shared_parent, "latency_ratio": args.latency_ratio,
                **({"uniform_ratio": args.uniform_ratio} if args.uniform_ratio else {}),
                **({"latency_method": args.latency_method} if args.latency_method != "table" else {}),
                **({"netadapt_finetune_samples": args.netadapt_finetune_samples} if args.netadapt_finetune_samples else {}),
                **({"match": args.match} if args.match != "ms" else {}),
                **({"latency_tolerance": args.latency_tolerance} if args.latency_tolerance is not None else {}),
                **({"latency_points": args.latency_points} if args.latency_points is not None else {}),
                **({"quiet_machine": True} if args.quiet_machine else {})}  # fmt: skip
    return settings, args.out


def _kept_fractions(text: str) -> list[float]:
    try:
        points = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"kept fractions must be numbers, got {text!r}") from exc
    if not points or not all(0 < k < 1 for k in points):
        raise argparse.ArgumentTypeError(f"kept fractions must be in (0, 1), got {text!r}")
    return points


def main(argv: list[str] | None = None) -> None:
    settings, out = parse_settings(argv)
    write_report(run(settings), out, render, plot, "results.png")


if __name__ == "__main__":
    main()
