"""Target-ISA numerics benchmark: the same models on x86 (this machine's ONNX Runtime) and on aarch64
(the arm64 agent image under QEMU, as a Pi 4: cortex-a72, no dot product; and as a Pi 5 / Orin CPU:
cortex-a76, dot product), side by side.

    python -m benchmarks.isa.run              # full run (Fashion-MNIST baseline CNN + MobileNet-style)
    python -m benchmarks.isa.run --quick      # digits, a small CNN, few rows (a smoke test; --out)
    python -m benchmarks.isa.run --render     # results.md and results.png again from results.json

Per network: float, static INT8 (per-channel and per-tensor × reduce_range on and off × QDQ and
QOperator), QAT and FP16. Per row and ISA: accuracy and top-1 agreement with the float parent on x86,
and between x86 and aarch64 for the same model (max |logit| difference too). Every model is run on
the same images: every k-th of the validation split (k in results.json; the check's own target is
stated for the full 5,000 images and timed separately with `edgecompress isa-check`). Settings are
fixed in this file before any run; nothing is selected, so there is no test-split decision to make.
QEMU timings are not meaningful: only the wall time of the check is reported, as its cost here.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    CACHE,
    baseline_model,
    baseline_record,
    cache_key,
    fashion_mnist_dataset_artifact,
    machine_info,
    write_report,
)

HERE = Path(__file__).resolve().parent
log = logging.getLogger("benchmarks.isa")
MOBILENET_SPEC = {"family": "mobilenet", "kwargs": {}}
# MobileNet-style zoo model trained here for this benchmark (the numerics, not its accuracy, matter).
MOBILENET_TRAIN = {"epochs": 2, "batch_size": 128, "lr": 3e-3, "max_train_samples": 10000, "seed": 0}
QUICK_SPEC = {"family": "cnn", "kwargs": {"widths": [16, 32], "depths": [1, 1]}}
TARGETS = {
    "aarch64 Pi 4 (cortex-a72, no dotprod)": "rpi4-qemu",
    "aarch64 Pi 5 (cortex-a76, dotprod)": "rpi5-qemu",
}
CHECK_TARGET_S = 600.0  # the check on 5,000 validation images: at most 10 minutes on this machine


def trained(dataset_path: Path, spec: dict[str, Any], train: dict[str, Any], tag: str) -> Path:
    from edgecompress.step import Lineage
    from edgecompress.train import TrainConfig, train_step

    config = TrainConfig(**train)
    key = cache_key(spec, config, dataset_path.name)
    out = CACHE / f"isa-{tag}-{key}"
    if not (out / "model.json").exists():
        train_step(dataset_path, spec, out, config, Lineage(enabled=False), progress=False)
    return out


def variants(quick: bool, qat_samples: int) -> list[tuple[str, Any]]:
    """(row name, QuantConfig or None for the float parent), fixed before any run."""
    from dataclasses import replace

    from edgecompress.quantize import QuantConfig

    base = QuantConfig(calibration_samples=256, target="rpi4")
    rows: list[tuple[str, Any]] = [("float", None)]
    formats = ("qdq",) if quick else ("qdq", "qoperator")
    for fmt in formats:
        for grain in (True, False):
            for rr in (False, True):
                name = f"static {fmt.upper()} {'per-channel' if grain else 'per-tensor'} reduce_range {'on' if rr else 'off'}"
                rows.append((name, replace(base, quant_format=fmt, per_channel=grain, reduce_range=rr)))
    rows.append(
        (
            "qat (QDQ per-channel)",
            replace(base, method="qat", qat_epochs=1, qat_lr=1e-4, qat_max_train_samples=qat_samples),
        )
    )
    rows.append(("fp16", replace(base, method="fp16")))
    return rows


def build_models(parent: Path, dataset_path: Path, rows: list[tuple[str, Any]], out: Path) -> dict[str, Path]:
    """Each row's ONNX file (the float parent as is), quantized without latency checks."""
    from edgecompress.quantize import quantize_step
    from edgecompress.step import Lineage

    files = {}
    for i, (name, config) in enumerate(rows):
        if config is None:
            files[name] = parent / "model.onnx"
            continue
        t0 = time.perf_counter()
        quantize_step(parent, dataset_path, out / f"m{i}", config, Lineage(enabled=False))
        files[name] = out / f"m{i}" / "model.onnx"
        log.info("built %s in %.0f s", name, time.perf_counter() - t0)
    return files


