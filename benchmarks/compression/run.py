"""Pruning and distillation against the naive tools, on Fashion-MNIST (full 60k/10k split).

    python -m benchmarks.compression.run            # full run (writes results.json/.md and pareto.png here)
    python -m benchmarks.compression.run --quick    # digits, tiny epochs (used by the tests)

Every row is measured in this one run, on this machine: test accuracy on the ONNX file, size and MACs
from the ONNX file, ONNX Runtime latency at 1 thread, batch 1 (median over interleaved rounds, so a
burst of load on a shared machine hits every model alike).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# Ours: the training budgets (epochs) per row; --quick divides them down.
FULL = {
    "prune_ratio": 0.5, "prune_steps": 2, "prune_ft_between": 1, "recover_epochs": 12, "recover_lr": 3e-3,
    "sparse_sparsity": 0.85, "sparse_ft_epochs": 1, "study_epochs": 3, "study_seeds": [0, 1, 2],
    "study_student": {"family": "cnn", "kwargs": {"widths": [8, 16, 32], "depths": [1, 1, 1]}},
    "temperature": 4.0, "alpha": 0.9, "latency_rounds": 2, "min_runs": 200, "min_duration_s": 0.5,
}  # fmt: skip
QUICK = {
    **FULL, "prune_ft_between": 1, "recover_epochs": 1, "sparse_ft_epochs": 1, "study_epochs": 1,
    "study_student": {"family": "cnn", "kwargs": {"widths": [4, 8], "depths": [1, 1]}}, "study_seeds": [0, 1],
    "latency_rounds": 1, "min_runs": 10, "min_duration_s": 0.02,
}  # fmt: skip
QUICK_BASELINE = {"family": "cnn", "kwargs": {"widths": [8, 16], "depths": [1, 1]}}


def _train_cfg(epochs: int, lr: float, seed: int, quick: bool):
    from edgecompress.train import TrainConfig

    return TrainConfig(epochs=epochs, batch_size=64 if quick else 128, lr=lr, augment=not quick, seed=seed)


def run(out_dir: Path, quick: bool = False, work: Path | None = None) -> dict[str, Any]:
    from benchmarks.common import baseline_model, fashion_mnist_dataset_artifact, machine_info
    from edgecompress.data import load_dataset, load_digits, save_dataset
    from edgecompress.distill import DistillConfig, distill, distill_step, train_scratch
    from edgecompress.export import load_model_package
    from edgecompress.prune import (
        PruneConfig,
        StructuredConfig,
        UnstructuredConfig,
        prune_step,
        prune_structured,
        prune_unstructured,
    )
    from edgecompress.quantize import StaticQuantConfig, quantize_step
    from edgecompress.step import Lineage, save_torch_child
    from edgecompress.train import TrainConfig, accuracy

    s = QUICK if quick else FULL
    started = time.perf_counter()
    machine = machine_info()
    work = Path(work or tempfile.mkdtemp(prefix="edgecompress-bench-compression-"))
    work.mkdir(parents=True, exist_ok=True)
    off = Lineage(enabled=False)
    timings: dict[str, float] = {}

    def timed(name: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        result = fn(*args, **kwargs)
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
        print(f"[{time.perf_counter() - started:7.1f} s] {name} done", flush=True)
        return result

    if quick:
        data_path = work / "digits.npz"
        save_dataset(load_digits(), data_path)
        from edgecompress.train import train_step

        base_dir = work / "baseline"
        timed("baseline", train_step, data_path, QUICK_BASELINE, base_dir, TrainConfig(epochs=3, batch_size=64), off,
              progress=False)  # fmt: skip
    else:
        data_path = fashion_mnist_dataset_artifact()
        base_dir = timed("baseline", baseline_model)
    dataset = load_dataset(data_path)
    base_pkg = load_model_package(base_dir)
    teacher = base_pkg.load_module()
    shape, classes = dataset.input_shape, dataset.num_classes
    models: dict[str, tuple[str, Path]] = {"float baseline (CNN)": ("baseline", base_pkg.onnx_path)}

    def child(name: str, group: str, module, info_extra: dict[str, Any] | None = None) -> Path:
        folder = work / name.replace(" ", "_").replace("/", "-").replace("%", "pct").replace("+", "and")
        package = save_torch_child(module, dataset, folder, {**base_pkg.info, **(info_extra or {})})
        models[name] = (group, package.onnx_path)
        return folder

    def int8(name: str, parent_dir: Path) -> None:
        out = work / (parent_dir.name + "-int8")
        quantize_step(parent_dir, data_path, out, StaticQuantConfig(), off)
        models[name] = ("ours", load_model_package(out).onnx_path)

    # --- peers, default settings ------------------------------------------------------------------
    from onnxruntime.quantization import quantize_dynamic

    dyn = work / "ort-dynamic.onnx"
    timed("peer: ORT quantize_dynamic", quantize_dynamic, str(base_pkg.onnx_path), str(dyn))
    models["peer: ORT quantize_dynamic"] = ("peer", dyn)
    timed(
        "peer: ORT static QDQ",
        quantize_step,
        base_dir,
        data_path,
        work / "ort-static",
        StaticQuantConfig(),
        off,
    )
    models["peer: ORT static QDQ per-channel"] = ("peer", load_model_package(work / "ort-static").onnx_path)
    naive_sparse = copy.deepcopy(teacher)
    timed(
        "peer: torch prune 50%",
        prune_unstructured,
        naive_sparse,
        UnstructuredConfig(sparsity=0.5, scope="global"),
    )
    child("peer: torch.nn.utils.prune global 50% (no fine-tune)", "peer", naive_sparse)
    naive_tp, _ = timed("peer: torch-pruning 50%", prune_structured, teacher, shape, classes,
                        StructuredConfig(ratio=0.5, importance="l2"), dataset, progress=False)  # fmt: skip
    child("peer: torch-pruning 50% channels (no fine-tune)", "peer", naive_tp)

    # --- ours: structured prune (iterative) → fine-tune | distill → INT8 ------------------------------
    lr = s["recover_lr"]
    structured = PruneConfig(ratio=s["prune_ratio"], importance="l2", steps=s["prune_steps"],
                                  finetune_epochs_between=s["prune_ft_between"], finetune_epochs_after=0, lr=lr,
                                  batch_size=64 if quick else 128, augment=not quick).structured()  # fmt: skip
    pruned_dir = work / "pruned-start"
    pruned_info = timed("ours: iterative structured prune", prune_step, base_dir, data_path, pruned_dir, "structured",
                        structured, None, (), 0.0, None, off, False)  # fmt: skip
    pruned_start = load_model_package(pruned_dir).load_module()
    recover = _train_cfg(s["recover_epochs"], lr, 0, quick)
    finetuned, _ = timed("ours: prune + fine-tune", train_scratch, pruned_start, dataset, recover, False)
    ft_dir = child("ours: structured prune 50% + fine-tune", "ours", finetuned)
    kd = DistillConfig(temperature=s["temperature"], alpha=s["alpha"], train=recover)
    kd_dir = work / "pruned-distilled"
    timed("ours: prune + distill", distill_step, base_dir, data_path, str(pruned_dir), kd_dir, kd, False, None, off,
          False)  # fmt: skip
    models["ours: structured prune 50% + distill"] = ("ours", load_model_package(kd_dir).onnx_path)
    timed("ours: prune + distill + INT8", int8, "ours: structured prune 50% + distill + INT8", kd_dir)
    timed("ours: prune + fine-tune + INT8", int8, "ours: structured prune 50% + fine-tune + INT8", ft_dir)

    # --- ours: unstructured 85 % + fine-tune (+ INT8): the smallest download ----------------------
    unstructured = PruneConfig(sparsity=s["sparse_sparsity"], scope="global",
                                    finetune_epochs_after=s["sparse_ft_epochs"], lr=1e-3,
                                    batch_size=64 if quick else 128, augment=not quick).unstructured()  # fmt: skip
    sparse_dir = work / "sparse"
    timed("ours: unstructured + fine-tune", prune_step, base_dir, data_path, sparse_dir, "unstructured", None,
          unstructured, (), 0.0, None, off, False)  # fmt: skip
    pct = int(round(s["sparse_sparsity"] * 100))
    models[f"ours: unstructured {pct}% + fine-tune"] = ("ours", load_model_package(sparse_dir).onnx_path)
    timed("ours: unstructured + INT8", int8, f"ours: unstructured {pct}% + fine-tune + INT8", sparse_dir)

    # --- distillation study: the same small student, scratch vs distilled, equal epochs ------------
    from edgecompress.zoo import build_model

    x_test, y_test = dataset.split("test")
    study: dict[str, list[float]] = {"scratch": [], "distilled": []}
    for seed in s["study_seeds"]:
        student = build_model(s["study_student"], shape, classes, seed=seed)
        cfg = _train_cfg(s["study_epochs"], 3e-3, seed, quick)
        scratch, _ = timed("study: scratch", train_scratch, student, dataset, cfg, False)
        distilled, _, _ = timed(
            "study: distilled",
            distill,
            teacher,
            student,
            dataset,
            DistillConfig(temperature=s["temperature"], alpha=s["alpha"], train=cfg),
            False,
        )
        study["scratch"].append(accuracy(scratch, x_test, y_test))
        study["distilled"].append(accuracy(distilled, x_test, y_test))
        if seed == s["study_seeds"][0]:
            child("ours: small student, scratch (seed 0)", "ours", scratch)
            child("ours: small student, distilled (seed 0)", "ours", distilled)

    # --- measure everything the same way ------------------------------------------------------------
    rows = timed("measure", measure, models, dataset, s)
    elapsed = time.perf_counter() - started
    machine["load_average_at_end"] = os.getloadavg()
    results = {
        "machine": machine, "baseline": "float baseline (CNN)", "rows": rows,
        "distillation": {**study, "student": s["study_student"], "epochs": s["study_epochs"],
                         "seeds": s["study_seeds"], "temperature": s["temperature"], "alpha": s["alpha"]},
        "settings": {k: v for k, v in s.items() if k != "study_student"}, "quick": quick,
        "dataset": {"name": dataset.name, "train": len(dataset.split("train")[0]), "val": len(dataset.split("val")[0]),
                    "test": len(x_test)},
        "structured_pruning": {k: pruned_info["prune"][k] for k in ("channels", "schedule", "macs_reduction",
                                                                   "params_reduction")},
        "seconds": elapsed, "seconds_per_part": timings,
    }  # fmt: skip
    write_outputs(results, out_dir)
    return results


def measure(models: dict[str, tuple[str, Path]], dataset, s: dict[str, Any]) -> list[dict[str, Any]]:
    from edgecompress.evaluate import evaluate_onnx, model_stats
    from edgecompress.farm.runner import BenchmarkSettings, run_isolated

    settings = BenchmarkSettings(
        threads=1, batch_size=1, min_runs=s["min_runs"], min_duration_s=s["min_duration_s"]
    )
    lat: dict[str, list[dict[str, float]]] = {name: [] for name in models}
    for _ in range(s["latency_rounds"]):  # interleaved rounds: load bursts hit every model alike
        for name, (_, path) in models.items():
            lat[name].append(run_isolated(path, settings)["latency_ms"])
    rows = []
    for name, (group, path) in models.items():
        acc, _, _ = evaluate_onnx(path, dataset, "test")
        st = model_stats(path)
        rows.append({
            "name": name, "group": group, "accuracy": acc, "params": st.params, "nonzero_params": st.nonzero_params,
            "macs": st.macs, "onnx_bytes": st.onnx_bytes, "gzip_bytes": st.gzip_bytes,
            "p50_ms": statistics.median(r["p50"] for r in lat[name]),
            "p90_ms": statistics.median(r["p90"] for r in lat[name]),
            "p50_ms_per_round": [r["p50"] for r in lat[name]],
        })  # fmt: skip
    return rows


# --- reports ------------------------------------------------------------------------------------------


def ratios(row: dict[str, Any], base: dict[str, Any]) -> dict[str, float]:
    return {
        "accuracy_change_pt": (row["accuracy"] - base["accuracy"]) * 100,
        "params_x": base["params"] / row["params"], "macs_x": base["macs"] / row["macs"],
        "onnx_x": base["onnx_bytes"] / row["onnx_bytes"], "gzip_x": base["gzip_bytes"] / row["gzip_bytes"],
        "p50_x": base["p50_ms"] / row["p50_ms"], "p90_x": base["p90_ms"] / row["p90_ms"],
    }  # fmt: skip


def targets(results: dict[str, Any]) -> list[tuple[str, bool, str]]:
    rows = {r["name"]: r for r in results["rows"]}
    base = rows[results["baseline"]]
    out = []
    chains = [r for r in results["rows"] if r["group"] == "ours"]
    full = [(r, ratios(r, base)) for r in chains]
    meets = [
        (r, q) for r, q in full if q["gzip_x"] >= 10 and q["p50_x"] >= 3 and q["accuracy_change_pt"] >= -0.5
    ]
    best = max(
        full,
        key=lambda rq: min(rq[1]["gzip_x"] / 10, rq[1]["p50_x"] / 3, 1 + (rq[1]["accuracy_change_pt"] + 0.5)),
    )
    show = meets[0] if meets else best
    r, q = show
    out.append(
        (
            "best chain ≥ 10× smaller gzip, ≥ 3× lower p50, ≤ 0.5 pt drop",
            bool(meets),
            f"{r['name']}: {q['gzip_x']:.1f}× gzip, {q['p50_x']:.2f}× p50, {q['accuracy_change_pt']:+.2f} pt",
        )
    )
    d = results["distillation"]
    sc, di = d["scratch"], d["distilled"]
    gap = statistics.mean(di) - statistics.mean(sc)
    spread = max(statistics.pstdev(sc), statistics.pstdev(di), (max(sc) - min(sc)), (max(di) - min(di)))
    out.append(
        (
            "distilled student beats scratch by more than the seed spread",
            gap > spread,
            f"gap {gap * 100:+.2f} pt vs spread (largest of std and range over seeds) {spread * 100:.2f} pt; "
            f"worst distilled {min(di):.4f} vs best scratch {max(sc):.4f}",
        )
    )
    for name in ("ours: structured prune 50% + fine-tune", "peer: torch-pruning 50% channels (no fine-tune)"):
        q = ratios(rows[name], base)
        out.append(
            (
                f"structured latency gain tracks MAC reduction ({name})",
                q["p50_x"] >= 0.6 * q["macs_x"],
                f"MACs {q['macs_x']:.2f}× fewer, p50 {q['p50_x']:.2f}× lower "
                f"({q['p50_x'] / q['macs_x']:.0%} of the MAC reduction realised)",
            )
        )
    return out


def write_outputs(results: dict[str, Any], out_dir: Path) -> None:
    from benchmarks.common import write_json

    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "results.json", results)
    (out_dir / "results.md").write_text(markdown(results))
    (out_dir / "pareto.png").write_bytes(pareto_png(results))


def markdown(results: dict[str, Any]) -> str:
    from edgecompress.reports import markdown_table

    rows = {r["name"]: r for r in results["rows"]}
    base = rows[results["baseline"]]
    table = []
    for r in results["rows"]:
        q = ratios(r, base)
        table.append([r["name"], r["group"], f"{r['accuracy']:.4f}", f"{q['accuracy_change_pt']:+.2f}", r["params"],
                      r["macs"], r["onnx_bytes"], r["gzip_bytes"], f"{r['p50_ms'] * 1000:.1f}",
                      f"{r['p90_ms'] * 1000:.1f}", f"{q['params_x']:.2f}×", f"{q['macs_x']:.2f}×",
                      f"{q['onnx_x']:.2f}×", f"{q['gzip_x']:.2f}×", f"{q['p50_x']:.2f}×", f"{q['p90_x']:.2f}×"])  # fmt: skip
    headers = ["row", "group", "test acc", "Δ pt", "params", "MACs", "ONNX B", "gzip B", "p50 µs", "p90 µs",
               "params ÷", "MACs ÷", "ONNX ÷", "gzip ÷", "p50 ÷", "p90 ÷"]  # fmt: skip
    d = results["distillation"]
    study = [[kind, ", ".join(f"{a:.4f}" for a in d[kind]), f"{statistics.mean(d[kind]):.4f}",
              f"{statistics.pstdev(d[kind]):.4f}"] for kind in ("scratch", "distilled")]  # fmt: skip
    m = results["machine"]
    lines = [
        "# Compression benchmark: pruning and distillation vs the naive tools", "",
        f"Dataset: {results['dataset']['name']} ({results['dataset']['train']} train / {results['dataset']['val']} "
        f"val / {results['dataset']['test']} test){' — QUICK MODE, not a result' if results['quick'] else ''}. "
        "Accuracy on the test split, measured on the ONNX file. Latency: ONNX Runtime CPU, 1 thread, batch 1, "
        f"median over {results['settings']['latency_rounds']} interleaved rounds of ≥ {results['settings']['min_runs']} "
        "runs. `÷` columns: baseline ÷ row (higher is better).", "",
        markdown_table(headers, table), "",
        "## Targets", "",
        markdown_table(["target", "met", "measured"], [[t, "yes" if ok else "**MISSED**", why] for t, ok, why in targets(results)]),
        "",
        f"## Distillation study: the same student ({d['student']['kwargs']}), {d['epochs']} epochs each, "
        f"T={d['temperature']}, α={d['alpha']}", "",
        markdown_table(["student", "test accuracy per seed " + str(d["seeds"]), "mean", "std"], study), "",
        "## Structured pruning schedule (iterative, fine-tuning between steps)", "",
        markdown_table(["step", "ratio", "params", "MACs", "val acc pruned", "val acc after fine-tune"],
                       [[e["step"], e["ratio"], e["params"], e["macs"], e.get("val_accuracy_pruned", ""),
                         e.get("val_accuracy_finetuned", "")] for e in results["structured_pruning"]["schedule"]]),
        "", f"Channels after pruning: {results['structured_pruning']['channels']}", "",
        "## Reproduce", "",
        "```", "python -m benchmarks.compression.run   # full: 15 min on 2 quiet cores, ~50 min under load (baseline cached); --quick: ~2 min on digits",
        "```", "",
        f"Took {results['seconds'] / 60:.1f} min. Per part (s): "
        + ", ".join(f"{k} {v:.0f}" for k, v in results["seconds_per_part"].items()) + ".", "",
        f"Machine: {m['cpu_model']}, {m['cpu_count']} cores, {m['os']}, Python {m['python']}, torch {m['torch']}, "
        f"onnxruntime {m['onnxruntime']}, commit {m['git_commit']}, {m['date']}. Load average at start "
        f"{', '.join(f'{x:.1f}' for x in m['load_average_at_start'])}, at end "
        f"{', '.join(f'{x:.1f}' for x in m['load_average_at_end'])}: the machine is shared by several agents, so "
        "absolute timings are noisy; compare the ratios, which were measured side by side in interleaved rounds.", "",
        "## Notes", "",
        "- Unstructured sparsity keeps dense tensor shapes: no speed-up on ONNX Runtime's dense kernels (see its p50); "
        "it only shrinks the gzip artifact (what is shipped over the air).",
        "- `ORT quantize_dynamic` with defaults quantizes convolutions dynamically, which is slower than float on x86.",
        "- The float baseline is the teacher for every distillation row (benchmarks.common.baseline_model()).",
        "- See benchmarks/compression/README.md for observations and what was tried.", "",
    ]  # fmt: skip
    return "\n".join(lines)


def pareto_png(results: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgecompress.reports import figure_png

    fig, ax = plt.subplots(figsize=(9, 6))
    colors = {"baseline": "black", "peer": "tab:red", "ours": "tab:blue"}
    biggest = max(r["gzip_bytes"] for r in results["rows"])
    for r in results["rows"]:
        size = 30 + 900 * r["gzip_bytes"] / biggest
        ax.scatter(
            r["p50_ms"] * 1000,
            r["accuracy"] * 100,
            s=size,
            alpha=0.55,
            color=colors[r["group"]],
            edgecolors="k",
            linewidths=0.5,
        )
        ax.annotate(
            r["name"].split(": ", 1)[-1],
            (r["p50_ms"] * 1000, r["accuracy"] * 100),
            fontsize=6.5,
            xytext=(4, 3),
            textcoords="offset points",
        )
    ax.set_xscale("log")
    ax.set_xlabel("ONNX Runtime p50 latency, 1 thread, batch 1 (µs, log)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("accuracy vs latency; marker area ∝ gzip bytes (black baseline, red peers, blue ours)")
    ax.grid(alpha=0.3, which="both")
    accs = sorted(r["accuracy"] * 100 for r in results["rows"])
    ax.set_ylim(max(accs[0] - 1, accs[len(accs) // 3] - 8), accs[-1] + 0.8)
    return figure_png(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="digits and tiny epochs (a smoke test, not a result)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: this folder; --quick: required)"
    )
    parser.add_argument(
        "--work", type=Path, default=None, help="folder for intermediate models (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("EDGECOMPRESS_NO_PROGRESS", "1")
    if args.quick and args.out is None:
        parser.error("--quick needs --out (quick results must not overwrite the committed ones)")
    results = run(args.out or HERE, args.quick, args.work)
    print((args.out or HERE) / "results.md")
    print("\n".join(f"{'ok    ' if ok else 'MISSED'} {t}: {why}" for t, ok, why in targets(results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
