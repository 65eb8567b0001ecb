"""Pruning, distillation and INT8 against Torch-Pruning and NNCF, on Fashion-MNIST.

    python -m benchmarks.compression.run            # full run: writes results.json, results.md, pareto.png here
    python -m benchmarks.compression.run --quick --out /tmp/q   # digits, tiny budgets (used by the tests)
    python -m benchmarks.compression.run --render   # results.md and pareto.png again from results.json

Rules (issue 14, item 3): every choice (the KD setting, the best chain) is made on the validation
split; test accuracy is only reported. Trained rows are repeated over seeds and reported as mean with
a 95 % t-interval; a target is met only when the whole interval clears it, missed when the whole
interval is on the wrong side, undecided otherwise (benchmarks.common.verdict). Latency is measured in interleaved
rounds on one device class (emulated on this machine, labelled so), and speed-ups are per-round ratios.
results.md and pareto.png are rendered from results.json alone (`render`, `pareto_png`).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BASELINE = "float baseline (CNN)"

# Every setting of the run, fixed before it starts (never changed after looking at test results).
FULL = {
    "seeds": [0, 1, 2],
    # the recovery budget, equal for every trained row (ours and peers): epochs over the training split
    # (None: all of it); 3 epochs as the distillation study of the previous report
    "train_samples": None, "recover_epochs": 3, "recover_lr": 3e-3, "batch_size": 128, "augment": True,
    "prune_ratio": 0.5, "prune_steps": 2, "prune_ft_between": 1, "deep_ratio": 0.7,
    # the KD candidates, compared on validation (seed 0, the prune-50 % start); the winner is used everywhere
    "kd_candidates": {
        "logit T=4 α=0.9 (previous default)": {"temperature": 4.0, "alpha": 0.9, "feature_weight": 0.0},
        "logit T=2 α=0.5": {"temperature": 2.0, "alpha": 0.5, "feature_weight": 0.0},
        "logit T=2 α=0.5 + attention β=10": {"temperature": 2.0, "alpha": 0.5, "feature_loss": "attention",
                                             "feature_weight": 10.0},
    },
    "study_student": {"family": "cnn", "kwargs": {"widths": [16, 32, 64], "depths": [1, 1, 1]}},
    "device_class": "rpi4-emulated", "latency_rounds": 3, "min_runs": 100, "min_duration_s": 0.3,
    "nncf_subset_size": 300, "nncf_max_drop": 0.01,
    "targets": {"chain_gzip_x": 20.0, "chain_p50_x": 3.0, "chain_max_drop_pt": 0.5},
}  # fmt: skip
QUICK = {
    **FULL, "seeds": [0, 1], "train_samples": None, "recover_epochs": 1, "batch_size": 64, "augment": False,
    "study_student": {"family": "cnn", "kwargs": {"widths": [4, 8], "depths": [1, 1]}},
    "latency_rounds": 2, "min_runs": 10, "min_duration_s": 0.02, "nncf_subset_size": 64,
}  # fmt: skip
QUICK_BASELINE = {"family": "cnn", "kwargs": {"widths": [8, 16], "depths": [1, 1]}}


def _train_cfg(s: dict[str, Any], seed: int, extra_epochs: int = 0):
    from edgecompress.train import TrainConfig

    return TrainConfig(epochs=s["recover_epochs"] + extra_epochs, batch_size=s["batch_size"], lr=s["recover_lr"],
                       augment=s["augment"], seed=seed, max_train_samples=s["train_samples"])  # fmt: skip


def run(out_dir: Path, quick: bool = False, work: Path | None = None) -> dict[str, Any]:
    import torch

    from benchmarks.common import (
        baseline_model,
        baseline_record,
        fashion_mnist_dataset_artifact,
        machine_info,
    )
    from edgecompress.data import load_dataset, load_digits, save_dataset
    from edgecompress.distill import DistillConfig, distill, train_scratch
    from edgecompress.export import load_model_package
    from edgecompress.prune import StructuredConfig, prune_structured
    from edgecompress.quantize import QuantConfig, quantize_step
    from edgecompress.step import Lineage, save_torch_child
    from edgecompress.train import TrainConfig, accuracy
    from edgecompress.zoo import build_model

    s = QUICK if quick else FULL
    started = time.perf_counter()
    machine = {**machine_info(), "torch_threads": torch.get_num_threads()}
    work = Path(work or tempfile.mkdtemp(prefix="edgecompress-bench-compression-"))
    work.mkdir(parents=True, exist_ok=True)
    off = Lineage(enabled=False)
    timings: dict[str, float] = {}

    def timed(name: str, fn: Callable, *args, **kwargs):
        t0 = time.perf_counter()
        result = fn(*args, **kwargs)
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
        print(f"[{time.perf_counter() - started:7.1f} s] {name} done", flush=True)
        return result

    if quick:
        from edgecompress.train import train_step

        data_path = work / "digits.npz"
        save_dataset(load_digits(), data_path)
        base_dir = work / "baseline"
        timed("baseline", train_step, data_path, QUICK_BASELINE, base_dir, TrainConfig(epochs=5, batch_size=64, lr=1e-2), off,
              progress=False)  # fmt: skip
    else:
        data_path = fashion_mnist_dataset_artifact()
        base_dir = timed("baseline", baseline_model)
    dataset = load_dataset(data_path)
    base_pkg = load_model_package(base_dir)
    teacher = base_pkg.load_module()
    shape, classes = dataset.input_shape, dataset.num_classes
    x_val, y_val = dataset.split("val")
    # row name -> {"group", "what", "paths": {seed: model}, "seeds": [accuracy per seed]}
    rows: dict[str, dict[str, Any]] = {}

    def add(name: str, group: str, what: str, seed: int, path: Path) -> Path:
        row = rows.setdefault(name, {"group": group, "what": what, "paths": {}, "seeds": []})
        row["paths"][seed] = path
        row["seeds"].append(timed("evaluate (ONNX, val/test)", evaluate, path, group, seed, dataset))
        return path

    def save(name: str, group: str, what: str, seed: int, module) -> Path:
        folder = work / f"{seed}-{''.join(c if c.isalnum() else '_' for c in name)[:60]}"
        save_torch_child(module, dataset, folder, {**base_pkg.info})
        return add(name, group, what, seed, folder)

    def int8(name: str, what: str, seed: int, parent: Path) -> None:
        out = work / f"{parent.name}-int8"  # in the work folder, also for the cached baseline
        timed(
            "ours: INT8 (quantize_step)", quantize_step, parent, data_path, out, QuantConfig(seed=seed), off
        )
        add(name, "ours", what, seed, out)

    add(BASELINE, "baseline", "the teacher: benchmarks.common.baseline_model()", 0, base_dir)

    # --- shared pruned starts (deterministic: seeds vary the recovery, not the pruning) --------------
    ft_between = TrainConfig(epochs=s["prune_ft_between"], batch_size=s["batch_size"], lr=s["recover_lr"],
                             augment=s["augment"], seed=0, max_train_samples=s["train_samples"])  # fmt: skip
    start50, report50 = timed("ours: iterative structured prune 50 %", prune_structured, teacher, shape, classes,
                              StructuredConfig(ratio=s["prune_ratio"], importance="l2", steps=s["prune_steps"],
                                               finetune_between=ft_between), dataset, False)  # fmt: skip
    # the deep start: the 50 % start pruned further, to `deep_ratio` of every layer's channels overall
    further = 1 - (1 - s["deep_ratio"]) / (1 - s["prune_ratio"])
    start70, report70 = timed("ours: structured prune deeper", prune_structured, start50, shape, classes,
                              StructuredConfig(ratio=further, importance="l2"), dataset, False)  # fmt: skip
    tp50, _ = timed("peer: torch-pruning 50 %", prune_structured, teacher, shape, classes,
                    StructuredConfig(ratio=s["prune_ratio"], importance="l2"), dataset, False)  # fmt: skip
    p50, p70 = int(s["prune_ratio"] * 100), int(s["deep_ratio"] * 100)

    def kd_config(candidate: dict[str, Any], seed: int) -> DistillConfig:
        return DistillConfig(**candidate, train=_train_cfg(s, seed))

    # --- KD selection on validation (seed 0, prune-50 % start) ---------------------------------------
    selection = []
    kd_models: dict[str, Any] = {}
    for label, candidate in s["kd_candidates"].items():
        model, hist, details = timed("ours: prune + KD (selection)", distill, teacher, start50, dataset,
                                     kd_config(candidate, 0), False)  # fmt: skip
        kd_models[label] = model
        selection.append({"candidate": label, **candidate, "val_accuracy": accuracy(model, x_val, y_val),
                          "history": hist.as_dict()["epochs"], "feature_pairs": details["feature_pairs"]})  # fmt: skip
    winner = max(selection, key=lambda r: r["val_accuracy"])["candidate"]
    chosen = s["kd_candidates"][winner]
    kd_name = f"ours: prune {p50}% + KD"
    what_kd = f"iterative prune, then KD ({winner}) from the baseline"
    nncf_info: dict[str, Any] = {}
    latency: dict[str, Any] = {}
    done: list[int] = []

    def snapshot() -> dict[str, Any]:
        machine["load_average_at_end"] = os.getloadavg()
        results = {
            "title": "Compression: prune, distill, INT8 vs Torch-Pruning and NNCF",
            "selection_split": "validation", "report_split": "test", "quick": quick,
            "seeds_completed": list(done), "partial": done != list(s["seeds"]),
            "machine": machine, "baseline": BASELINE, **baseline_record(base_dir), "rows": table(rows, latency, s),
            "kd_selection": {"split": "validation", "seed": 0, "start": f"prune {p50}% start",
                             "candidates": selection, "winner": winner, "winner_settings": chosen},
            "settings": s, "nncf": nncf_info,
            "dataset": {"name": dataset.name, "train": len(dataset.split("train")[0]), "val": len(x_val),
                        "test": len(dataset.split("test")[0])},
            "pruning": {"start50": {k: report50[k] for k in ("channels", "schedule", "macs_reduction")},
                        "start_deep": {k: report70[k] for k in ("channels", "macs_reduction")}},
            "seconds": time.perf_counter() - started, "seconds_per_part": timings,
        }  # fmt: skip
        write_outputs(results, out_dir)
        return results

    # --- the seeded rows; after the first seed, the single-run rows and the latency; results after each seed
    for seed in s["seeds"]:
        cfg = _train_cfg(s, seed)
        ft, _ = timed("ours: prune + fine-tune", train_scratch, start50, dataset, cfg, False)
        save(
            f"ours: prune {p50}% + fine-tune",
            "ours",
            "iterative prune, then hard-label fine-tuning",
            seed,
            ft,
        )
        kd = kd_models[winner] if seed == 0 else timed("ours: prune + KD", distill, teacher, start50, dataset,
                                                        kd_config(chosen, seed), False)[0]  # fmt: skip
        kd_dir = save(kd_name, "ours", what_kd, seed, kd)
        int8(
            f"{kd_name} + INT8", "the KD row, then static INT8 QDQ per-channel (quantize_step)", seed, kd_dir
        )
        deep, _, _ = timed("ours: deep prune + KD", distill, teacher, start70, dataset, kd_config(chosen, seed),
                           False)  # fmt: skip
        deep_dir = save(
            f"ours: prune {p70}% + KD", "ours", f"the 50 % start pruned to {p70} %, then KD", seed, deep
        )
        int8(f"ours: prune {p70}% + KD + INT8", "the deep KD row, then static INT8", seed, deep_dir)
        # the peer with the same budget: our total fine-tuning epochs (between steps + after)
        peer_cfg = _train_cfg(s, seed, extra_epochs=s["prune_ft_between"])
        m, _ = timed("peer: torch-pruning + fine-tune", train_scratch, tp50, dataset, peer_cfg, False)
        save(f"Torch-Pruning {p50}% + fine-tune", "Torch-Pruning",
             "MetaPruner, GroupMagnitudeImportance(p=2), one shot, then fine-tuning", seed, m)  # fmt: skip
        # the distillation study: a fresh small student, scratch vs KD, equal epochs
        student = build_model(s["study_student"], shape, classes, seed=seed)
        scratch, _ = timed("study: scratch", train_scratch, student, dataset, cfg, False)
        save("ours: small student, scratch", "study", "a fresh small CNN, hard labels", seed, scratch)
        sk, _, _ = timed("study: KD", distill, teacher, student, dataset, kd_config(chosen, seed), False)
        save("ours: small student + KD", "ours", f"the same fresh small CNN, KD ({winner})", seed, sk)
        if seed == s["seeds"][0]:
            int8("ours: INT8 only", "static INT8 QDQ per-channel of the baseline (quantize_step defaults)", seed,
                 base_dir)  # fmt: skip
            nncf_info.update(timed("peer: NNCF", nncf_rows, base_pkg.onnx_path, dataset, work, s, add))
            latency.update(timed("latency (interleaved)", measure_latency, rows, s))
        done.append(seed)
        results = snapshot()
    return results


def evaluate(path: Path, group: str, seed: int, dataset) -> dict[str, Any]:
    """Test accuracy on the ONNX file; validation too where a choice is made from it (ours, the baseline)."""
    from edgecompress.evaluate import evaluate_onnx

    onnx = _onnx_of(path)
    val = evaluate_onnx(onnx, dataset, "val")[0] if group in ("ours", "baseline") else None
    return {"seed": seed, "val_accuracy": val, "test_accuracy": evaluate_onnx(onnx, dataset, "test")[0]}


def nncf_rows(onnx_path: Path, dataset, work: Path, s: dict[str, Any], add: Callable) -> dict[str, Any]:
    """NNCF's documented ONNX flow: `nncf.quantize` (defaults: preset performance, subset_size 300) and
    `nncf.quantize_with_accuracy_control` (max_drop 0.01 absolute) on the float ONNX model, calibrated on
    train images and controlled on the validation split."""
    try:
        import nncf
        import onnx
    except ImportError as exc:  # not installed: the report says so instead of a row
        return {"installed": False, "error": str(exc)}
    import numpy as np

    from edgecompress.export import onnx_logits

    model = onnx.load(str(onnx_path))
    name = model.graph.input[0].name
    x_train, _ = dataset.split("train")
    rng = np.random.default_rng(0)
    calib = x_train[rng.choice(len(x_train), size=min(len(x_train), s["nncf_subset_size"]), replace=False)]
    x_val, y_val = dataset.split("val")
    calibration = nncf.Dataset(list(calib), lambda x: {name: x[None]})
    validation = nncf.Dataset(list(range(len(x_val))), lambda i: {name: x_val[i : i + 1]})

    def validate(candidate, _items) -> tuple[float, list[float]]:
        path = work / "nncf-validate.onnx"
        onnx.save(candidate, str(path))
        correct = (onnx_logits(path, x_val).argmax(1) == y_val).astype(float)
        return float(correct.mean()), correct.tolist()

    info: dict[str, Any] = {"installed": True, "version": nncf.__version__}
    ptq = work / "nncf-ptq.onnx"
    onnx.save(nncf.quantize(model, calibration, subset_size=s["nncf_subset_size"]), str(ptq))
    add("NNCF PTQ INT8", "NNCF", f"nncf.quantize, defaults, subset_size {s['nncf_subset_size']}", 0, ptq)
    ac = work / "nncf-ac.onnx"
    quantized = nncf.quantize_with_accuracy_control(
        model,
        calibration,
        validation,
        validate,
        max_drop=s["nncf_max_drop"],
        subset_size=s["nncf_subset_size"],
    )
    onnx.save(quantized, str(ac))
    add("NNCF accuracy-control INT8", "NNCF", f"nncf.quantize_with_accuracy_control, max_drop {s['nncf_max_drop']}"
        " (validation split)", 0, ac)  # fmt: skip
    return info


def _onnx_of(path: Path) -> Path:
    from edgecompress.export import load_model_package

    return Path(path) if Path(path).suffix == ".onnx" else load_model_package(Path(path)).onnx_path


def measure_latency(rows: dict[str, dict[str, Any]], s: dict[str, Any]) -> dict[str, Any]:
    """p50 of each row's first-seed model (seeds share the architecture) in interleaved rounds, the order
    rotated every round, so load on a shared machine hits every row alike."""
    from edgecompress.edge import Measurement

    meter = Measurement(s["device_class"], None, s["min_runs"], s["min_duration_s"])
    names = list(rows)
    out: dict[str, Any] = {n: [] for n in names}
    emulated = None
    for r in range(s["latency_rounds"]):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            result = meter.latency(_onnx_of(rows[name]["paths"][min(rows[name]["paths"])]))
            out[name].append(result["p50_ms"])
            emulated = result["emulated"]
    return {"p50_ms_per_round": out, "emulated": emulated}


def table(
    rows: dict[str, dict[str, Any]], latency: dict[str, Any], s: dict[str, Any]
) -> list[dict[str, Any]]:
    """The rows of results.json: accuracy per seed, size from the ONNX file, the interleaved p50s."""
    from edgecompress.evaluate import model_stats

    out = []
    for name, row in rows.items():
        st = model_stats(_onnx_of(row["paths"][min(row["paths"])]))
        out.append({
            "name": name, "group": row["group"], "what": row["what"], "seeds": row["seeds"],
            "params": st.params, "nonzero_params": st.nonzero_params, "macs": st.macs,
            "onnx_bytes": st.onnx_bytes, "gzip_bytes": st.gzip_bytes,
            "p50_ms_per_round": latency["p50_ms_per_round"][name], "device_class": s["device_class"],
            "emulated": latency["emulated"],
        })  # fmt: skip
    return out


# --- statistics and targets (from results.json alone) ------------------------------------------------


def _by_name(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in results["rows"]}


def accuracy_interval(row: dict[str, Any], split: str = "test") -> dict[str, Any]:
    from benchmarks.common import mean_interval

    return mean_interval([x[f"{split}_accuracy"] for x in row["seeds"]])


def drop_interval(row: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Test accuracy change vs the baseline, in points, over the row's seeds (the baseline is one model)."""
    from benchmarks.common import mean_interval

    b = base["seeds"][0]["test_accuracy"]
    return mean_interval([(x["test_accuracy"] - b) * 100 for x in row["seeds"]])