def run_target(files: dict[str, Path], x: np.ndarray, device_class: str, image: str) -> tuple[dict, dict]:
    """All models in one container run on the class's QEMU CPU: (logits per row, runner info)."""
    from edgecompress.isa import IsaCheckConfig, run_on_isa
    from edgecompress.runtime.devices import emulated_cpu

    with tempfile.TemporaryDirectory(prefix="edgecompress-isa-bench-") as tmp:
        job = Path(tmp)
        names = {}
        for i, (name, path) in enumerate(files.items()):
            shutil.copyfile(path, job / f"m{i}.onnx")
            names[f"m{i}"] = name
        np.save(job / "x.npy", np.ascontiguousarray(x, dtype=np.float32))
        spec = {"models": {k: f"{k}.onnx" for k in names}, "inputs": "x.npy", "threads": 0, "batch_size": 256}
        (job / "job.json").write_text(json.dumps(spec))
        t0 = time.perf_counter()
        info = run_on_isa(
            job, "qemu", IsaCheckConfig(isa_image=image, isa_timeout_s=7200), emulated_cpu(device_class)
        )
        info["wall_s"] = time.perf_counter() - t0
        logits = {names[k]: np.load(job / f"logits-{k}.npy") for k in names}
    info["seconds"] = {names[k]: v for k, v in info["seconds"].items()}
    return logits, info


def compare(rows: list[str], host: dict, targets: dict, y: np.ndarray) -> list[dict[str, Any]]:
    """Per row: x86 and each target's accuracy and agreement with the float parent on x86, and the
    target's agreement with x86 on the same model, with the paired x86 → target accuracy change."""
    from edgecompress.gate import accuracy_drop_interval

    ref = host["float"].argmax(1)
    out = []
    for name in rows:
        h = host[name]
        row: dict[str, Any] = {
            "model": name,
            "x86": {
                "accuracy": float((h.argmax(1) == y).mean()),
                "agreement_with_float": float((h.argmax(1) == ref).mean()),
            },
        }
        for label, logits in targets.items():
            t = logits[name]
            drop = accuracy_drop_interval(h.argmax(1) == y, t.argmax(1) == y)
            row[label] = {
                "accuracy": float((t.argmax(1) == y).mean()),
                "agreement_with_float": float((t.argmax(1) == ref).mean()),
                "agreement_with_x86": float((t.argmax(1) == h.argmax(1)).mean()),
                "max_abs_logit_diff_x86": float(np.max(np.abs(t.astype(np.float64) - h))),
                "accuracy_change_vs_x86": {
                    k: -v if k == "drop" else v for k, v in drop.items() if k in ("drop", "samples")
                }
                | {"low": -drop["ci_high"], "high": -drop["ci_low"]},
            }
        out.append(row)
    return out


def pipeline_check_config(image: str, max_samples: int, parent_max_samples: int | None = None) -> Any:
    """`isa-check`'s config as the pipeline runs it (rpi4-qemu, `image`); `parent_max_samples` None:
    the check's default for the float parent's run on the target."""
    from edgecompress.gate import GateConfig
    from edgecompress.isa import IsaCheckConfig

    config = IsaCheckConfig(
        gate=GateConfig(device_classes=["rpi4-qemu"]), isa_image=image, isa_max_samples=max_samples
    )
    if parent_max_samples is not None:
        config.isa_parent_max_samples = parent_max_samples
    return config


def timed_check(parent: Path, child: Path, dataset_path: Path, config: Any) -> dict[str, Any]:
    """`isa-check` with `config` (`pipeline_check_config`) on rpi4-qemu, timed end to end."""
    from edgecompress.isa import isa_check_step

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        r = isa_check_step(parent, child, dataset_path, config, Path(tmp) / "r.json")
    row = r["classes"]["rpi4-qemu"]
    return {"wall_s": time.perf_counter() - t0, "samples": r["samples"], "split_size": r["split_size"],
            "subsample_step": r["subsample_step"], "parent_samples": r["parent_on_target_samples"],
            "model_seconds": row["model_seconds"], "verdict": row["verdict"],
            "agreement_with_host": row["agreement_with_host"],
            "parent_agreement_with_host": row["parent_on_target"]["agreement_with_host"]}  # fmt: skip


