"""Target-ISA numerics check: run the child on the ONNX Runtime build of each target device class's
ISA before it ships, and reject it for a class where its accuracy there breaks the gate's rule.

ONNX Runtime's INT8 kernels differ by ISA (x86 AVX2 without VNNI saturates in `vpmaddubsw`; Arm uses
NEON or dot-product kernels), so a child the gate accepts on the build machine can behave differently
on the board it is shipped to. For every device class whose ISA (its profile's `isa`: where its
agents run) differs from this machine's, the child and its float parent run on the validation split
with that ISA's ONNX Runtime: natively when this machine has it, else (aarch64 on x86) in the arm64
agent image under QEMU, with the QEMU CPU that has the board's INT8 features (`profiles.emulated_cpu`).
QEMU executes the same instructions the board's ONNX Runtime uses, so the numerics are the board's;
its timings mean nothing and are not used.

Per class: accuracy on the target, on this machine and of the float parent; top-1 agreement of the
target's child with this machine's child and with the parent; max |logit| difference to both; the
paired accuracy drop parent → target child with its interval, decided by the gate's own rule
(`gate.accuracy_breaks_rule`). Classes of this machine's ISA are listed as not checked, with why;
an x86 stand-in (`rpi4-emulated`) runs on x86, so its board is checked through a `*-qemu` class.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress.errors import BenchmarkError, ConfigError
from edgecompress.gate import (
    GateConfig,
    IsaClassResult,
    IsaResult,
    accuracy_breaks_rule,
    accuracy_drop_interval,
    check_decision_data,
)
from edgecompress.io import write_json
from edgecompress.reports import markdown_table
from edgecompress.rules import Reason
from edgecompress.runtime.devices import parse_device_classes
from edgecompress.runtime.facts import normalize_isa
from edgecompress.step import write_report

AGENT_IMAGE_ENV = "EDGECOMPRESS_AGENT_IMAGE"
# The gate's settings that are not the accuracy rule: the check shares the rest (one definition).
_NOT_THE_RULE = (
    "min_speedup",
    "registered_model_name",
    "measurement",
    "latency_rounds",
    "promotion_max_slowdown",
)


def default_agent_image() -> str:
    """What docker/build-agent.sh tags by default: localhost/edgecompress-agent:<version>-arm64."""
    from edgecompress import __version__

    return os.environ.get(AGENT_IMAGE_ENV) or f"localhost/edgecompress-agent:{__version__}-arm64".replace(
        "+", "_"
    )


@dataclass
class IsaCheckConfig:
    """Which device classes' ISAs the child is checked on, with the gate's accuracy rule."""

    gate: GateConfig = field(default_factory=GateConfig, metadata={"flatten": True, "exclude": _NOT_THE_RULE})
    skip_isa_check: bool = field(
        default=False, metadata={"help": "do not run the target-ISA check (its result says it was skipped)"}
    )
    isa_image: str = field(
        default="",
        metadata={
            "help": f"arm64 agent image for aarch64 targets on x86 (default: ${AGENT_IMAGE_ENV}, else "
            "localhost/edgecompress-agent:<version>-arm64)"
        },
    )
    # 1000: a float child (pruned, distilled, FP16) runs in software floating point under QEMU (~0.1 s
    # per image for the baseline CNN here, benchmarks/isa/check-2026-12-01); an INT8 child ~8x faster
    isa_max_samples: int = field(
        default=1000,
        metadata={
            "help": "at most this many images of the split: every k-th, k stated in the result (0: all)"
        },
    )
    # the decision compares the child on the target with the parent on this machine; the parent's run
    # on the target only confirms that float numerics agree across ISAs, and is the slow part
    isa_parent_max_samples: int = field(
        default=200,
        metadata={
            "help": "the float parent also runs on the target on at most this many of those images "
            "(every k-th; 0: all), to confirm float agrees across ISAs"
        },
    )
    isa_threads: int = field(
        default=0, metadata={"help": "ONNX Runtime threads on the target (0: its default)"}
    )
    isa_timeout_s: float = field(
        default=1800.0, metadata={"help": "give up on one target ISA after this long"}
    )

    def validate(self) -> None:
        g = self.gate
        g.validate_rule()
        if (
            min(self.isa_max_samples, self.isa_parent_max_samples, self.isa_threads) < 0
            or not self.isa_timeout_s > 0
        ):
            raise ConfigError(
                "isa_max_samples, isa_parent_max_samples and isa_threads must be ≥ 0 and isa_timeout_s > 0"
            )
        from edgecompress.runtime.devices import profile

        for name in parse_device_classes(g.device_classes):
            profile(name)


def host_isa() -> str:
    return normalize_isa(platform.machine())


def subsample(n: int, max_samples: int) -> int:
    """The step k of an every-k-th subsample with at most `max_samples` of `n` images (1: all)."""
    return 1 if max_samples <= 0 or n <= max_samples else math.ceil(n / max_samples)


def _plan(classes: list[str]) -> dict[str, dict[str, Any]]:
    """Per class: its ISA, whether it is checked here and how (native or QEMU CPU), or why not."""
    from edgecompress.runtime.devices import emulated_cpu, profile, quantization_target

    host = host_isa()
    plan = {}
    for name in classes:
        p, board = profile(name), quantization_target(name)
        row: dict[str, Any] = {"isa": p.isa, "emulation": p.emulation, "int8_dot_product": p.int8_dot_product}
        if p.isa == host:
            row["checked"] = False
            row["why_not"] = f"same ISA as this machine ({host})"
            if board.isa != host:
                row["why_not"] += (
                    f"; it stands in for {board.name} ({board.isa}): add {board.name}-qemu to check that ISA"
                )
        elif p.isa == "aarch64" and host == "x86_64":
            row.update({"checked": True, "runner": "qemu", "qemu_cpu": emulated_cpu(name)})
        else:
            row.update({"checked": False, "why_not": f"no way to run {p.isa} on {host} here"})
        plan[name] = row
    return plan


def qemu_podman_args(qemu_cpu: str, folder: Path) -> list[str]:
    """`podman run` options that run the arm64 image as `qemu_cpu`: QEMU_CPU, and an aarch64
    /proc/cpuinfo (written into `folder`), without which ONNX Runtime's import segfaults under QEMU."""
    from edgecompress.runtime.facts import emulated_cpuinfo

    cpuinfo = Path(folder) / f"cpuinfo-{qemu_cpu}"
    cpuinfo.write_text(emulated_cpuinfo(qemu_cpu))
    return ["--platform", "linux/arm64", "-e", f"QEMU_CPU={qemu_cpu}", "-v", f"{cpuinfo}:/proc/cpuinfo:ro"]


