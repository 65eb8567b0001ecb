"""Single steps from a terminal: the same library calls the components make (quantize and autotune
are in cli/quant.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgecompress.step import Lineage


def _lineage(args: argparse.Namespace) -> Lineage:
    return Lineage(experiment=args.experiment, enabled=not args.no_track)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", default="edgecompress", help="MLflow experiment")
    p.add_argument("--no-track", action="store_true", help="do not record lineage in MLflow")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dataset",
        help="write a Dataset artifact (.npz) from a source",
        description="Resolve digits, fashion-mnist, a .npz path or an s3:// URI into a Dataset artifact.",
    )
    p.add_argument("source")
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    _common(p)
    p.set_defaults(
        func=lambda a: _print(
            __import__("edgecompress.steps", fromlist=["x"]).load_dataset_step(
                a.source, a.output, a.seed, _lineage(a)
            )
        )
    )

    p = sub.add_parser(
        "train", help="train a model and export it to ONNX", description="Train a zoo or user model."
    )
    p.add_argument(
        "--dataset", type=Path, required=True, help="Dataset artifact (.npz from `edgecompress dataset`)"
    )
    p.add_argument("--model", default="cnn", help="zoo family, module:factory, or JSON spec")
    p.add_argument("--output", type=Path, required=True, help="Model artifact directory to write")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--augment", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    _common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate",
        help="accuracy, size, MACs and latency of a Model artifact",
        description="Evaluate a Model artifact (or a bare .onnx file) on a Dataset artifact.",
    )
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--dataset", type=Path, required=True)
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
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
    p.add_argument("--device-classes", default="rpi4-emulated")
    p.add_argument("--farm-url", default=None)
    p.add_argument("--min-runs", type=int, default=200)
    p.add_argument("--min-duration-s", type=float, default=1.0)
    p.add_argument("--output", type=Path, required=True, help="results JSON")
    p.add_argument("--report", type=Path, help="HTML report")
    _common(p)
    p.set_defaults(func=cmd_benchmark)


def _print(data) -> int:
    print(json.dumps(data, indent=2, default=str)[:20000])
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    from edgecompress.steps import train_step
    from edgecompress.train import TrainConfig

    cfg = TrainConfig(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, augment=a.augment, seed=a.seed)
    info = train_step(a.dataset, a.model, a.output, cfg, _lineage(a))
    return _print(
        {k: info.get(k) for k in ("technique", "params", "onnx_bytes", "mlflow_model_id", "history")}
    )


def cmd_evaluate(a: argparse.Namespace) -> int:
    from edgecompress.steps import evaluate_step

    out = evaluate_step(a.model, a.dataset, a.output, a.report, a.split, _lineage(a))
    return _print({k: out[k] for k in ("accuracy", "samples", "stats", "latency_ms")})


def cmd_benchmark(a: argparse.Namespace) -> int:
    from edgecompress.steps import edge_benchmark_step

    settings = {"min_runs": a.min_runs, "min_duration_s": a.min_duration_s}
    out = edge_benchmark_step(
        a.model, a.device_classes, a.output, a.report, a.farm_url, settings, lineage_ctx=_lineage(a)
    )
    return _print(
        {c: {"emulated": r["emulated"], "latency_ms": r["latency_ms"]} for c, r in out["results"].items()}
    )