def speedup_interval(row: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Baseline p50 ÷ row p50 per interleaved round (paired by round), mean with its interval."""
    from benchmarks.common import mean_interval

    return mean_interval(
        [b / r for b, r in zip(base["p50_ms_per_round"], row["p50_ms_per_round"], strict=True)]
    )


def paired_gap(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Test accuracy of `a` minus `b` in points, paired by seed."""
    from benchmarks.common import mean_interval

    tb = {x["seed"]: x["test_accuracy"] for x in b["seeds"]}
    return mean_interval([(x["test_accuracy"] - tb[x["seed"]]) * 100 for x in a["seeds"] if x["seed"] in tb])


def choose_chain(results: dict[str, Any]) -> dict[str, Any] | None:
    """The best chain, chosen on validation: among our rows whose size and speed meet the targets (these do
    not depend on the test split), the highest mean validation accuracy; None when no row qualifies."""
    rows, t = _by_name(results), results["settings"]["targets"]
    base = rows[results["baseline"]]
    ok = [
        r for r in results["rows"]
        if r["group"] == "ours" and base["gzip_bytes"] / r["gzip_bytes"] >= t["chain_gzip_x"]
        and speedup_interval(r, base)["mean"] >= t["chain_p50_x"]
    ]  # fmt: skip
    return max(ok, key=lambda r: accuracy_interval(r, "val")["mean"]) if ok else None


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target: its rule, the threshold, the measured mean with its interval, and the verdict
    (benchmarks.common.verdict: met / missed / undecided, decided by the interval)."""
    import statistics as st

    from benchmarks.common import VERDICTS, all_of, exact_value, format_interval, verdict

    rows, t = _by_name(results), results["settings"]["targets"]
    base = rows[results["baseline"]]
    out = []
    scratch, kd = rows["ours: small student, scratch"], rows["ours: small student + KD"]
    gap = paired_gap(kd, scratch)
    if min(len(kd["seeds"]), len(scratch["seeds"])) < 2:
        spread, rule, decided = float("nan"), "gap > seed spread (needs ≥ 2 seeds)", "undecided (one seed)"
    else:
        spread = max(st.stdev([x["test_accuracy"] for x in r["seeds"]]) * 100 for r in (kd, scratch))
        rule = f"gap > {spread:.2f} pt (larger seed std of the two)"
        decided = verdict(gap, spread, True, strict=True)
    out.append({"target": "KD student beats the same student from scratch by more than the seed spread",
                "threshold": rule, "measured": format_interval(gap, unit=" pt"), "verdict": decided})  # fmt: skip
    p50 = int(results["settings"]["prune_ratio"] * 100)
    gap = paired_gap(rows[f"ours: prune {p50}% + KD"], rows[f"ours: prune {p50}% + fine-tune"])
    out.append({"target": f"prune {p50}% + KD beats prune {p50}% + fine-tune at the same budget",
                "threshold": "gap > 0 pt", "measured": format_interval(gap, unit=" pt"),
                "verdict": verdict(gap, 0.0, True, strict=True)})  # fmt: skip
    chain = choose_chain(results)
    rule = (f"chain ≥ {t['chain_gzip_x']:g}× smaller gzip, ≥ {t['chain_p50_x']:g}× lower p50, ≤ "
            f"{t['chain_max_drop_pt']:g} pt drop (chosen on validation)")  # fmt: skip
    if chain is None:
        out.append({"target": rule, "threshold": "size and speed first", "measured": "no row of ours reaches both "
                    "the size and the speed-up", "verdict": "missed"})  # fmt: skip
    else:
        drop, speed = drop_interval(chain, base), speedup_interval(chain, base)
        gz = base["gzip_bytes"] / chain["gzip_bytes"]
        out.append({"target": rule, "threshold": f"drop ≥ −{t['chain_max_drop_pt']:g} pt",
                    "measured": f"{chain['name']}: {gz:.1f}× gzip, p50 {format_interval(speed, unit='×')}, "
                                f"change {format_interval(drop, unit=' pt')}",
                    "verdict": all_of([verdict(exact_value(gz), t["chain_gzip_x"], True),
                                       verdict(speed, t["chain_p50_x"], True),
                                       verdict(drop, -t["chain_max_drop_pt"], True)])})  # fmt: skip
    peers = dominance(results)
    shown = {state: [name for name, v in peers.items() if v == state] for state in VERDICTS}
    measured = "; ".join(f"{state}: {', '.join(names)}" for state, names in shown.items() if names)
    out.append({"target": "ours dominates or equals every peer point (test accuracy, gzip, p50)",
                "threshold": "each peer model has a row of ours at least as small (exact), at least as fast "
                             "(per-round ratio interval ≥ 1) and at least as accurate (interval ≥ the peer's)",
                "measured": measured or "no peer rows", "verdict": all_of(list(peers.values()))})  # fmt: skip
    return out


def dominance(results: dict[str, Any]) -> dict[str, str]:
    """Per peer row (a fixed model): whether a row of ours is shown to dominate it ("met"), shown not to
    ("missed": every row of ours is larger, or its interval is wholly slower or less accurate), or
    neither ("undecided"). Size is exact; speed is ours' per-round p50 ratio (peer ÷ ours, ≥ 1);
    accuracy is ours' t-interval over seeds against the peer's test accuracy."""
    from benchmarks.common import all_of, any_of, mean_interval, verdict

    ours = [r for r in results["rows"] if r["group"] == "ours"]
    out = {}
    for p in results["rows"]:
        if p["group"] in ("baseline", "ours", "study"):
            continue
        peer_acc = accuracy_interval(p)["mean"]
        ways = []
        for o in ours:
            if o["gzip_bytes"] > p["gzip_bytes"]:
                ways.append("missed")
                continue
            ratio = mean_interval(
                [a / b for a, b in zip(p["p50_ms_per_round"], o["p50_ms_per_round"], strict=True)]
            )
            ways.append(all_of([verdict(ratio, 1.0, True), verdict(accuracy_interval(o), peer_acc, True)]))
        out[p["name"]] = any_of(ways)
    return out


# --- rendering (results.json -> results.md, pareto.png) ----------------------------------------------


def render(results: dict[str, Any]) -> str:
    from benchmarks.common import VERDICT_RULE, baseline_line, format_interval
    from edgecompress.reports import markdown_table

    rows, s, m, d = _by_name(results), results["settings"], results["machine"], results["dataset"]
    base = rows[results["baseline"]]
    emulated = any(r.get("emulated") for r in results["rows"])
    table = []
    for r in results["rows"]:
        sp = speedup_interval(r, base)
        table.append([
            r["name"], r["group"], len(r["seeds"]),
            f"{accuracy_interval(r, 'val')['mean']:.4f}" if r["seeds"][0]["val_accuracy"] is not None else "—",
            format_interval(accuracy_interval(r), scale=100), format_interval(drop_interval(r, base)),
            r["params"], r["macs"], r["gzip_bytes"], f"{base['gzip_bytes'] / r['gzip_bytes']:.1f}×",
            f"{statistics.median(r['p50_ms_per_round']) * 1000:.1f}",
            "1× (itself)" if r is base else format_interval(sp, unit="×"),
        ])  # fmt: skip
    sel = results["kd_selection"]
    budget = (f"{s['recover_epochs']} epochs over {s['train_samples'] or 'all'} training images (batch "
              f"{s['batch_size']}, peak lr {s['recover_lr']}, augmentation {'on' if s['augment'] else 'off'})")  # fmt: skip
    seeds_table = [[r["name"]] + [f"{x['val_accuracy'] or float('nan'):.4f} / {x['test_accuracy']:.4f}"
                                  for x in r["seeds"]]
                   for r in results["rows"] if len(r["seeds"]) > 1]  # fmt: skip
    nncf = results["nncf"]
    lines = [
        f"# {results['title']}", "",
        f"Dataset: {d['name']} ({d['train']} train / {d['val']} val / {d['test']} test)"
        f"{' — QUICK MODE, not a result' if results['quick'] else ''}. Seeds completed: "
        f"{results['seeds_completed']} of the planned {s['seeds']}"
        f"{' — **PARTIAL RUN**: the remaining seeds did not run' if results['partial'] else ''}. Selection split: "
        f"**{results['selection_split']}** (the KD setting and the best chain); reported split: "
        f"{results['report_split']}. Every trained row runs once per seed; cells are mean [95 % t-interval] "
        "(n = runs). Recovery budget, equal for every trained row: " + budget + f"; our pruned starts add "
        f"{s['prune_ft_between']} epoch between the {s['prune_steps']} pruning steps, so the Torch-Pruning rows "
        f"get {s['recover_epochs'] + s['prune_ft_between']} fine-tuning epochs. Latency: device class "
        f"`{s['device_class']}`{' (emulated on this machine)' if emulated else ''}, ONNX Runtime, batch 1, "
        f"{s['latency_rounds']} interleaved rounds of ≥ {s['min_runs']} runs; `p50 ÷` is the per-round ratio "
        "baseline ÷ row.", "", baseline_line(results), "",
        "## Targets", "",
        markdown_table(["target", "threshold", "measured", "verdict"],
                       [[x["target"], x["threshold"], x["measured"], x["verdict"]] for x in targets(results)]), "",
        f"Verdicts (benchmarks.common.verdict): {VERDICT_RULE} A target of several parts is met when every "
        "part is met and missed when one is. The baseline is one model (n=1): `Δ test` is each row's seeds "
        "against its single test accuracy.", "",
        "## All rows", "",
        markdown_table(["row", "group", "n", "val acc", "test acc %", "Δ test pt vs baseline", "params", "MACs",
                        "gzip B", "gzip ÷", "p50 µs (median)", "p50 ÷"], table), "",
        "Fronts: `pareto.png` (accuracy vs gzip bytes, accuracy vs p50; each group's Pareto front).", "",
        "## KD setting, chosen on validation", "",
        f"Seed {sel['seed']}, from the {sel['start']}, same budget; the winner (highest validation accuracy) is "
        "used for every KD row.", "",
        markdown_table(["candidate", "T", "α", "feature loss", "β", "val acc", "chosen"],
                       [[c["candidate"], c["temperature"], c["alpha"], c.get("feature_loss", "none")
                         if c["feature_weight"] else "none", c["feature_weight"], f"{c['val_accuracy']:.4f}",
                         "yes" if c["candidate"] == sel["winner"] else ""] for c in sel["candidates"]]), "",
        "## Per seed (val / test accuracy)", "",
        markdown_table(["row"] + [f"seed {x}" for x in s["seeds"]], seeds_table), "",
        "## Peers", "",
        "NNCF: " + (f"version {nncf['version']}, on the float ONNX model." if nncf.get("installed")
                    else f"not installed ({nncf.get('error')}); no NNCF rows.") + " Intel Neural Compressor: not "
        "run (its ONNX package, onnx-neural-compressor 1.0, would downgrade the pinned numpy to 1.26.4).", "",
        "## Pruned starts", "",
        f"50 % start channels: {results['pruning']['start50']['channels']} "
        f"({results['pruning']['start50']['macs_reduction']:.2f}× fewer MACs); deep start channels: "
        f"{results['pruning']['start_deep']['channels']} ({results['pruning']['start_deep']['macs_reduction']:.2f}× "
        "fewer MACs than the 50 % start).", "",
        "## Reproduce", "",
        "```", "python -m benchmarks.compression.run            # full run (baseline cached)",
        "python -m benchmarks.compression.run --render   # this file and pareto.png from results.json", "```", "",
        f"Took {results['seconds'] / 60:.1f} min. Per part (s): "
        + ", ".join(f"{k} {v:.0f}" for k, v in results["seconds_per_part"].items()) + ".", "",
        f"Machine: {m['cpu_model']}, {m['cpu_count']} cores, {m['os']}, Python {m['python']}, torch {m['torch']}, "
        f"onnxruntime {m['onnxruntime']}, torch threads {m.get('torch_threads', '?')}, commit {m['git_commit']}, "
        f"{m['date']}. Load average at start "
        f"{', '.join(f'{x:.1f}' for x in m['load_average_at_start'])}, at end "
        f"{', '.join(f'{x:.1f}' for x in m['load_average_at_end'])} (a shared machine: compare the interleaved "
        "ratios, not absolute times).", "",
    ]  # fmt: skip
    return "\n".join(lines)


def front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Pareto front of (cost, accuracy) points: lower cost, higher accuracy."""
    best, out = float("-inf"), []
    for cost, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            out.append((cost, acc))
            best = acc
    return out


def pareto_png(results: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.common import has_interval
    from edgecompress.reports import figure_png

    groups: dict[str, list[dict[str, Any]]] = {}
    for r in results["rows"]:
        groups.setdefault(r["group"], []).append(r)
    fig, axes = plt.subplots(1, 2, figsize=(14, 6))
    costs: list[tuple[str, Callable[[dict[str, Any]], float]]] = [
        ("gzip bytes (log)", lambda r: r["gzip_bytes"]),
        ("p50 µs, median of rounds (log)", lambda r: statistics.median(r["p50_ms_per_round"]) * 1000),
    ]
    for ax, (label, cost) in zip(axes, costs, strict=True):
        for group, members in groups.items():
            pts = [(cost(r), accuracy_interval(r)["mean"] * 100) for r in members]
            errs = [
                (iv["high"] - iv["low"]) * 50 if has_interval(iv) else 0.0
                for iv in map(accuracy_interval, members)
            ]  # n=1: a point, no bar
            handle = ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=errs, fmt="o", label=group,
                                 capsize=3, alpha=0.8)  # fmt: skip
            f = front(pts)
            ax.step(
                [p[0] for p in f], [p[1] for p in f], where="post", color=handle[0].get_color(), alpha=0.6
            )
            for r, p in zip(members, pts, strict=True):
                ax.annotate(
                    r["name"].split(": ", 1)[-1], p, fontsize=6, xytext=(3, 3), textcoords="offset points"
                )
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy % (mean over seeds, 95 % interval; n=1: no bar)")
        ax.grid(alpha=0.3, which="both")
        accs = sorted(accuracy_interval(r)["mean"] * 100 for r in results["rows"])
        ax.set_ylim(max(accs[0] - 1, accs[-1] - 12), accs[-1] + 1)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{results['dataset']['name']}: accuracy vs size and latency (device class "
                 f"{results['settings']['device_class']}), fronts per group")  # fmt: skip
    return figure_png(fig)


def write_outputs(results: dict[str, Any], out_dir: Path) -> None:
    from benchmarks.common import write_json
    from edgecompress.io import atomic_path

    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "results.json", results)
    for name, data in (("results.md", render(results).encode()), ("pareto.png", pareto_png(results))):
        with atomic_path(out_dir / name) as tmp:
            Path(tmp).write_bytes(data)


def main(argv: list[str] | None = None) -> int:
    import json

    from benchmarks.common import benchmark_parser

    parser = benchmark_parser(__doc__, "digits and tiny budgets")
    parser.add_argument(
        "--work", type=Path, default=None, help="folder for intermediate models (default: temp)"
    )
    parser.add_argument("--render", action="store_true", help="only re-render results.md and pareto.png")
    args = parser.parse_args(argv)
    os.environ.setdefault("EDGECOMPRESS_NO_PROGRESS", "1")
    out = args.out or HERE
    if args.render:
        results = json.loads((out / "results.json").read_text())
        write_outputs(results, out)
    else:
        if args.quick and args.out is None:
            parser.error("--quick needs --out (quick results must not overwrite the committed ones)")
        results = run(out, args.quick, args.work)
    print(out / "results.md")
    print("\n".join(f"{t['verdict']:<34} {t['target']}: {t['measured']}" for t in targets(results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
