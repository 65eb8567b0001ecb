"""Shared pieces of the benchmarks: machine facts, the Fashion-MNIST baseline (teacher), reports.

The baseline CNN is trained once and cached under benchmarks/.cache (ignored by git), keyed by its
configuration, so that the compression, quantization and NAS benchmarks start from the same
float model. A clean clone trains it first: 10 epochs on 55k images (about 30 min on 2 idle cores,
55 min sharing them with other work, measured 2026-11-28); its accuracy is in each benchmark's
results.json, not here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CACHE = Path(__file__).resolve().parent / ".cache"

BASELINE_SPEC = {"family": "cnn", "kwargs": {"widths": [32, 64, 128], "depths": [2, 2, 2]}}


def git_commit(directory: Path) -> str:
    """The checkout's short commit, with `-dirty` when tracked files differ from it: a report must not
    claim a commit whose code it did not run. Empty outside a git checkout."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=directory, timeout=5
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        if commit and git("status", "--porcelain", "--untracked-files=no"):
            commit += "-dirty"
    except OSError:
        return ""
    return commit


def machine_info() -> dict[str, Any]:
    import onnxruntime
    import torch

    from edgecompress.quantize import cpu_needs_reduce_range
    from edgecompress.runtime.facts import cpu_model

    commit = git_commit(Path(__file__).parent)
    return {
        "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
        "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "git_commit": commit,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_at_start": os.getloadavg(),
        # INT8 speed and the reduce_range default depend on it (VNNI dot products vs saturating vpmaddubsw)
        "int8_reduce_range_needed": cpu_needs_reduce_range(),
    }  # fmt: skip


def fashion_mnist_dataset_artifact() -> Path:
    """The Dataset artifact for the full Fashion-MNIST (60k/10k), cached."""
    from edgecompress.data import load_fashion_mnist, save_dataset

    path = CACHE / "fashion-mnist.npz"
    if not path.exists():
        save_dataset(load_fashion_mnist(), path)
    return path


