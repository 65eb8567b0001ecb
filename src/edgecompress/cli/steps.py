"""Single steps from a terminal: the same library calls the components make (quantize and autotune
are in cli/quant.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgecompress.data import DatasetSource
from edgecompress.edge import EdgeBenchmarkConfig
from edgecompress.evaluate import EvaluateConfig
from edgecompress.params import add_options, from_args
from edgecompress.step import Lineage
from edgecompress.train import TrainConfig
from edgecompress.zoo import ModelChoice


def _lineage(args: argparse.Namespace) -> Lineage:
    return from_args(Lineage, args)


def _common(p: argparse.ArgumentParser) -> None:
    """--experiment and --track/--no-track: a standalone run has no pipeline run id or name."""
    add_options(p, Lineage, exclude=("pipeline_run_id", "pipeline_name"))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dataset",
        help="write a Dataset artifact (.npz) from a source",
        description="Resolve digits, fashion-mnist, a .npz path or an s3:// URI into a Dataset artifact.",
    )
    p.add_argument("source", help="digits, fashion-mnist, a .npz path or an s3:// URI")
    add_options(p, DatasetSource, exclude=("source",))
    p.add_argument("--output", type=Path, required=True)
    _common(p)
    p.set_defaults(func=cmd_dataset)

    p = sub.add_parser(
        "train", help="train a model and export it to ONNX", description="Train a zoo or user model."
    )
    p.add_argument(
        "--dataset", type=Path, required=True, help="Dataset artifact (.npz from `edgecompress dataset`)"
    )
    add_options(p, ModelChoice)
    p.add_argument("--output", type=Path, required=True, help="Model artifact directory to write")
    add_options(p, TrainConfig)
    _common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate",
        help="accuracy, size, MACs and latency of a Model artifact",
        description="Evaluate a Model artifact (or a bare .onnx file) on a Dataset artifact.",
    )
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--dataset", type=Path, required=True)
    add_options(p, EvaluateConfig)
    p.add_argument("--output", type=Path, required=True, help="results JSON")
    p.add_argument("--report", type=Path, help="HTML report")
    _common(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "benchmark",
        help="benchmark a model on device classes (farm or local emulation)",
        description="Edge-benchmark a Model artifact (or a bare .onnx file).",
    )
    p.add_argument("--model", type=Path, required=True)
    add_options(p, EdgeBenchmarkConfig)
    p.add_argument("--output", type=Path, required=True, help="results JSON")
    p.add_argument("--report", type=Path, help="HTML report")
    _common(p)
    p.set_defaults(func=cmd_benchmark)


def _print(data) -> int:
    print(json.dumps(data, indent=2, default=str)[:20000])
    return 0


def cmd_dataset(a: argparse.Namespace) -> int:
    from edgecompress.train import load_dataset_step

    src = from_args(DatasetSource, a)
    return _print(load_dataset_step(src.source, a.output, src.seed, _lineage(a)))


def cmd_train(a: argparse.Namespace) -> int:
    from edgecompress.train import train_step

    spec = from_args(ModelChoice, a).model_spec
    info = train_step(a.dataset, spec, a.output, from_args(TrainConfig, a), _lineage(a))
    return _print(
        {k: info.get(k) for k in ("technique", "params", "onnx_bytes", "mlflow_model_id", "history")}
    )


def cmd_evaluate(a: argparse.Namespace) -> int:
    from edgecompress.evaluate import evaluate_step

    split = from_args(EvaluateConfig, a).split
    out = evaluate_step(a.model, a.dataset, a.output, a.report, split, _lineage(a))
    return _print({k: out[k] for k in ("accuracy", "samples", "stats", "latency_ms")})


def cmd_benchmark(a: argparse.Namespace) -> int:
    from edgecompress.edge import edge_benchmark_step

    out = edge_benchmark_step(a.model, from_args(EdgeBenchmarkConfig, a), a.output, a.report, _lineage(a))
    return _print(
        {c: {"emulated": r["emulated"], "latency_ms": r["latency_ms"]} for c, r in out["results"].items()}
    )