def run_on_isa(job_dir: Path, runner: str, config: IsaCheckConfig, qemu_cpu: str = "") -> dict[str, Any]:
    """Run the job in `job_dir` (see `runtime.logits`) natively or in the arm64 agent image under QEMU."""
    if runner == "native":
        from edgecompress.runtime.logits import run_job

        return run_job(job_dir)
    image = config.isa_image or default_agent_image()
    if shutil.which("podman") is None:
        raise BenchmarkError("isa-check needs podman for aarch64 targets on x86: run scripts/system-deps.sh")
    if not Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists():
        raise BenchmarkError(
            "isa-check: qemu-aarch64 is not registered with binfmt_misc: run scripts/system-deps.sh (as root)"
        )
    if subprocess.run(["podman", "image", "exists", image], capture_output=True).returncode != 0:
        raise BenchmarkError(
            f"isa-check: the arm64 agent image {image} is not built: run docker/build-agent.sh --bootstrap-base"
        )
    os.chmod(job_dir, 0o777)  # the image runs as uid 10001 and writes the logits here
    cmd = [
        "podman",
        "run",
        "--rm",
        "--network",
        "none",
        *qemu_podman_args(qemu_cpu, job_dir),
        "-v",
        f"{job_dir}:/job:z",
        "--entrypoint",
        "python3",
        image,
        "-m",
        "edgecompress.runtime.logits",
        "/job",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=config.isa_timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise BenchmarkError(
            f"isa-check on aarch64 ({qemu_cpu}) took more than {config.isa_timeout_s:g} s"
        ) from exc
    if proc.returncode != 0:
        raise BenchmarkError(f"isa-check on aarch64 ({qemu_cpu}) failed: {proc.stderr[-2000:]}")
    return json.loads((job_dir / "info.json").read_text())


def _compare(target: np.ndarray, host: np.ndarray, parent: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    t, h, p = target.argmax(1), host.argmax(1), parent.argmax(1)
    return {
        "accuracy": float((t == y).mean()),
        "host_accuracy": float((h == y).mean()),
        "parent_accuracy": float((p == y).mean()),
        "agreement_with_host": float((t == h).mean()),
        "agreement_with_parent": float((t == p).mean()),
        "max_abs_logit_diff_host": float(np.max(np.abs(target - host))) if len(y) else 0.0,
        "max_abs_logit_diff_parent": float(np.max(np.abs(target - parent))) if len(y) else 0.0,
    }


def _parent_on_target(target: np.ndarray, host: np.ndarray) -> dict[str, Any]:
    return {
        "samples": int(len(host)),
        "agreement_with_host": float((target.argmax(1) == host.argmax(1)).mean()) if len(host) else 1.0,
        "max_abs_logit_diff_host": float(np.max(np.abs(target - host))) if len(host) else 0.0,
    }


def isa_check(
    parent_onnx: Path,
    child_onnx: Path,
    x: np.ndarray,
    y: np.ndarray,
    config: IsaCheckConfig,
    split_size: int | None = None,
) -> IsaResult:
    """The check on inputs `x` with labels `y` (already the decision split, maybe subsampled). This
    machine's logits are the ones its gate judged (`export.onnx_logits`: the QDQ graph as written where
    its own kernels would saturate the child), so the comparison is target against that judgement."""
    from edgecompress.export import onnx_logits
    from edgecompress.runtime.numerics import evaluation_numerics

    config.validate()
    g = config.gate
    classes = parse_device_classes(g.device_classes)
    start = time.perf_counter()
    result = IsaResult(
        host_isa=host_isa(),
        decision_split=g.decision_split,
        samples=int(len(y)),
        split_size=int(split_size if split_size is not None else len(y)),
        rule="per class, the gate's accuracy rule on the target ISA: "
        + g.rule.describe(g.decision_split, "vs the float parent"),
        skipped=config.skip_isa_check,
    )
    if config.skip_isa_check:
        why = {"why_not": "skipped (skip_isa_check)"}
        result.classes = {c: IsaClassResult(False, details=dict(why)) for c in classes}
        result.wall_s = time.perf_counter() - start
        return result
    plan = _plan(classes)
    host_child = onnx_logits(Path(child_onnx), x)
    host_parent = onnx_logits(Path(parent_onnx), x)
    result.extra.update(host_numerics=evaluation_numerics(Path(child_onnx)))
    parent_correct = host_parent.argmax(1) == y
    parent_step = subsample(len(y), config.isa_parent_max_samples)
    parent_picked = np.arange(0, len(y), parent_step)
    result.extra.update(parent_on_target_samples=int(len(parent_picked)), parent_on_target_step=parent_step)
    runs: dict[tuple[str, str], tuple[dict[str, Any], np.ndarray, np.ndarray, float]] = {}
    for name, row in plan.items():
        if not row.pop("checked"):
            result.classes[name] = IsaClassResult(False, details=row)
            continue
        key = (row["runner"], row.get("qemu_cpu", ""))
        if key not in runs:  # classes on the same ISA and CPU share one run
            runs[key] = _run_target(key, child_onnx, parent_onnx, x, parent_picked, config)
        info, child_t, parent_t, seconds = runs[key]
        from edgecompress.runtime.profilecheck import mismatches

        drop = accuracy_drop_interval(parent_correct, child_t.argmax(1) == y, g.rule.confidence)
        reasons = []
        broken = accuracy_breaks_rule(drop, g)
        if broken:
            reasons.append(Reason(broken.code, f"on {row['isa']}: {broken.message}"))
        cpu_disagrees = mismatches(name, info.get("cpu"))
        if cpu_disagrees:  # the run did not use the board's INT8 features: its numerics prove nothing
            message = "the target CPU disagrees with the profile: " + "; ".join(cpu_disagrees)
            reasons.append(Reason("target_cpu_mismatch", message))
        row.update(
            _compare(child_t, host_child, host_parent, y),
            accuracy_drop=drop,
            parent_on_target=_parent_on_target(parent_t, host_parent[parent_picked]),
            target={k: info.get(k) for k in ("machine", "cpu", "onnxruntime_version", "providers")},
            cpu_matches_profile=not cpu_disagrees,
            wall_s=seconds,
            model_seconds=info.get("seconds", {}),
            timing_note="wall time of the check only; QEMU timings say nothing about the board"
            if key[0] == "qemu"
            else "",
        )
        result.classes[name] = IsaClassResult(True, "rejected" if reasons else "accepted", reasons, row)
    result.wall_s = time.perf_counter() - start
    return result


def _run_target(
    key: tuple[str, str],
    child_onnx: Path,
    parent_onnx: Path,
    x: np.ndarray,
    parent_picked: np.ndarray,
    config: IsaCheckConfig,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray, float]:
    """The child on every image and the parent on its subsample, on one target (runner, QEMU CPU)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgecompress-isa-") as tmp:
        job = Path(tmp)
        shutil.copyfile(child_onnx, job / "child.onnx")
        shutil.copyfile(parent_onnx, job / "parent.onnx")
        np.save(job / "x.npy", np.ascontiguousarray(x, dtype=np.float32))
        np.save(job / "x-parent.npy", np.ascontiguousarray(x[parent_picked], dtype=np.float32))
        spec = {
            "models": {"child": "child.onnx", "parent": "parent.onnx"},
            "inputs": {"child": "x.npy", "parent": "x-parent.npy"},
            "threads": config.isa_threads,
            "batch_size": 256,
        }
        (job / "job.json").write_text(json.dumps(spec))
        info = run_on_isa(job, key[0], config, key[1])
        child_t, parent_t = np.load(job / "logits-child.npy"), np.load(job / "logits-parent.npy")
    return info, child_t, parent_t, time.perf_counter() - t0


def isa_check_step(
    parent_dir: Path,
    child_dir: Path,
    dataset_path: Path,
    config: IsaCheckConfig,
    results_path: Path,
    report_path: Path | None = None,
) -> dict[str, Any]:
    """The check on model packages and a dataset file; writes the result JSON (and a Markdown report)."""
    from edgecompress.data import decision_range, load_dataset
    from edgecompress.export import load_model_package

    config.validate()
    dataset = load_dataset(Path(dataset_path))
    split = config.gate.decision_split
    n = dataset.size(split)
    if n == 0:
        raise ConfigError(f"the dataset {dataset.name!r} has no {split!r} split to check on")
    part = decision_range(split, n)  # the images the gate decides on, not the selection part
    step = subsample(len(part), config.isa_max_samples)
    # only the every-k-th images are decoded (a streamed dataset is never read whole)
    picked = np.arange(part.start, n, step)
    check_decision_data(
        dataset.labels(split)[picked], config.gate, f"isa-check on {split}[{part.start}::{step}]"
    )
    x, y = dataset.take(split, picked), dataset.labels(split)[picked]
    parent, child = load_model_package(Path(parent_dir)), load_model_package(Path(child_dir))
    result = isa_check(parent.onnx_path, child.onnx_path, x, y, config, split_size=len(part))
    result.extra.update(subsample_step=step, dataset=dataset.name)
    out = result.to_json()
    write_json(Path(results_path), out)
    if report_path is not None:
        write_report(report_path, isa_markdown(out))
    return out


def isa_markdown(result: dict[str, Any]) -> str:
    every = result.get("subsample_step", 1)
    sample = f"{result['samples']} of {result['split_size']} {result['decision_split']} images" + (
        f" (every {every}th)" if every > 1 else ""
    )
    lines = [
        f"# Target-ISA check (build machine: {result['host_isa']})",
        "",
        f"Rule: {result['rule']}.",
        "",
        f"Images: {sample}. Wall time of the check: {result['wall_s']:.1f} s.",
        "",
    ]
    if "host_numerics" in result:
        numerics = result["host_numerics"]
        lines += [f"This machine's accuracy: {numerics['numerics']} ({numerics['why']}).", ""]
    if "parent_on_target_samples" in result:
        lines += [
            f"The float parent also ran on the target on {result['parent_on_target_samples']} of these images, "
            "to confirm float agrees across ISAs; the rule uses its predictions on this machine.",
            "",
        ]
    rows = []
    for cls, r in result["classes"].items():
        if not r.get("checked"):
            rows.append([cls, r.get("isa", "?"), "not checked", r.get("why_not", ""), "", "", "", "", ""])
            continue
        how = f"QEMU {r['qemu_cpu']}" if r.get("runner") == "qemu" else "native"
        rows.append(
            [
                cls,
                f"{r['isa']} ({how})",
                r["verdict"],
                "; ".join(r["reasons"]) or "within the rule",
                f"{r['accuracy'] * 100:.2f}",
                f"{r['host_accuracy'] * 100:.2f}",
                f"{r['agreement_with_host'] * 100:.2f}",
                f"{r['max_abs_logit_diff_host']:.3g}",
                f"{r['parent_on_target']['agreement_with_host'] * 100:.2f}",
            ]
        )
    lines.append(
        markdown_table(
            [
                "device class",
                "ISA",
                "verdict",
                "why",
                "target acc %",
                f"{result['host_isa']} acc %",
                "top-1 agreement %",
                "max abs Δlogit",
                "parent agreement %",
            ],
            rows,
        )
    )
    return "\n".join(lines) + "\n"
