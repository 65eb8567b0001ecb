"""Latency measurement on this machine: `Measurement` says where and how long one latency measurement
runs, measures a model in a pinned child process (an emulated device class, labelled emulated;
`runtime.executor.benchmark_locally`), alternates two models in rounds and compares them with the one
speed-up interval every decision uses (`edgecompress.stats`).

The runtime never reaches a farm itself (the farm is a service above it): a measurement with
`farm_url` set is the edge technique's `edgecompress.edge.Measurement`, which overrides `on_farm`
with the farm's client. Same benchmark runner, same result schema, either way.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress.errors import ConfigError, PairingUnsupported
from edgecompress.runtime.devices import DEFAULT_DEVICE_CLASS, emulated_device_class
from edgecompress.runtime.executor import benchmark_locally
from edgecompress.runtime.runner import BenchmarkSettings
from edgecompress.stats import MIN_LATENCY_ROUNDS, ratio_interval


@dataclass
class Measurement:
    """Where and how long one latency measurement runs."""

    device_class: str = field(
        default=DEFAULT_DEVICE_CLASS, metadata={"help": "device class whose latency is measured"}
    )
    farm_url: str | None = field(
        default=None,
        metadata={"help": "device farm controller URL (empty: emulate the class on this machine)"},
    )
    bench_min_runs: int = field(
        default=BenchmarkSettings.min_runs, metadata={"help": "minimum timed runs per measurement"}
    )
    bench_min_duration_s: float = field(
        default=BenchmarkSettings.min_duration_s, metadata={"help": "minimum seconds per measurement"}
    )
    bench_warmup_runs: int = field(
        default=BenchmarkSettings.warmup_runs, metadata={"help": "untimed runs before timing"}
    )

    def validate(self) -> None:
        if self.bench_min_runs < 1 or not self.bench_min_duration_s >= 0 or self.bench_warmup_runs < 0:
            raise ConfigError(
                f"bench_min_runs must be ≥ 1, bench_min_duration_s ≥ 0 and bench_warmup_runs ≥ 0, got "
                f"{self.bench_min_runs}, {self.bench_min_duration_s}, {self.bench_warmup_runs}"
            )
        if not self.farm_url:
            emulated_device_class(self.device_class)  # unknown class -> ConfigError before any work

    def settings(self) -> dict[str, Any]:
        return {
            "min_runs": self.bench_min_runs,
            "min_duration_s": self.bench_min_duration_s,
            "warmup_runs": self.bench_warmup_runs,
        }

    @classmethod
    def from_settings(cls, device_class: str, farm_url: str | None, settings: dict[str, Any]) -> Measurement:
        """From runner settings (`min_runs`, `min_duration_s`, `warmup_runs`; missing ones default)."""
        defaults = cls()
        return cls(
            device_class,
            farm_url or None,
            settings.get("min_runs", defaults.bench_min_runs),
            settings.get("min_duration_s", defaults.bench_min_duration_s),
            settings.get("warmup_runs", defaults.bench_warmup_runs),
        )

    def latency(self, onnx_path: Path) -> dict[str, Any]:
        """p50/p90 (ms), whether the device was emulated, and the raw samples."""
        if self.farm_url:
            r = self.on_farm(Path(onnx_path))
        else:
            r = benchmark_locally(
                Path(onnx_path), self.device_class, self.settings(), start_method="forkserver"
            )
        return _latency_fields(r)

    def on_farm(self, onnx_path: Path) -> dict[str, Any]:
        """One benchmark of `onnx_path` on `farm_url`: the runtime has no farm client (see the module)."""
        raise ConfigError(
            f"farm_url={self.farm_url!r}: edgecompress.runtime.measure.Measurement measures on this machine "
            "only; measure on a farm with edgecompress.edge.Measurement"
        )

    def paired(self, first: Path, second: Path) -> dict[str, Any]:
        """Both models in one benchmark process, alternating in short blocks (`runner.benchmark_paired`):
        here, or as one paired job on `farm_url`."""
        if self.farm_url:
            return self.pair_on_farm(Path(first), Path(second))
        return benchmark_locally(
            Path(first),
            self.device_class,
            self.settings(),
            start_method="forkserver",
            paired_with=Path(second),
        )

    def pair_on_farm(self, first: Path, second: Path) -> dict[str, Any]:
        """A paired benchmark on `farm_url`: the runtime has no farm client (see the module)."""
        return self.on_farm(Path(first))  # raises: measured here only

    def interleaved(self, first: Path, second: Path, rounds: int) -> dict[str, Any]:
        """Rounds on the same device, each model's p50 per round and the round's ratio (first/second),
        for a paired comparison; the order flips every round, so neither model always runs first.

        A round is one process running both models in alternating short blocks (`paired`, here or as
        one farm job): the round's ratio then comes from the same moments of the device, and a phase of
        its speed moves both models. Where a farm does not run paired jobs (a controller or agent older
        than them), the rounds from then on are one job per model, their ratio is that of their p50s,
        and `pairing` says how many rounds were paired."""
        out: dict[str, Any] = {"parent_ms": [], "child_ms": [], "ratios": [], "emulated": None}
        keys = ("parent_ms", "child_ms")
        method, unpaired_why, paired = "", "", 0
        for i in range(rounds):
            order = ((keys[0], Path(first)), (keys[1], Path(second)))
            order = order if i % 2 == 0 else order[::-1]
            pair: dict[str, Any] = {}
            if not unpaired_why:
                try:
                    pair = self.paired(order[0][1], order[1][1])
                except PairingUnsupported as exc:
                    unpaired_why = str(exc)
            if len(pair.get("results") or []) == 2:
                measured = [_latency_fields(r) for r in pair["results"]]
                method, ratio = pair["pairing"]["method"], pair["pairing"]["ratio"]
                paired += 1
            else:
                unpaired_why = unpaired_why or f"the {self.device_class} agent ran one model of a paired job"
                measured = [self.latency(path) for _, path in order]
                ratio = measured[0]["p50_ms"] / measured[1]["p50_ms"]
            out["ratios"].append(ratio if i % 2 == 0 else 1.0 / ratio)
            for (key, _), r in zip(order, measured, strict=True):
                out[key].append(r["p50_ms"])
                out["emulated"] = r["emulated"]
        out["paired_rounds"] = paired
        out["pairing"] = (
            method
            if not unpaired_why
            else f"{paired} of {rounds} rounds paired, the rest one benchmark per model, their ratio that of "
            f"their p50s ({unpaired_why})"
        )
        return out

    def compare(
        self, parent: Path, child: Path, rounds: int = MIN_LATENCY_ROUNDS, confidence: float = 0.95
    ) -> dict[str, Any]:
        """Parent vs child in interleaved rounds, the one speed-up interval every decision uses
        (`edgecompress.stats`), and whether this class's timings mean anything at all (not under QEMU)."""
        from edgecompress.runtime.devices import timing_note

        r = self.interleaved(parent, child, rounds)
        speed = ratio_interval(r["ratios"], confidence)
        return {
            **speed,
            "parent_p50_ms": float(np.median(r["parent_ms"])),
            "child_p50_ms": float(np.median(r["child_ms"])),
            "latency_rounds": r,
            "emulated": r["emulated"],
            "device_class": self.device_class,
            "timing_meaningful": timing_note(self.device_class) is None,
        }

    def module_latency(self, model: Any, input_shape: tuple[int, ...]) -> dict[str, Any]:
        """Latency of a torch module's ONNX export (batch 1): float latency does not depend on the
        weights, so an untrained or freshly pruned module is measured as it is."""
        from edgecompress.export import export_onnx

        with tempfile.TemporaryDirectory(prefix="edgecompress-measure-") as tmp:
            path = Path(tmp) / "model.onnx"
            export_onnx(model, tuple(input_shape), path)
            return self.latency(path)

    def modules_interleaved(
        self, first: Any, second: Any, input_shape: tuple[int, ...], rounds: int
    ) -> dict[str, Any]:
        """`interleaved` for two torch modules, exported once each (batch 1)."""
        from edgecompress.export import export_onnx

        with tempfile.TemporaryDirectory(prefix="edgecompress-measure-") as tmp:
            paths = [Path(tmp) / "first.onnx", Path(tmp) / "second.onnx"]
            for module, path in zip((first, second), paths, strict=True):
                export_onnx(module, tuple(input_shape), path)
            return self.interleaved(paths[0], paths[1], rounds)


def _latency_fields(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "p50_ms": result["latency_ms"]["p50"],
        "p90_ms": result["latency_ms"]["p90"],
        "emulated": bool(result.get("emulated")),
        "samples_ms": result.get("samples_ms", []),
    }
