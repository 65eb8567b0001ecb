"""Recovery after structured pruning at equal epoch budget (issue 26, item 5), on digits.

Per seed a parent CNN is trained (10 epochs); from it, at each pruned start (50 % and 75 % of each
layer's channels removed), six children are made through the library (`prune.recovery.
prune_and_recover`), every one with the same recovery budget (6 epochs, batch 64, peak lr 3e-3):

- one-shot + FT / one-shot + KD: one pruning step, then 6 epochs of fine-tuning or of KD from the
  unpruned parent (T = 2, α = 0.5: the project's defaults);
- progressive + FT / progressive + KD: 3 steps on the geometric schedule (kept channels (1 − r)^(k/3)),
  2 epochs of recovery after each;
- one-shot auto / progressive auto: `recovery="auto"`: both recoveries from the same parent, schedule,
  seed and budget, the higher **validation** accuracy kept (ties: fine-tuning).

Test accuracy is only reported. Each verdict comes from the 95 % t-interval of paired per-seed
differences (`benchmarks.common.verdict`): "auto is never worse than fine-tuning on test" is met when
the interval of (auto − fine-tune, same schedule) lies wholly at or above 0, missed when wholly below,
undecided otherwise. p50 of the parent and of the progressive-auto child on `rpi4-emulated` (emulated
on this shared machine), interleaved rounds.

    python -m benchmarks.compression.recovery.run            # writes 2026-12-06/results.{json,md}, results.png
    python -m benchmarks.compression.recovery.run --render   # results.md and results.png from results.json
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    VERDICT_RULE,
    format_interval,
    machine_info,
    mean_interval,
    run_or_render,
    verdict,
)

HERE = Path(__file__).resolve().parent / "2026-12-06"
SPEC = {"family": "cnn", "kwargs": {"widths": [32, 64], "depths": [2, 2]}}
SEEDS = (0, 1, 2)
RATIOS = (0.5, 0.75)
BUDGET_EPOCHS, STEPS = 6, 3
RECOVERY = {"batch_size": 64, "lr": 3e-3}
PARENT = {"epochs": 10, "batch_size": 64, "lr": 1e-2}
ROWS = {  # row -> (steps, recovery)
    "one-shot + FT": (1, "finetune"),
    "one-shot + KD": (1, "kd"),
    "one-shot auto": (1, "auto"),
    "progressive + FT": (STEPS, "finetune"),
    "progressive + KD": (STEPS, "kd"),
    "progressive auto": (STEPS, "auto"),
}
# (auto row, its fine-tuning row): the paired differences the verdicts are computed from
PAIRS = {
    "one-shot": ("one-shot auto", "one-shot + FT"),
    "progressive": ("progressive auto", "progressive + FT"),
}
COMMAND = "python -m benchmarks.compression.recovery.run"


def structured_config(ratio: float, steps: int, seed: int):
    from edgecompress.prune.structured import StructuredConfig
    from edgecompress.train import TrainConfig

    between = BUDGET_EPOCHS // steps if steps > 1 else 0
    after = BUDGET_EPOCHS - between * (steps - 1)
    ft = lambda e: TrainConfig(epochs=e, seed=seed, **RECOVERY) if e else None  # noqa: E731
    return StructuredConfig(
        ratio=ratio, steps=steps, schedule="geometric", finetune_between=ft(between),
        finetune_after=ft(after), seed=seed,
    )  # fmt: skip


def one_seed(data, seed: int, ratios: tuple[float, ...], parent_epochs: int) -> dict[str, Any]:
    from edgecompress.evaluate import module_macs, module_params
    from edgecompress.prune.recovery import RecoveryConfig, prune_and_recover
    from edgecompress.train import TrainConfig, accuracy, fit
    from edgecompress.zoo import build_model

    parent = build_model(SPEC, data.input_shape, data.num_classes, seed=seed)
    fit(parent, data, TrainConfig(seed=seed, **{**PARENT, "epochs": parent_epochs}), progress=False)
    (x_val, y_val), (x_test, y_test) = data.split("val"), data.split("test")
    out: dict[str, Any] = {
        "seed": seed,
        "parent": {"val_accuracy": accuracy(parent, x_val, y_val), "test_accuracy": accuracy(parent, x_test, y_test),
                   "macs": module_macs(parent, data.input_shape), "params": module_params(parent, data.input_shape)},
        "starts": {},
    }  # fmt: skip
    for ratio in ratios:
        rows, children = {}, {}
        for name, (steps, mode) in ROWS.items():
            started = time.monotonic()
            child, report = prune_and_recover(
                parent, data.input_shape, data.num_classes, structured_config(ratio, steps, seed),
                RecoveryConfig(recovery=mode), data, progress=False,
            )  # fmt: skip
            rec = report["recovery"]
            rows[name] = {
                "val_accuracy": accuracy(child, x_val, y_val), "test_accuracy": accuracy(child, x_test, y_test),
                "macs": report["after"]["macs"], "params": report["after"]["params"],
                "chosen": rec["chosen"], "branch_val_accuracy": rec.get("val_accuracy", {}),
                "budget_epochs": rec["budget_epochs"], "epochs_per_step": rec["epochs_per_step"],
                "schedule": [{k: r.get(k) for k in ("step", "ratio", "macs", "params", "val_accuracy_pruned",
                              "val_accuracy_recovered", "val_accuracy_finetuned", "epochs")} for r in report["schedule"]],
                "seconds": time.monotonic() - started,
            }  # fmt: skip
            children[name] = child
        out["starts"][str(ratio)] = {
            "rows": rows,
            "latency": latency(parent, children["progressive auto"], data),
        }
    return out


def latency(parent, child, data) -> dict[str, Any]:
    from edgecompress.edge import Measurement
    from edgecompress.export import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        for name, m in (("parent", parent), ("child", child)):
            export_onnx(m.eval(), tuple(data.input_shape), Path(tmp) / f"{name}.onnx")
        cmp = Measurement("rpi4-emulated", None, 200, 0.3).compare(
            Path(tmp) / "parent.onnx", Path(tmp) / "child.onnx", rounds=6
        )
    return {k: cmp[k] for k in ("speedup", "ci_low", "ci_high", "parent_p50_ms", "child_p50_ms", "emulated")}


def summarise(seeds: list[dict[str, Any]], ratios: tuple[float, ...]) -> dict[str, Any]:
    """Per start and row: mean test accuracy with its interval; the paired differences and verdicts."""
    table, diffs, verdicts = {}, {}, {}
    for ratio in map(str, ratios):
        table[ratio] = {
            name: {
                "test": mean_interval([s["starts"][ratio]["rows"][name]["test_accuracy"] for s in seeds]),
                "val": mean_interval([s["starts"][ratio]["rows"][name]["val_accuracy"] for s in seeds]),
            }
            for name in ROWS
        }
    for schedule, (auto, ft) in PAIRS.items():
        paired = [s["starts"][r]["rows"][auto]["test_accuracy"] - s["starts"][r]["rows"][ft]["test_accuracy"]
                  for r in map(str, ratios) for s in seeds]  # fmt: skip
        diffs[f"{auto} − {ft}"] = mean_interval(paired)
        verdicts[f"{schedule}: auto never worse than fine-tuning on test"] = verdict(
            diffs[f"{auto} − {ft}"], 0.0, higher_is_better=True
        )
    for a, b in (("progressive + KD", "progressive + FT"), ("one-shot + KD", "one-shot + FT"),
                 ("progressive + FT", "one-shot + FT")):  # fmt: skip
        diffs[f"{a} − {b}"] = mean_interval(
            [s["starts"][r]["rows"][a]["test_accuracy"] - s["starts"][r]["rows"][b]["test_accuracy"]
             for r in map(str, ratios) for s in seeds]
        )  # fmt: skip
    # each auto child is the explicit row it chose, bit for bit (same parent, schedule, seed; CPU is deterministic)
    same = [
        s["starts"][r]["rows"][auto]["test_accuracy"]
        == s["starts"][r]["rows"][
            f"{schedule} + {'KD' if s['starts'][r]['rows'][auto]['chosen'] == 'kd' else 'FT'}"
        ]["test_accuracy"]
        for schedule, (auto, _) in PAIRS.items()
        for r in map(str, ratios)
        for s in seeds
    ]
    return {"table": table, "differences": diffs, "verdicts": verdicts, "auto_equals_chosen_row": all(same)}


def run(quick: bool = False) -> dict[str, Any]:
    """The benchmark; `quick`: one seed, the 50 % start, a 3-epoch parent (a smoke test, no result)."""
    from edgecompress.data import load_digits
    from edgecompress.prune.recovery import RecoveryConfig

    data = load_digits()
    info = machine_info()
    started = time.monotonic()
    seeds_run, ratios = ((0,), (0.5,)) if quick else (SEEDS, RATIOS)
    parent_epochs = 3 if quick else PARENT["epochs"]
    seeds = [one_seed(data, s, ratios, parent_epochs) for s in seeds_run]
    kd = RecoveryConfig().kd
    return {
        "machine": {**info, "load_average_at_end": os.getloadavg(), "shared": True},
        "dataset": {"name": data.name, **{k: len(data.split(k)[1]) for k in ("train", "val", "test")}},
        "spec": SPEC, "seeds_run": list(seeds_run), "ratios": list(ratios), "budget_epochs": BUDGET_EPOCHS,
        "progressive_steps": STEPS, "schedule": "geometric", "recovery_train": RECOVERY,
        "parent_train": {**PARENT, "epochs": parent_epochs}, "quick": quick,
        "kd": {"temperature": kd.temperature, "alpha": kd.alpha}, "device_class": "rpi4-emulated", "emulated": True,
        "seeds": seeds, **summarise(seeds, ratios), "minutes": (time.monotonic() - started) / 60, "command": COMMAND,
    }  # fmt: skip


def render(r: dict[str, Any]) -> str:
    from edgecompress.reports import markdown_table

    m, d = r["machine"], r["dataset"]
    pt = lambda i: format_interval(i, 100, 2)  # noqa: E731
    lines = [
        "# Recovery after structured pruning at equal epoch budget (digits CNN)\n",
        f"Measured {m['date']} on {m['cpu_model']} ({m['cpu_count']} CPUs), git {m['git_commit']}; **a shared machine** "
        f"(load average {m['load_average_at_start'][0]:.2f} at start, {m['load_average_at_end'][0]:.2f} at end); "
        f"{r['minutes']:.1f} min. Command: `{r['command']}` (`--render` re-renders this file from results.json).\n",
        f"Data: {d['name']} ({d['train']} train / {d['val']} val / {d['test']} test images; one test image is "
        f"{100 / d['test']:.2f} pt). Model: `{json.dumps(r['spec'])}`, parent trained {r['parent_train']['epochs']} "
        f"epochs per seed; seeds {r['seeds_run']}. Every recovery: {r['budget_epochs']} epochs in total (batch "
        f"{r['recovery_train']['batch_size']}, peak lr {r['recovery_train']['lr']}): one-shot = 1 pruning step + "
        f"{r['budget_epochs']} epochs; progressive = {r['progressive_steps']} steps on the {r['schedule']} schedule "
        f"(kept channels (1 − r)^(k/{r['progressive_steps']})) with {r['budget_epochs'] // r['progressive_steps']} "
        f"epochs after each. KD: from the unpruned parent, T = {r['kd']['temperature']}, α = {r['kd']['alpha']}. "
        "auto: both recoveries from the same parent, schedule, seed and budget; the higher **validation** "
        "accuracy is kept, ties to fine-tuning. Test accuracy is reported only.\n",
        "## Verdicts\n",
        markdown_table(
            ["target", "paired test difference, pt (auto − fine-tune, both starts × seeds)", "verdict"],
            [
                [
                    name,
                    pt(r["differences"][f"{PAIRS[name.split(':')[0]][0]} − {PAIRS[name.split(':')[0]][1]}"]),
                    v,
                ]
                for name, v in r["verdicts"].items()
            ],
        ),  # fmt: skip
        f"\nRule: {VERDICT_RULE} The threshold is 0 (auto at least as accurate as fine-tuning). On validation "
        "auto can never be below fine-tuning (it keeps fine-tuning unless KD is higher there); the verdict is "
        "about test.\n",
        *[kd_kept_note(r, schedule, auto, ft) for schedule, (auto, ft) in PAIRS.items()],
        "## Test accuracy, % (mean [95 % t-interval] over seeds)\n",
        "Each auto child has the test accuracy of the explicit row it kept, in every seed and start: "
        f"{'yes' if r['auto_equals_chosen_row'] else 'NO'} (same parent, schedule, seed and budget).\n",
    ]
    rows = []
    for ratio, per_row in r["table"].items():
        for name, cells in per_row.items():
            chosen = [s["starts"][ratio]["rows"][name]["chosen"] for s in r["seeds"]]
            s0 = r["seeds"][0]["starts"][ratio]["rows"][name]
            rows.append([f"{float(ratio):.0%} removed", name, pt(cells["test"]), pt(cells["val"]),
                         ", ".join(chosen) if "auto" in name else "", int(s0["macs"]), int(s0["params"])])  # fmt: skip
    lines.append(
        markdown_table(["start", "row", "test acc %", "val acc %", "kept (per seed)", "MACs", "params"], rows)
    )
    lines.append("\n## Paired differences, pt (test)\n")
    lines.append(
        markdown_table(["difference", "mean [95 %]"], [[k, pt(v)] for k, v in r["differences"].items()])
    )
    lines.append("\n## Per seed (val / test accuracy; auto: the two branches' validation accuracies)\n")
    per_seed = []
    for s in r["seeds"]:
        for ratio in r["table"]:
            for name, row in s["starts"][ratio]["rows"].items():
                branches = ", ".join(f"{k} {v:.4f}" for k, v in row["branch_val_accuracy"].items())
                per_seed.append([s["seed"], f"{float(ratio):.0%}", name, f"{row['val_accuracy']:.4f}",
                                 f"{row['test_accuracy']:.4f}", row["chosen"], branches])  # fmt: skip
    lines.append(
        markdown_table(["seed", "start", "row", "val", "test", "recovery kept", "branches (val)"], per_seed)
    )
    lines.append(
        f"\n## Latency on `{r['device_class']}` (emulated on this machine), progressive-auto child vs parent\n"
    )
    lat = [[s["seed"], f"{float(ratio):.0%}", s["starts"][ratio]["latency"]["parent_p50_ms"],
            s["starts"][ratio]["latency"]["child_p50_ms"],
            f"{s['starts'][ratio]['latency']['speedup']:.2f} [{s['starts'][ratio]['latency']['ci_low']:.2f}, "
            f"{s['starts'][ratio]['latency']['ci_high']:.2f}]"] for s in r["seeds"] for ratio in r["table"]]  # fmt: skip
    lines.append(markdown_table(["seed", "start", "parent p50 ms", "child p50 ms", "speed-up [95 %]"], lat))
    parents = [
        [s["seed"], s["parent"]["val_accuracy"], s["parent"]["test_accuracy"], s["parent"]["macs"]]
        for s in r["seeds"]
    ]
    lines.append("\n## Parents\n")
    lines.append(markdown_table(["seed", "val acc", "test acc", "MACs"], parents))
    return "\n".join(lines) + "\n"


def kd_kept_note(r: dict[str, Any], schedule: str, auto: str, ft: str) -> str:
    """How often auto kept KD, and the test differences there: where it kept fine-tuning the child *is*
    the fine-tuning child, so those pairs add exact zeros (and a zero-width interval says only that)."""
    kept = [(s["seed"], ratio, s["starts"][ratio]["rows"]) for s in r["seeds"] for ratio in r["table"]]
    kd = [(seed, ratio, rows[auto]["test_accuracy"] - rows[ft]["test_accuracy"]) for seed, ratio, rows in kept
          if rows[auto]["chosen"] == "kd"]  # fmt: skip
    where = "; ".join(f"seed {seed}, {float(ratio):.0%} removed: {100 * d:+.2f} pt" for seed, ratio, d in kd)
    return (
        f"- {schedule}: auto kept KD in {len(kd)} of {len(kept)} (seed, start) pairs"
        + (f" ({where} on test)" if kd else "")
        + "; in the others it kept fine-tuning, whose child is the fine-tuning row's (difference exactly 0). "
        "So a zero-width interval here means no pair was worse, not a bound on other seeds.\n"
    )


def plot(r: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.common import error_bar
    from edgecompress.reports import figure_png

    fig, axes = plt.subplots(1, len(r["table"]), figsize=(5 * len(r["table"]), 3.2), squeeze=False)
    for ax, (ratio, per_row) in zip(axes[0], r["table"].items(), strict=True):
        for i, cells in enumerate(per_row.values()):
            bar = [[100 * v for v in side] for side in error_bar(cells["test"])]
            ax.errorbar([i], [100 * cells["test"]["mean"]], yerr=bar, fmt="o", capsize=3)
        ax.set_xticks(range(len(per_row)), list(per_row), rotation=30, ha="right", fontsize=7)
        ax.set_title(f"{float(ratio):.0%} of channels removed", fontsize=9)
        ax.set_ylabel("test accuracy % (mean, 95 % CI)")
    return figure_png(fig)


def main() -> None:
    run_or_render(__doc__, "one seed, the 50 % start, a 3-epoch parent", HERE, run, render, plot)


if __name__ == "__main__":
    main()