def cache_key(*parts: Any) -> str:
    """12 hex digits naming a cached trained model by what decides its weights. A TrainConfig's
    `device` is left out where it is the CPU (the default, and what every cached model was trained
    on), so that adding the setting kept the caches; a GPU-trained model gets a key of its own."""

    def identity(part: Any) -> Any:
        if hasattr(part, "__dataclass_fields__"):
            fields = asdict(part)
            if fields.get("device") == "cpu":
                del fields["device"]
            return fields
        return part

    text = json.dumps([identity(p) for p in parts], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _baseline_config(epochs: int, seed: int, spec: dict[str, Any] | None) -> tuple[dict[str, Any], Any, Path]:
    from edgecompress.train import TrainConfig

    spec = spec or BASELINE_SPEC
    config = TrainConfig(epochs=epochs, batch_size=128, lr=3e-3, augment=True, seed=seed)
    return spec, config, CACHE / f"baseline-{cache_key(spec, config)}"


def baseline_cached(epochs: int = 10, seed: int = 0, spec: dict[str, Any] | None = None) -> Path | None:
    """The cached baseline's directory, or None where it has not been trained (a full benchmark run
    then stops instead of silently training for an hour)."""
    out = _baseline_config(epochs, seed, spec)[2]
    return out if (out / "model.json").exists() else None


def baseline_model(epochs: int = 10, seed: int = 0, spec: dict[str, Any] | None = None) -> Path:
    """Model artifact directory of the float baseline CNN trained on Fashion-MNIST (cached)."""
    from edgecompress.step import Lineage
    from edgecompress.train import train_step

    spec, config, out = _baseline_config(epochs, seed, spec)
    if not (out / "model.json").exists():
        train_step(fashion_mnist_dataset_artifact(), spec, out, config, Lineage(enabled=False))
    return out


def onnx_sha256(model_dir: Path) -> str:
    """sha256 of a Model artifact's ONNX file: the identity of "the baseline" a results.json compares with."""
    from edgecompress.export import ONNX_FILE

    return hashlib.sha256((Path(model_dir) / ONNX_FILE).read_bytes()).hexdigest()


def baseline_record(model_dir: Path) -> dict[str, Any]:
    """What a results.json records about the baseline it compares with: its ONNX sha256 and cache folder."""
    return {"baseline_sha256": onnx_sha256(model_dir), "baseline_dir": Path(model_dir).name}


def baseline_line(results: dict[str, Any]) -> str:
    """The report's sentence naming the baseline a results.json compares with."""
    if results.get("baseline_sha256"):
        return f"Baseline: ONNX sha256 `{results['baseline_sha256']}`."
    return f"Baseline ONNX sha256: not recorded ({results.get('baseline_sha256_note', 'no reason recorded')})"


def benchmark_parser(doc: str | None, quick_help: str) -> argparse.ArgumentParser:
    """The options every benchmark has: `--quick` (a smoke test, never a result) and `--out`."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    # argparse %-formats help strings: a literal "50 %" must reach it as "50 %%"
    quick = quick_help.replace("%", "%%")
    parser.add_argument("--quick", action="store_true", help=f"{quick} (a smoke test, not a result)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: this benchmark's folder; --quick: required)",
    )
    return parser


def run_or_render(
    doc: str | None,
    quick_help: str,
    default_out: Path,
    run: Callable[[bool], dict[str, Any]],
    render: Callable[[dict], str],
    plot: Callable[[dict], bytes],
    plot_name: str = "results.png",
    argv: list[str] | None = None,
) -> None:
    """The command line of a benchmark with one dated report: run it (`--quick`: a smoke test into
    `--out`, never over the committed report) or `--render` its report again from results.json."""
    parser = benchmark_parser(doc, quick_help)
    parser.add_argument("--render", action="store_true", help=f"re-render results.md and {plot_name}")
    a = parser.parse_args(argv)
    if a.quick and a.out is None:
        parser.error("--quick needs --out (a smoke test never overwrites the committed report)")
    out = a.out or default_out
    results = json.loads((out / "results.json").read_text()) if a.render else run(a.quick)
    write_report(results, out, render, plot, plot_name)


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, default=float) + "\n")


def write_report(
    results: dict[str, Any],
    out: Path,
    render: Callable[[dict], str],
    plot: Callable[[dict], bytes],
    plot_name: str,
) -> None:
    """results.json, then results.md and the plot rendered from what was written (never from the
    in-memory dict: the committed report must be what its JSON renders to)."""
    from edgecompress.io import atomic_path

    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "results.json") as tmp:
        write_json(tmp, results)
    stored = json.loads((out / "results.json").read_text())
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(render(stored))
    with atomic_path(out / plot_name) as tmp:
        tmp.write_bytes(plot(stored))


def mean_interval(values: list[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean over seeds with its Student-t interval: a headline figure is never one run.

    With one value there is no interval: `low` and `high` are None, `n` is 1, and `verdict` can only
    say "undecided" (a zero-width "interval" would claim a certainty one run does not have)."""
    from scipy import stats

    data = [float(v) for v in values]
    if not data:
        raise ValueError("mean_interval needs at least one value")
    mean = sum(data) / len(data)
    if len(data) == 1:
        return {"mean": mean, "low": None, "high": None, "n": 1, "values": data, "confidence": confidence}
    sem = stats.sem(data)
    half = float(stats.t.ppf(0.5 + confidence / 2, len(data) - 1) * sem) if sem > 0 else 0.0
    return {
        "mean": mean, "low": mean - half, "high": mean + half, "n": len(data), "values": data,
        "confidence": confidence,
    }  # fmt: skip


def exact_value(value: float) -> dict[str, Any]:
    """A figure with no sampling noise (a MACs ratio counted from the graph, a count of lost jobs), in
    `mean_interval`'s shape: its interval is the value itself, and `exact` says why that is honest."""
    return {"mean": float(value), "low": float(value), "high": float(value), "n": None, "exact": True}


VERDICTS = ("met", "missed", "undecided")

VERDICT_RULE = (
    "**met**: the whole 95 % interval clears the threshold; **missed**: the whole interval is on the wrong "
    "side; **undecided**: the interval crosses the threshold, or there is none (n=1). Undecided is never "
    "counted as met."
)


def has_interval(interval: dict[str, Any]) -> bool:
    """Whether a figure has an interval to decide on: n ≥ 2 (a rate over ≥ 2 trials, a mean over ≥ 2
    seeds or rounds) or an exact value. A committed n = 1 row stored `low == high == mean`: that is
    read as no interval."""
    if interval.get("exact"):
        return True
    n = interval.get("n")
    return interval.get("low") is not None and interval.get("high") is not None and (n is None or n >= 2)


def verdict(interval: dict[str, Any], threshold: float, higher_is_better: bool, strict: bool = False) -> str:
    """The one verdict rule of every benchmark: "met" when the whole interval clears the threshold,
    "missed" when the whole interval is on the wrong side, "undecided" when it crosses (or there is no
    interval: n = 1). The mean never decides. `strict`: the target is "more than" / "less than" the
    threshold, so a bound equal to it does not clear it."""
    if not has_interval(interval):
        return "undecided"
    low, high = float(interval["low"]), float(interval["high"])

    def clears(value: float) -> bool:
        if higher_is_better:
            return value > threshold if strict else value >= threshold
        return value < threshold if strict else value <= threshold

    worst, best = (low, high) if higher_is_better else (high, low)
    if clears(worst):
        return "met"
    if not clears(best):
        return "missed"
    return "undecided"


def error_bar(interval: dict[str, Any]) -> list[list[float]]:
    """Matplotlib's asymmetric error ([[below], [above]]) of an interval; none (0) without one (n=1)."""
    if not has_interval(interval):
        return [[0.0], [0.0]]
    return [[interval["mean"] - interval["low"]], [interval["high"] - interval["mean"]]]


def all_of(verdicts: list[str]) -> str:
    """A target made of parts: met when every part is met, missed when one is missed, else undecided."""
    return "missed" if "missed" in verdicts else "met" if all(v == "met" for v in verdicts) else "undecided"


def any_of(verdicts: list[str]) -> str:
    """A target met in any of several ways: met when one is, missed when every one is, else undecided."""
    return "met" if "met" in verdicts else "missed" if all(v == "missed" for v in verdicts) else "undecided"


def rotating_rounds(names: list[str], rounds: int, measure: Callable[[str], float]) -> dict[str, list[float]]:
    """Each name's figure per round; every round measures every name once, in an order that rotates and
    flips from round to round, so that no model always runs first, or right after the same one, and
    load on a shared machine hits all alike."""
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order if r % 2 == 0 else order[::-1]:
            out[name].append(measure(name))
    return out


def format_interval(interval: dict[str, Any], scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
    """`mean [low, high]` as a report cell, e.g. `-0.32 [-0.55, -0.09] pt (n=3)`; an n = 1 figure is
    `mean unit (n=1)` with no interval, an exact one `value unit (exact)`."""
    f = f"{{:.{digits}f}}"
    mean = f.format(interval["mean"] * scale)
    if interval.get("exact"):
        return f"{mean}{unit} (exact)"
    if not has_interval(interval):
        return f"{mean}{unit} (n={interval.get('n', 1)})"
    narrow = narrower_than_shown(interval, scale, digits)
    if narrow:
        return f"{mean}{unit} ({narrow}, n={interval['n']})"
    cell = f"{mean} [{f.format(interval['low'] * scale)}, {f.format(interval['high'] * scale)}]"
    return f"{cell}{unit} (n={interval['n']})"


def narrower_than_shown(interval: dict[str, Any], scale: float = 1.0, digits: int = 2) -> str:
    """Where an interval is narrower than the digits shown (`3.72 [3.72, 3.72]` would read as zero
    width), what to print instead of the bounds; empty where the bounds differ at those digits."""
    f = f"{{:.{digits}f}}"
    if f.format(interval["low"] * scale) != f.format(interval["high"] * scale):
        return ""
    if interval["low"] == interval["high"]:
        return "identical values"
    return f"95 % interval within ±{0.5 * 10**-digits:.{digits + 1}f}"


def proportion_interval(successes: int, trials: int, confidence: float = 0.95) -> dict[str, Any]:
    """A rate over independent trials with its exact (Clopper-Pearson) interval, in `mean_interval`'s
    shape so that `verdict` and `format_interval` apply: 0 of 20 is not "a rate of 0", it is [0, 0.17]."""
    from scipy.stats import binomtest

    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(f"a rate needs 0 ≤ successes ≤ trials and trials ≥ 1, got {successes}/{trials}")
    ci = binomtest(successes, trials).proportion_ci(confidence, method="exact")
    return {
        "mean": successes / trials, "low": float(ci.low), "high": float(ci.high), "n": trials,
        "successes": successes, "confidence": confidence,
    }  # fmt: skip
