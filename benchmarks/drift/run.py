"""Drift detection on Fashion-MNIST: how often clean batches are flagged, and from which batch size each
test family detects each shift.

The deployed model is the cached float baseline CNN (`benchmarks.common.baseline_model`). Reference:
a seeded sample of the model's validation split (images it never fitted). Production batches: test
images, cut into **disjoint** batches — within one batch size no image is in two batches, so the
flags of one batch size are independent trials given the reference, and each rate gets an exact
(Clopper-Pearson) interval. Shifted batches apply one shift at one severity to test images (or, for
the class-prior shift, compose the batch from the two halves of the classes in a skewed ratio).
The detector is `edgecompress.drift.ImageDriftDetector`: KS per softmax class probability
(Bonferroni over classes) and an MMD permutation test on penultimate embeddings, combined with
Bonferroni (x2); each family alone is read at alpha/2.

    python -m benchmarks.drift.run            # full run (the committed report)
    python -m benchmarks.drift.run --quick    # smoke run (small model, two batch sizes; used by a test)
    python -m benchmarks.drift.run --render-only   # results.md and detection.png from results.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
QUICK_SPEC = {"family": "cnn", "kwargs": {"widths": [16, 32, 64], "depths": [1, 1, 1]}}
FAMILIES = {
    "combined": "combined (both families, Bonferroni ×2)",
    "softmax_ks": "softmax KS (Bonferroni over classes)",
    "embedding_mmd": "embedding MMD (permutation)",
}
SEVERITIES = ("low", "moderate", "high")
TARGET_FPR = "alpha"  # the false-positive rate must stay at or below the test's own alpha
TARGET_DETECTION = 0.95  # at moderate severity, at the largest batch size
log = logging.getLogger("benchmarks.drift")

# name -> {severity: parameter}
SHIFTS: dict[str, dict[str, float]] = {
    "gaussian_noise": {"low": 0.03, "moderate": 0.08, "high": 0.2},  # sigma on [0, 1] pixels
    "brightness_contrast": {"low": 0.05, "moderate": 0.1, "high": 0.25},  # +b brightness, ×(1-2b) contrast
    "rotation": {"low": 4.0, "moderate": 10.0, "high": 20.0},  # ± degrees, random sign per image
    "class_prior": {"low": 2.0, "moderate": 4.0, "high": 10.0},  # weight of classes 0-4 vs 5-9
}
SHIFT_TEXT = {
    "gaussian_noise": "Gaussian noise, sigma on [0, 1] pixels",
    "brightness_contrast": "brightness/contrast `(x-0.5)(1-2b)+0.5+b`, b given",
    "rotation": "rotation by ± the given degrees (random sign per image, bilinear)",
    "class_prior": "class prior: classes 0–4 and 5–9 in the ratio w : 1 within each batch",
}
FULL = {"batch_sizes": [25, 50, 100, 200, 500], "clean_cap": 100, "shift_cap": 10,
        "reference_samples": 1000, "permutations": 100, "severities": list(SEVERITIES)}  # fmt: skip
QUICK = {"batch_sizes": [25, 100], "clean_cap": 8, "shift_cap": 3,
         "reference_samples": 300, "permutations": 50, "severities": ["moderate"]}  # fmt: skip


def apply_shift(name: str, level: float, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """x: float32 images in [0, 1], shape (n, 1, 28, 28)."""
    if name == "gaussian_noise":
        return np.clip(x + rng.normal(0, level, x.shape), 0, 1).astype(np.float32)
    if name == "brightness_contrast":
        return np.clip((x - 0.5) * (1 - 2 * level) + 0.5 + level, 0, 1).astype(np.float32)
    if name == "rotation":
        from scipy.ndimage import rotate

        signs = rng.choice([-1.0, 1.0], len(x))
        return np.stack(
            [
                rotate(img, s * level, axes=(1, 2), reshape=False, order=1, mode="constant")
                for img, s in zip(x, signs, strict=True)
            ]
        ).astype(np.float32)
    raise ValueError(name)


def disjoint_batches(pool: int, size: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Up to `cap` batches of `size` indices into a pool, no index in two batches."""
    count = min(cap, pool // size)
    return rng.permutation(pool)[: count * size].reshape(count, size)


def prior_batches(y: np.ndarray, size: int, weight: float, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Disjoint batches whose classes 0–4 and 5–9 stand in the ratio weight : 1 (rounded)."""
    first = int(round(size * weight / (1 + weight)))
    a, b = rng.permutation(np.flatnonzero(y < 5)), rng.permutation(np.flatnonzero(y >= 5))
    count = min(cap, len(a) // max(first, 1), len(b) // max(size - first, 1))
    return np.stack(
        [
            np.concatenate([a[i * first : (i + 1) * first], b[i * (size - first) : (i + 1) * (size - first)]])
            for i in range(count)
        ]
    ).reshape(count, size)


def flags(result: dict[str, Any]) -> dict[str, bool]:
    tests = result["tests"]
    return {
        "combined": bool(result["drifted"]),
        "softmax_ks": bool(tests[FAMILIES["softmax_ks"]]["drifted"]),
        "embedding_mmd": bool(tests[FAMILIES["embedding_mmd"]]["drifted"]),
    }


def rates(counts: dict[str, int], batches: int) -> dict[str, Any]:
    from benchmarks.common import proportion_interval

    return {k: proportion_interval(v, batches) for k, v in counts.items()}


def deployed_model(quick: bool) -> tuple[Path, str]:
    """The baseline CNN for a full run (never trained here: an hour on this machine), a small quick CNN
    for a smoke run."""
    from benchmarks.common import CACHE, baseline_cached, fashion_mnist_dataset_artifact

    if not quick:
        found = baseline_cached()
        if found is None:
            raise FileNotFoundError(
                "the baseline CNN is not in benchmarks/.cache: train it with "
                "`python -c 'from benchmarks.common import baseline_model; baseline_model()'` or copy it there"
            )
        return found, "baseline CNN (benchmarks.common.baseline_model, 10 epochs)"
    from edgecompress.step import Lineage
    from edgecompress.train import TrainConfig, train_step

    out = CACHE / "drift-quick-model-smoke"
    if not (out / "model.json").exists():
        cfg = TrainConfig(epochs=1, batch_size=128, lr=3e-3, seed=0, max_train_samples=5000)
        train_step(
            fashion_mnist_dataset_artifact(), QUICK_SPEC, out, cfg, Lineage(enabled=False), progress=False
        )
    return out, f"small CNN {QUICK_SPEC['kwargs']} trained 1 epoch on 5,000 images (smoke run only)"


def run(quick: bool, alpha: float) -> dict[str, Any]:
    from benchmarks.common import baseline_record, fashion_mnist_dataset_artifact, machine_info
    from edgecompress.data import load_dataset
    from edgecompress.drift import DriftConfig, ImageDriftDetector
    from edgecompress.export import load_model_package

    settings = dict(QUICK if quick else FULL)
    start = time.perf_counter()
    machine = machine_info()
    model_dir, model_desc = deployed_model(quick)
    package = load_model_package(model_dir)
    data = load_dataset(fashion_mnist_dataset_artifact())
    x_val, _ = data.split("val")
    x_test, y_test = data.split("test")
    rng = np.random.default_rng(0)
    ref = x_val[
        np.sort(rng.choice(len(x_val), min(settings["reference_samples"], len(x_val)), replace=False))
    ]
    config = DriftConfig(alpha=alpha, permutations=settings["permutations"], seed=0)
    detector = ImageDriftDetector(package.onnx_path, ref, config, data.class_names)
    clean_probs, clean_emb = detector.model(x_test)
    test_seed = iter(range(1, 10**9))  # every permutation test gets its own seed

    def flagged(probs: np.ndarray, emb: np.ndarray, batches: np.ndarray) -> dict[str, int]:
        counts = dict.fromkeys(FAMILIES, 0)
        for idx in batches:
            for k, v in flags(detector.test_outputs(probs[idx], emb[idx], next(test_seed))).items():
                counts[k] += v
        return counts

    clean = []
    for size in settings["batch_sizes"]:
        batches = disjoint_batches(len(x_test), size, settings["clean_cap"], rng)
        counts = flagged(clean_probs, clean_emb, batches)
        clean.append(
            {
                "batch_size": size,
                "batches": len(batches),
                "flagged": counts,
                "rate": rates(counts, len(batches)),
            }
        )
        log.info("clean batch %d: %s of %d flagged", size, counts, len(batches))  # fmt: skip
    shifts = []
    for name, levels in SHIFTS.items():
        for severity in settings["severities"]:
            level = levels[severity]
            if name == "class_prior":
                probs, emb, accuracy, pool = clean_probs, clean_emb, None, len(x_test)
            else:  # the shifted pool holds as many test images as the largest size's batches use
                pool = min(len(x_test), settings["shift_cap"] * max(settings["batch_sizes"]))
                shifted = apply_shift(name, level, x_test[:pool], np.random.default_rng([1, len(shifts)]))
                probs, emb = detector.model(shifted)
                accuracy = float(np.mean(probs.argmax(1) == y_test[:pool]))
            for size in settings["batch_sizes"]:
                if name == "class_prior":
                    batches = prior_batches(y_test, size, level, settings["shift_cap"], rng)
                else:
                    batches = disjoint_batches(pool, size, settings["shift_cap"], rng)
                counts = flagged(probs, emb, batches)
                shifts.append({"name": name, "severity": severity, "level": level, "batch_size": size,
                               "batches": len(batches), "detected": counts, "rate": rates(counts, len(batches)),
                               "shifted_test_accuracy": accuracy, "pool": pool})  # fmt: skip
            log.info("%s %s done", name, severity)
    machine["load_average_at_end"] = list(os.getloadavg())
    return {
        "benchmark": "drift", "quick": quick, "machine": machine, **baseline_record(model_dir),
        "model": {"description": model_desc, "directory": model_dir.name,
                  "clean_test_accuracy": float(np.mean(clean_probs.argmax(1) == y_test))},
        "settings": {**settings, "alpha": alpha, "reference_split": "val", "reference_size": len(ref),
                     "production_split": "test", "production_pool": len(x_test), "levels": SHIFTS,
                     "target_detection": TARGET_DETECTION},
        "clean": clean, "shifts": shifts, "seconds": time.perf_counter() - start,
    }  # fmt: skip


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its threshold, its measured rate and interval, and the verdict: the clean
    false-positive rate ≤ alpha at every batch size; detection ≥ 0.95 at moderate severity at the
    largest batch size, per shift (the combined test, the one the product runs)."""
    from benchmarks.common import verdict

    alpha = results["settings"]["alpha"]
    out = []
    for row in results["clean"]:
        interval = row["rate"]["combined"]
        out.append({"target": f"false-positive rate, clean batches of {row['batch_size']}", "threshold": alpha,
                    "direction": "≤", "interval": interval, "verdict": verdict(interval, alpha, higher_is_better=False)})  # fmt: skip
    largest = max(results["settings"]["batch_sizes"])
    threshold = results["settings"]["target_detection"]
    for row in results["shifts"]:
        if row["severity"] == "moderate" and row["batch_size"] == largest:
            interval = row["rate"]["combined"]
            out.append({"target": f"detection of {row['name']} (moderate), batches of {largest}",
                        "threshold": threshold, "direction": "≥", "interval": interval,
                        "verdict": verdict(interval, threshold, higher_is_better=True)})  # fmt: skip
    return out


def batches_to_show(rate: float, confidence: float = 0.95) -> int:
    """The fewest batches, all flagged, whose exact lower bound reaches `rate` ((1 - c) / 2) ** (1 / n) ≥ rate."""
    return math.ceil(math.log((1 - confidence) / 2) / math.log(rate))


def rate_cell(interval: dict[str, Any]) -> str:
    return f"{interval['mean']:.3f} [{interval['low']:.3f}, {interval['high']:.3f}]"


def onset(results: dict[str, Any], name: str, severity: str, family: str) -> str:
    """The smallest batch size from which the family detects at ≥ the target rate at every larger size."""
    threshold = results["settings"]["target_detection"]
    rows = sorted(
        (r for r in results["shifts"] if r["name"] == name and r["severity"] == severity),
        key=lambda r: r["batch_size"],
    )
    found = None
    for r in reversed(rows):
        if r["rate"][family]["mean"] < threshold:
            break
        found = r["batch_size"]
    return "never (up to the largest size)" if found is None else str(found)


def render(results: dict[str, Any]) -> str:
    """results.md, every figure from results.json."""
    from benchmarks.common import VERDICT_RULE, baseline_line
    from edgecompress.reports import markdown_table

    s, m = results["settings"], results["machine"]
    fam = list(FAMILIES)
    lines = ["# Drift detection benchmark (Fashion-MNIST)", ""]
    if results["quick"]:
        lines += ["**Quick smoke run — not the committed figures.**", ""]
    lines += [
        f"Reproduce: `python -m benchmarks.drift.run{' --quick' if results['quick'] else ''}` "
        f"({results['seconds'] / 60:.1f} min on {m['cpu_model']}, {m['cpu_count']} cores shared with other jobs, "
        f"load average {', '.join(f'{v:.1f}' for v in m['load_average_at_start'])} at start; commit "
        f"{m['git_commit']}, {m['date']}; torch {m['torch']}, onnxruntime {m['onnxruntime']}).", "",
        f"Deployed model: the benchmarks' baseline CNN. {baseline_line(results)}", "",
        "## Targets", "",
        markdown_table(["target", "threshold", "measured rate [95 % interval] (batches)", "verdict"],
                       [[t["target"], f"{t['direction']} {t['threshold']:g}",
                         f"{rate_cell(t['interval'])} ({t['interval']['successes']}/{t['interval']['n']})",
                         f"**{t['verdict']}**"] for t in targets(results)]),
        "", f"Verdicts (benchmarks.common.verdict) on the exact interval: {VERDICT_RULE} Even every batch "
        f"flagged shows a detection rate ≥ {s['target_detection']:g} only from "
        f"{batches_to_show(s['target_detection'])} batches on.", "",
        "## False positives on clean batches", "",
        f"Clean test batches at alpha = {s['alpha']:g} — rate [exact 95 % interval]:", "",
        markdown_table(["batch size", "batches (disjoint)", *[FAMILIES[f] for f in fam]],
                       [[r["batch_size"], r["batches"], *[f"{rate_cell(r['rate'][f])} ({r['flagged'][f]})" for f in fam]]
                        for r in results["clean"]]),
        "", "The families alone are read at alpha/2 each, the level they get inside the combined test.", "",
        "## Detection rate vs batch size", "",
        "Rate [exact 95 % interval] of shifted batches flagged; the accuracy column is the deployed model's "
        "accuracy on the shifted pool (how much the shift hurts; noise, brightness and rotation shift the first "
        "test images, as many as the largest size's batches use).", "",
    ]  # fmt: skip
    rows = []
    for r in results["shifts"]:
        acc = r["shifted_test_accuracy"]
        rows.append([r["name"], r["severity"], f"{r['level']:g}", r["batch_size"], r["batches"],
                     "—" if acc is None else f"{acc * 100:.2f} %", *[rate_cell(r["rate"][f]) for f in fam]])  # fmt: skip
    lines += [
        markdown_table(["shift", "severity", "level", "batch size", "batches", "shifted test accuracy",
                        *[FAMILIES[f] for f in fam]], rows),
        "", f"Clean test accuracy of the deployed model: {results['model']['clean_test_accuracy'] * 100:.2f} %.", "",
        f"### Where each family starts to detect (observed rate ≥ {s['target_detection']:g} from this batch size "
        "up: a point estimate, not a verdict)", "",
        markdown_table(["shift", "severity", *[FAMILIES[f] for f in fam]],
                       [[name, sev, *[onset(results, name, sev, f) for f in fam]]
                        for name in SHIFTS for sev in s["severities"]]),
        "", "![detection rate vs batch size](detection.png)", "",
        "## Setup and what the rates depend on", "",
        f"- Deployed model: {results['model']['description']}, run through ONNX Runtime.",
        f"- Reference: {s['reference_size']} images drawn (seeded) from the model's validation split; "
        f"production batches: the {s['production_pool']} images of the test split, never in the reference.",
        f"- Batches of one size are disjoint (at most {s['clean_cap']} clean and {s['shift_cap']} shifted batches "
        "per size, fewer where the test split runs out), so their flags are independent trials given the "
        "reference and the rate has an exact binomial interval. Different batch sizes and different shifts "
        "reuse the same test images: points of one curve are separate experiments on one pool, not "
        "independent of each other.",
        "- Every test shares one reference sample: the rates are conditional on it (a different reference "
        "draw moves them; the product also tests against one fixed reference).",
        f"- Detector: `edgecompress.drift.ImageDriftDetector`, KS per softmax class probability and an MMD "
        f"permutation test ({s['permutations']} permutations, median-heuristic bandwidth from the reference) "
        "on the penultimate-layer embeddings, combined with Bonferroni (×2). The smallest p-value the "
        f"permutation test can give is 1/{s['permutations'] + 1} = {1 / (s['permutations'] + 1):.4f}, below "
        f"the alpha/2 = {s['alpha'] / 2:g} it is read at.",
        *[f"- {name}: {SHIFT_TEXT[name]}; levels " + ", ".join(f"{k} {v:g}" for k, v in s["levels"][name].items())
          + "." for name in SHIFTS],
        "- Noise and rotation are drawn once per image of the test split per severity (seeded); the class-prior "
        "batches are composed from the clean test images.",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgecompress.reports import figure_png

    sizes = results["settings"]["batch_sizes"]
    fig, axes = plt.subplots(len(FAMILIES), len(SHIFTS), figsize=(4 * len(SHIFTS), 3.2 * len(FAMILIES)),
                             squeeze=False, sharex=True, sharey=True)  # fmt: skip
    colors = {"low": "tab:green", "moderate": "tab:orange", "high": "tab:red"}
    fpr = [r["rate"] for r in results["clean"]]
    for i, family in enumerate(FAMILIES):
        for j, name in enumerate(SHIFTS):
            ax = axes[i][j]
            for sev in results["settings"]["severities"]:
                rows = sorted((r for r in results["shifts"] if r["name"] == name and r["severity"] == sev),
                              key=lambda r: r["batch_size"])  # fmt: skip
                mean = np.array([r["rate"][family]["mean"] for r in rows])
                err = [
                    mean - [r["rate"][family]["low"] for r in rows],
                    [r["rate"][family]["high"] for r in rows] - mean,
                ]
                ax.errorbar([r["batch_size"] for r in rows], mean, yerr=err, marker="o", ms=3, capsize=2,
                            color=colors[sev], label=sev)  # fmt: skip
            ax.errorbar([r["batch_size"] for r in results["clean"]], [f[family]["mean"] for f in fpr],
                        yerr=[[f[family]["mean"] - f[family]["low"] for f in fpr],
                              [f[family]["high"] - f[family]["mean"] for f in fpr]],
                        color="grey", ls=":", marker=".", capsize=2, label="clean (false positives)")  # fmt: skip
            ax.axhline(results["settings"]["target_detection"], color="k", lw=0.6, ls="--")
            ax.axhline(results["settings"]["alpha"], color="grey", lw=0.6, ls="--")
            ax.set_xscale("log")
            ax.minorticks_off()
            ax.set_xticks(sizes, [str(s) for s in sizes])
            ax.set_ylim(-0.03, 1.03)
            if i == 0:
                ax.set_title(name)
            if j == 0:
                ax.set_ylabel(f"{FAMILIES[family].split(' (')[0]}: share flagged")
            if i == len(FAMILIES) - 1:
                ax.set_xlabel("batch size")
    axes[0][0].legend(fontsize=7, loc="center right")
    fig.suptitle("Drift detection vs batch size (exact 95 % intervals; dashed: target and alpha)")
    return figure_png(fig)


def write(results: dict[str, Any], out: Path) -> None:
    from benchmarks.common import write_report

    write_report(results, out, render, plot, "detection.png")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: small model, two batch sizes, moderate only"
    )
    ap.add_argument("--output-dir", type=Path, default=HERE)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--render-only", action="store_true", help="rewrite results.md and detection.png")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not 0 < args.alpha < 1:
        print(f"error: --alpha must be in (0, 1), got {args.alpha}", file=sys.stderr)
        return 2
    if args.render_only:
        path = args.output_dir / "results.json"
        if not path.exists():
            print(f"error: {path} does not exist", file=sys.stderr)
            return 2
        write(json.loads(path.read_text()), args.output_dir)
        return 0
    try:
        results = run(args.quick, args.alpha)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write(results, args.output_dir)
    print(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
