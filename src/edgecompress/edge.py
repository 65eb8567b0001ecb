"""Edge benchmark: run one model on each requested device class and collect results per class.

Every path runs the same benchmark runner (`runtime.runner.run_isolated`: a child process with a
wall-clock timeout, a memory limit and CPU affinity) and returns the same result schema:

- `farm_url` set: the device farm controller dispatches one job per class to agents on the devices
  (`edgecompress.farm.client.benchmark_on_farm`).
- `farm_url` empty: a private farm on loopback (controller + one emulated agent per class,
  `edgecompress.farm.local.local_farm`) does the same with emulated classes, labelled `emulated`.
- `farm_url="node"`: this process already runs on the device (a pipeline task pinned to a
  Kubernetes node by label, see docs/farm.md); benchmark here, as a real device of that class.

The agents' executors (`benchmark_locally`, `benchmark_on_this_device`, `run_on_device`) live in
`edgecompress.runtime.executor`, importable without torch (the arm64 agent image has none).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecompress import lineage
from edgecompress.errors import BenchmarkError
from edgecompress.export import load_model_package
from edgecompress.io import write_json
from edgecompress.reports import html_page, html_table, latency_png, png_img_tag
from edgecompress.runtime import measure
from edgecompress.runtime.devices import (
    DEFAULT_DEVICE_CLASSES,
    emulated_device_class,
    parse_device_classes,
)
from edgecompress.runtime.executor import (  # noqa: F401 (re-exported: edge is their public home)
    DEFAULT_MEMORY_LIMIT_BYTES,
    benchmark_locally,
    benchmark_on_this_device,
    default_providers,
    is_jetson,
    run_on_device,
)
from edgecompress.step import Lineage, write_report

log = logging.getLogger(__name__)

NODE_MODE = "node"


class Measurement(measure.Measurement):
    """The one latency path every technique that checks latency uses (quantize and autotune against
    the parent, prune budgets, NAS candidates, the gate, drift): `runtime.measure.Measurement` (the
    settings, local measurement on an emulated class, interleaved rounds, the speed-up interval), and
    on a device farm when `farm_url` is set (`edge_benchmark`: the farm's client, or this device in
    node mode)."""

    def on_farm(self, onnx_path: Path) -> dict[str, Any]:
        return edge_benchmark(Path(onnx_path), [self.device_class], self.settings(), self.farm_url)[
            self.device_class
        ]

    def pair_on_farm(self, first: Path, second: Path) -> dict[str, Any]:
        return edge_benchmark(
            Path(first), [self.device_class], self.settings(), self.farm_url, paired_with=Path(second)
        )[self.device_class]


@dataclass
class EdgeBenchmarkConfig:
    """Which device classes a model is benchmarked on, and how long."""

    device_classes: list[str] = field(
        default_factory=lambda: list(DEFAULT_DEVICE_CLASSES),
        metadata={"help": "device classes, comma-separated"},
    )
    measurement: Measurement = field(
        default_factory=Measurement, metadata={"flatten": True, "exclude": ("device_class",)}
    )
    timeout_s: float = field(default=600.0, metadata={"help": "give up on a device class after this long"})

    def settings(self) -> dict[str, Any]:
        return self.measurement.settings()


def edge_benchmark(
    model_path: Path,
    device_classes: str | list[str],
    settings: dict[str, Any] | None = None,
    farm_url: str | None = None,
    timeout_s: float = 600.0,
    paired_with: Path | None = None,
) -> dict[str, dict[str, Any]]:
    """One result per device class; raises BenchmarkError naming the class that failed. With
    `paired_with`, each class's result is a paired benchmark of both models (`runner.benchmark_paired`)."""
    from edgecompress.farm.client import benchmark_on_farm

    classes = parse_device_classes(device_classes)
    if farm_url == NODE_MODE:
        results = {}
        for name in classes:
            try:
                results[name] = benchmark_on_this_device(
                    Path(model_path),
                    name,
                    settings,
                    timeout_s,
                    DEFAULT_MEMORY_LIMIT_BYTES,
                    backend="node",
                    paired_with=paired_with,
                )
            except BenchmarkError as exc:
                raise BenchmarkError(f"device class {name} (node mode): {exc}") from exc
        return results
    if farm_url:
        return benchmark_on_farm(
            farm_url, Path(model_path), classes, settings or {}, timeout_s=timeout_s, paired_with=paired_with
        )
    from edgecompress.farm.local import local_farm

    for name in classes:  # validate all names before starting anything
        emulated_device_class(name)
    with local_farm(classes) as farm:
        return benchmark_on_farm(
            farm.url,
            Path(model_path),
            classes,
            settings or {},
            timeout_s=timeout_s,
            token=farm.client_token,
            paired_with=paired_with,
        )


