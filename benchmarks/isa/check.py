"""The cost of `isa-check` on the whole validation split (a new, dated run beside `results.json`).

The committed side-by-side run (results.json) timed the check on every 20th image only, because the
float parent, run on the target under QEMU, was expected to make the whole split slow (the estimate
written here before any whole-split run, 1,200-1,500 s, was wrong: check-2026-12-01 measured the
parent on every image at 546 [543, 548] s, n=3). The check now judges the child (which runs on every checked image) against the
parent's predictions on this machine, and runs the parent on the target on a small subsample only,
to confirm float agrees across ISAs. This run times that check as the pipeline runs it:

    python -m benchmarks.isa.check [--out benchmarks/isa/check-YYYY-MM-DD] [--repeats 3]

Network and child are results.json's timing pair (the Fashion-MNIST baseline CNN and its static QDQ
per-channel INT8 child, reduce_range off) on `rpi4-qemu` (cortex-a72, no dot product); every setting
is the check's default except `isa_max_samples` 0 (all 5,000 images). Target: ≤ 600 s, judged on
the mean of the repeats with its 95 % interval. QEMU timings say nothing about the board: the wall
time is the check's cost on this machine, nothing else.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import machine_info, write_report
from benchmarks.isa.run import (
    CHECK_TARGET_S,
    build_models,
    pipeline_check_config,
    qemu_version,
    targets,
    timed_check,
    variants,
)

HERE = Path(__file__).resolve().parent
PLOT = "check.png"


def run(repeats: int, image: str) -> dict[str, Any]:
    from benchmarks.common import baseline_model, baseline_record, fashion_mnist_dataset_artifact
    from edgecompress.isa import IsaCheckConfig

    data, parent = fashion_mnist_dataset_artifact(), baseline_model()
    child_row = variants(quick=False, qat_samples=10000)[1]  # static QDQ per-channel reduce_range off
    defaults = IsaCheckConfig()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgecompress-isa-check-") as tmp:
        child = build_models(parent, data, [("float", None), child_row], Path(tmp))[child_row[0]].parent
        runs, before = [], []
        for i in range(repeats):  # alternating, so both see the same machine state
            runs.append(timed_check(parent, child, data, pipeline_check_config(image, max_samples=0)))
            before.append(
                timed_check(parent, child, data, pipeline_check_config(image, 0, parent_max_samples=0))
            )
            logging.info("round %d of %d: %.0f s, parent on all %.0f s", i + 1, repeats, runs[-1]["wall_s"],
                         before[-1]["wall_s"])  # fmt: skip
    return {
        "machine": machine_info(),
        **baseline_record(parent),
        "qemu_version": qemu_version(),
        "image": image,
        "network": "Fashion-MNIST baseline CNN",
        "child": child_row[0],
        "device_class": "rpi4-qemu",
        "emulated": "qemu",
        "settings": {"isa_max_samples": 0, "isa_parent_max_samples": defaults.isa_parent_max_samples},
        "check_timing": {"runs": runs},
        "parent_on_all": {"runs": before},
        "seconds": time.perf_counter() - start,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.isa.check" + (f" --repeats {repeats}" if repeats != 3 else ""),
    }


def render(results: dict[str, Any]) -> str:
    """results.md, every figure from results.json."""
    from benchmarks.common import VERDICT_RULE, baseline_line, format_interval, mean_interval
    from edgecompress.reports import markdown_table

    m, runs, before = results["machine"], results["check_timing"]["runs"], results["parent_on_all"]["runs"]
    now, old = mean_interval([r["wall_s"] for r in runs]), mean_interval([r["wall_s"] for r in before])
    ratio = mean_interval([b["wall_s"] / r["wall_s"] for r, b in zip(runs, before, strict=True)])
    lines = [
        f"# isa-check on the whole validation split ({results['device_class']}, QEMU)",
        "",
        f"Run on {m['cpu_model']} ({m['machine']}, {m['cpu_count']} CPUs) with the arm64 agent image "
        f"`{results['image']}` under QEMU {results['qemu_version']}; commit {m['git_commit']}, {m['date']}. "
        f"{results['network']} and its {results['child']} child; settings: "
        + ", ".join(f"`{k}` {v}" for k, v in results["settings"].items())
        + ".",
        "",
        f"The parent is the benchmarks' baseline CNN. {baseline_line(results)}",
        "",
        "aarch64 is **emulated (QEMU user mode)**: only the wall time of the check is reported, as its cost on "
        "this machine; it says nothing about the board's speed.",
        "",
        "## Target",
        "",
        markdown_table(
            ["target", "measured (mean [95 % CI])", "threshold", "verdict"],
            [[t["target"], t["measured"], t["threshold"], t["verdict"]] for t in targets(results)],
        ),
        "",
        f"Verdict (benchmarks.common.verdict): {VERDICT_RULE}",
        "",
        "## Runs",
        "",
        markdown_table(
            [
                "run",
                "child images",
                "parent images on target",
                "wall s",
                "child s on target",
                "parent s on target",
                "child agree x86 %",
                "parent agree x86 %",
                "verdict",
            ],
            [
                [
                    i + 1,
                    r["samples"],
                    r["parent_samples"],
                    f"{r['wall_s']:.0f}",
                    f"{r['model_seconds']['child']:.0f}",
                    f"{r['model_seconds']['parent']:.0f}",
                    f"{r['agreement_with_host'] * 100:.2f}",
                    f"{r['parent_agreement_with_host'] * 100:.2f}",
                    r["verdict"],
                ]
                for i, r in enumerate(runs)
            ],
        ),  # fmt: skip
        "",
        "## Against the parent on every image (the check before this change), same rounds",
        "",
        "Each round ran the check once as it is now and once with `isa_parent_max_samples` 0 (the float parent "
        "on the target on every image, as before), one after the other.",
        "",
        markdown_table(
            ["", "wall s (mean [95 % CI])", "parent s on target (mean)"],
            [
                ["now (parent on a subsample)", format_interval(now, digits=0), f"{_mean_parent(runs):.0f}"],
                ["parent on every image", format_interval(old, digits=0), f"{_mean_parent(before):.0f}"],
            ],
        ),
        "",
        f"Per round, before / now: {format_interval(ratio, digits=2, unit='×')} faster.",
        "",
        f"Command: `{results['command']}` ({results['seconds']:.0f} s in all, finished {results['finished']}).",
        "",
    ]
    return "\n".join(lines)


def _mean_parent(runs: list[dict[str, Any]]) -> float:
    return sum(r["model_seconds"]["parent"] for r in runs) / len(runs)


def plot(results: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from edgecompress.reports import figure_png

    xs = np.arange(1, len(results["check_timing"]["runs"]) + 1)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for offset, key, name in ((-0.2, "check_timing", "now"), (0.2, "parent_on_all", "parent on all")):
        runs = results[key]["runs"]
        child = np.array([r["model_seconds"]["child"] for r in runs])
        parent = np.array([r["model_seconds"]["parent"] for r in runs])
        rest = np.array([r["wall_s"] for r in runs]) - child - parent
        hatch = "" if key == "check_timing" else "//"
        ax.bar(xs + offset, child, 0.38, color="C0", hatch=hatch, label=f"{name}: child on target")
        ax.bar(xs + offset, parent, 0.38, bottom=child, color="C1", hatch=hatch,
               label=f"{name}: float parent on target ({runs[0]['parent_samples']} images)")  # fmt: skip
        ax.bar(
            xs + offset,
            rest,
            0.38,
            bottom=child + parent,
            color="C2",
            hatch=hatch,
            label=f"{name}: host side",
        )
    ax.axhline(CHECK_TARGET_S, color="k", linestyle="--", label=f"target {CHECK_TARGET_S:.0f} s")
    ax.set_xticks(xs, [f"round {i}" for i in xs])
    ax.set_ylabel("wall s (QEMU: cost here, not board speed)")
    ax.set_title(f"isa-check, {results['device_class']} (emulated)")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return figure_png(fig)


def main(argv: list[str] | None = None) -> int:
    from edgecompress.isa import default_agent_image

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="folder (default: benchmarks/isa/check-<today>)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed checks (mean and interval)")
    parser.add_argument(
        "--image", default="", help="arm64 agent image (default: docker/build-agent.sh's tag)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = args.out or HERE / f"check-{datetime.now(UTC):%Y-%m-%d}"
    results = run(args.repeats, args.image or default_agent_image())
    write_report(results, out, render, plot, PLOT)
    print(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