def bench_network(name: str, parent: Path, dataset_path: Path, quick: bool, image: str, every: int,
                  workdir: Path) -> dict[str, Any]:  # fmt: skip
    from edgecompress.data import load_dataset
    from edgecompress.runtime.logits import model_logits

    rows = variants(quick, qat_samples=2000 if quick else 10000)
    files = build_models(parent, dataset_path, rows, workdir / name)
    x, y = load_dataset(dataset_path).split("val")
    x, y = x[::every], y[::every]
    host = {n: model_logits(p, x) for n, p in files.items()}
    targets, infos = {}, {}
    for label, cls in TARGETS.items():
        targets[label], infos[label] = run_target(files, x, cls, image)
        log.info("%s on %s: %.0f s", name, label, infos[label]["wall_s"])
    return {"network": name, "samples": int(len(y)), "subsample_step": every, "rows": compare([n for n, _ in rows], host, targets, y),
            "targets": {label: {"device_class": TARGETS[label], **{k: infos[label][k] for k in ("cpu", "onnxruntime_version", "wall_s", "seconds")}}
                        for label in TARGETS}}  # fmt: skip


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The check's cost target: wall time for the whole validation split within 10 minutes, decided by
    the t-interval over the repeats (benchmarks.common.verdict). A check timed on a subsample cannot
    meet a whole-split target: it is "missed" only where even the subsample's interval is above the
    threshold (more images never take less time), "undecided" otherwise."""
    from benchmarks.common import format_interval, mean_interval, verdict

    timing = results["check_timing"]
    interval = mean_interval([r["wall_s"] for r in timing["runs"]])
    every = timing["runs"][0]["subsample_step"]
    images = f"{timing['runs'][0]['samples']} of {timing['runs'][0]['split_size']} validation images"
    images += f" (every {every}th)" if every > 1 else ""
    parent = timing["runs"][0].get("parent_samples", timing["runs"][0]["samples"])  # before: all of them
    who = (
        "parent + child"
        if parent == timing["runs"][0]["samples"]
        else f"child; float parent on {parent} of them"
    )
    decided = verdict(interval, CHECK_TARGET_S, higher_is_better=False)
    if timing["runs"][0]["samples"] < timing["runs"][0]["split_size"] and decided == "met":
        decided = "undecided"  # a subsample's time is a lower bound on the whole split's
    return [{
        "target": f"isa-check wall time ≤ {CHECK_TARGET_S:.0f} s ({images}, {who} on rpi4-qemu)",
        "measured": format_interval(interval, digits=0, unit=" s"), "threshold": f"≤ {CHECK_TARGET_S:.0f} s",
        "verdict": decided,
    }]  # fmt: skip


def _pct(v: float) -> str:
    return f"{v * 100:.2f}"


def _pt(v: float) -> str:
    """A signed change in points; a zero prints as +0.00, never -0.00."""
    return f"{v * 100 + 0.0:+.2f}"


def _change_cell(side: dict[str, Any], samples: int) -> str:
    """The paired accuracy change x86 → aarch64 with its interval; where every top-1 prediction is the
    same there is nothing to bootstrap (a percentile bootstrap gives a [0, 0] "interval" then): say so."""
    c = side["accuracy_change_vs_x86"]
    if side["agreement_with_x86"] == 1.0:
        return f"{_pt(c['drop'])} (top-1 identical on all {samples})"
    return f"{_pt(c['drop'])} [{_pt(c['low'])}, {_pt(c['high'])}]"


def render(results: dict[str, Any]) -> str:
    """results.md, every figure from results.json."""
    from benchmarks.common import VERDICT_RULE, baseline_line
    from edgecompress.reports import markdown_table

    m = results["machine"]
    labels = list(TARGETS)
    lines = [
        "# Target-ISA numerics: x86 vs aarch64 (QEMU)",
        "",
        f"Run on {m['cpu_model']} ({m['machine']}, {m['cpu_count']} CPUs), ONNX Runtime {m['onnxruntime']} on x86 and "
        f"{results['networks'][0]['targets'][labels[0]]['onnxruntime_version']} (aarch64 wheel) in the arm64 agent image "
        f"under QEMU {results['qemu_version']}; commit {m['git_commit']}, {m['date']}."
        + (" **Quick run (digits): a smoke test, not the benchmark.**" if results.get("quick") else ""),
        "",
        f"The first network is the benchmarks' baseline CNN. {baseline_line(results)}",
        "",
        "aarch64 is **emulated (QEMU user mode)**: the numerics are the aarch64 build's (QEMU executes the same "
        "NEON / dot-product instructions a board's ONNX Runtime selects for the emulated CPU); **timings under QEMU "
        "are not meaningful** and none are reported except the wall time of the check as its cost on this machine.",
        "",
        "## Targets",
        "",
        markdown_table(["target", "measured (mean [95 % CI])", "threshold", "verdict"],
                       [[t["target"], t["measured"], t["threshold"], t["verdict"]] for t in targets(results)]),
        "", f"Verdicts (benchmarks.common.verdict): {VERDICT_RULE} The target is for the whole validation "
        "split: a check timed on a subsample can miss it (its time is a lower bound) but not meet it; "
        "the whole-split runs are the dated `check-*` reports beside this one.", "",
    ]  # fmt: skip
    for net in results["networks"]:
        every = net["subsample_step"]
        lines += [
            f"## {net['network']}",
            "",
            f"{net['samples']} validation images"
            + (f" (every {every}th of the split)" if every > 1 else "")
            + ". Accuracy and top-1 agreement in %; `agree x86` is the aarch64 model's top-1 agreement with the same "
            "model on x86; `Δacc` the paired accuracy change x86 → aarch64 in points with its 95 % bootstrap interval "
            "over images.",
            "",
        ]
        headers = ["model", "x86 acc", "x86 agree float"]
        for label in labels:
            short = TARGETS[label]
            headers += [
                f"{short} acc",
                f"{short} agree float",
                f"{short} agree x86",
                f"{short} Δacc pt",
                f"{short} max abs Δlogit",
            ]
        rows = []
        for r in net["rows"]:
            row = [r["model"], _pct(r["x86"]["accuracy"]), _pct(r["x86"]["agreement_with_float"])]
            for label in labels:
                t = r[label]
                row += [_pct(t["accuracy"]), _pct(t["agreement_with_float"]), _pct(t["agreement_with_x86"]),
                        _change_cell(t, net["samples"]),
                        f"{t['max_abs_logit_diff_x86']:.3g}"]  # fmt: skip
            rows.append(row)
        lines += [markdown_table(headers, rows), ""]
        for label in labels:
            t = net["targets"][label]
            cpu = t["cpu"]
            lines.append(f"- {label}: `{t['device_class']}`, CPU features seen by ONNX Runtime: "
                         f"{', '.join(cpu['features'])} (INT8 dot product: {cpu['int8_dot_product']}); "
                         f"all {len(net['rows'])} models in {t['wall_s']:.0f} s of QEMU wall time.")  # fmt: skip
        lines.append("")
    lines += ["## What differed between x86 and aarch64", ""]
    for net in results["networks"]:
        for label in labels:
            differ = [r for r in net["rows"] if r[label]["agreement_with_x86"] < 1.0]
            if not differ:
                lines.append(
                    f"- {net['network']}, {label}: every model's top-1 predictions identical to x86."
                )
                continue
            worst = min(differ, key=lambda r: r[label]["agreement_with_x86"])
            lines.append(
                f"- {net['network']}, {label}: {len(differ)} of {len(net['rows'])} models predict differently from "
                f"x86 on some images; the largest difference is `{worst['model']}` (top-1 agreement "
                f"{_pct(worst[label]['agreement_with_x86'])} %, max |Δlogit| {worst[label]['max_abs_logit_diff_x86']:.3g})."
            )  # fmt: skip
    timing = results["check_timing"]
    lines += ["", "## Wall time of the check", "",
              markdown_table(["run", "images", "subsample step", "wall s", "verdict"],
                             [[i + 1, r["samples"], r["subsample_step"], f"{r['wall_s']:.0f}", r["verdict"]]
                              for i, r in enumerate(timing["runs"])]),
              "", f"Command: `{results['command']}`.", ""]  # fmt: skip
    return "\n".join(lines)


def plot(results: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgecompress.reports import figure_png

    nets = results["networks"]
    fig, axes = plt.subplots(len(nets), 1, figsize=(11, 3.2 * len(nets) + 1), squeeze=False)
    for ax, net in zip(axes[:, 0], nets, strict=True):
        names = [r["model"] for r in net["rows"]]
        pos = np.arange(len(names))
        width = 0.8 / (1 + len(TARGETS))
        ax.bar(pos, [r["x86"]["accuracy"] * 100 for r in net["rows"]], width, label="x86")
        for i, label in enumerate(TARGETS, start=1):
            ax.bar(
                pos + i * width,
                [r[label]["accuracy"] * 100 for r in net["rows"]],
                width,
                label=label + " (QEMU)",
            )
        accs = [r["x86"]["accuracy"] * 100 for r in net["rows"]]
        ax.set_ylim(max(0, min(accs) - 5), min(100, max(accs) + 2))
        ax.set_xticks(pos + width, names, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("val accuracy %")
        ax.set_title(f"{net['network']}: x86 vs aarch64 (emulated)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_png(fig)


def qemu_version() -> str:
    import subprocess

    out = subprocess.run(["qemu-aarch64-static", "--version"], capture_output=True, text=True).stdout
    return out.split("version", 1)[1].split()[0] if "version" in out else "unknown"


def main(argv: list[str] | None = None) -> int:
    from edgecompress.isa import default_agent_image

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="digits, a small CNN, QDQ rows only (smoke test)"
    )
    parser.add_argument("--out", type=Path, default=HERE, help="folder for results.json/md/png")
    parser.add_argument("--render", action="store_true", help="only re-render results.md and results.png")
    parser.add_argument(
        "--image", default="", help="arm64 agent image (default: docker/build-agent.sh's tag)"
    )
    parser.add_argument(
        "--every", type=int, default=5, help="side-by-side rows on every k-th validation image"
    )
    parser.add_argument(
        "--timing-repeats", type=int, default=3, help="timed isa-check runs (mean and interval)"
    )
    parser.add_argument(
        "--timing-max-samples", type=int, default=0, help="timed check's images (0: the whole split)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.render:
        results = json.loads((args.out / "results.json").read_text())
        (args.out / "results.md").write_text(render(results))
        (args.out / "results.png").write_bytes(plot(results))
        return 0
    image = args.image or default_agent_image()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgecompress-isa-bench-") as tmp:
        work = Path(tmp)
        if args.quick:
            from edgecompress.data import load_digits, save_dataset

            data = work / "digits.npz"
            save_dataset(load_digits(), data)
            networks = {
                "digits small CNN": trained(
                    data, QUICK_SPEC, {"epochs": 4, "batch_size": 64, "lr": 1e-2}, "quick"
                )
            }
        else:
            data = fashion_mnist_dataset_artifact()
            networks = {"Fashion-MNIST baseline CNN": baseline_model(),
                        "Fashion-MNIST MobileNet-style": trained(data, MOBILENET_SPEC, MOBILENET_TRAIN, "mobilenet")}  # fmt: skip
        results: dict[str, Any] = {"machine": machine_info(), "qemu_version": qemu_version(), "quick": args.quick,
                                   "image": image, "networks": [],
                                   **baseline_record(next(iter(networks.values())))}  # fmt: skip
        for name, parent in networks.items():
            results["networks"].append(bench_network(name, parent, data, args.quick, image, args.every, work))
        first = next(iter(networks.values()))
        child = work / next(iter(networks)) / "m1"  # static QDQ per-channel, reduce_range off
        results["check_timing"] = {"runs": [timed_check(first, child, data, pipeline_check_config(image, args.timing_max_samples))
                                            for _ in range(args.timing_repeats)]}  # fmt: skip
    results["seconds"] = time.perf_counter() - start
    results["command"] = "python -m benchmarks.isa.run" + (" --quick" if args.quick else "") + "".join(
        f" --{flag.replace('_', '-')} {getattr(args, flag)}" for flag, default in
        (("every", 5), ("timing_repeats", 3), ("timing_max_samples", 0)) if getattr(args, flag) != default)  # fmt: skip
    write_report(results, args.out, render, plot, "results.png")
    print(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