# --- the edge-benchmark step ----------------------------------------------------------------------


@dataclass
class ClassBenchmark:
    """One device class's benchmark (the runner's result schema): what reports and lineage read, typed;
    everything else the runner and the farm record (settings, providers, thermal state, agent, ...)
    in `extra`, kept as it came."""

    latency_ms: dict[str, float]  # p50, p90, p99, mean, stdev, ...
    runs: int
    load_ms: float
    peak_rss_bytes: int
    samples_ms: list[float]
    emulated: bool | None = None  # None: the result did not say (reports read it as a real device)
    provider_used: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    REQUIRED = ("latency_ms", "runs", "load_ms", "peak_rss_bytes", "samples_ms")
    OPTIONAL = ("emulated", "provider_used")

    def to_json(self) -> dict[str, Any]:
        given = {k: getattr(self, k) for k in self.OPTIONAL if getattr(self, k) is not None}
        return {**self.extra, **{k: getattr(self, k) for k in self.REQUIRED}, **given}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClassBenchmark:
        missing = [k for k in cls.REQUIRED if k not in data]
        if missing:
            raise BenchmarkError(f"a benchmark result lacks {missing} (it has {sorted(data)})")
        typed = (*cls.REQUIRED, *cls.OPTIONAL)
        return cls(**{k: data.get(k) for k in typed}, extra={k: v for k, v in data.items() if k not in typed})


@dataclass
class EdgeBenchmarkResult:
    """The edge-benchmark step's result (its `results` artifact): the model's info and one benchmark
    per device class."""

    model: dict[str, Any]
    results: dict[str, ClassBenchmark]

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "results": {c: r.to_json() for c, r in self.results.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EdgeBenchmarkResult:
        return cls(data["model"], {c: ClassBenchmark.from_json(r) for c, r in data["results"].items()})


def edge_benchmark_step(
    model_dir: Path,
    config: EdgeBenchmarkConfig,
    results_path: Path,
    report_path: Path | None = None,
    lineage_ctx: Lineage | None = None,
) -> dict[str, Any]:
    ctx = lineage_ctx or Lineage()
    classes = parse_device_classes(config.device_classes)
    farm_url = config.measurement.farm_url
    ctx.check()
    package = load_model_package(Path(model_dir))
    model_id = package.info.get("mlflow_model_id")
    with ctx.task(
        "edge-benchmark", {"model_id": model_id, "device_classes": classes, "farm_url": farm_url or "local"}
    ):
        results = edge_benchmark(package.onnx_path, classes, config.settings(), farm_url, config.timeout_s)
        result = EdgeBenchmarkResult(
            package.info, {c: ClassBenchmark.from_json(r) for c, r in results.items()}
        )
        out = result.to_json()
        if report_path is not None:
            write_report(report_path, benchmark_report(result))
        write_json(Path(results_path), out)
        if ctx.enabled and model_id:
            lineage.log_benchmarks(model_id, out["results"])
    return out


def benchmark_summary(out: dict[str, Any]) -> list[dict[str, Any]]:
    """Per device class of an edge-benchmark step's output, the small record a fan-out task passes on
    as a parameter (`dsl.Collected`): latency quantiles, runs, provider, emulated; never the samples."""
    return [
        {
            "device_class": cls,
            "model_sha256": out["model"].get("onnx_sha256"),
            "emulated": bool(r.get("emulated")),
            "provider_used": r.get("provider_used"),
            **{f"{q}_ms": r["latency_ms"][q] for q in ("p50", "p90", "p99")},
            "runs": r["runs"],
        }
        for cls, r in out["results"].items()
    ]


def benchmark_report(result: EdgeBenchmarkResult) -> str:
    rows = [
        [
            cls,
            "emulated" if r.emulated else "real",
            r.provider_used,
            r.latency_ms["p50"],
            r.latency_ms["p90"],
            r.latency_ms["p99"],
            r.runs,
            r.load_ms,
            r.peak_rss_bytes,
        ]
        for cls, r in result.results.items()
    ]
    table = html_table(
        [
            "device class",
            "device",
            "provider",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "runs",
            "load ms",
            "peak RSS bytes",
        ],
        rows,
    )
    plot = png_img_tag(
        latency_png({c: r.samples_ms for c, r in result.results.items()}, "latency per device class"),
        "latency distribution",
    )
    note = "<p>Emulated device classes run on this machine with the class's thread cap and CPU affinity; they are not real board figures.</p>"
    return html_page(
        f"Edge benchmark: {result.model.get('technique')} model",
        [("Results", table + note), ("Latency", plot)],
    )
