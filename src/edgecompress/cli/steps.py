"""Single steps from a terminal: the same library calls the components make (quantize and autotune
are in cli/quant.py)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from edgecompress.data import DatasetSource
from edgecompress.edge import EdgeBenchmarkConfig
from edgecompress.entry import add_command
from edgecompress.evaluate import EvaluateConfig
from edgecompress.isa import IsaCheckConfig
from edgecompress.params import add_options, from_args
from edgecompress.step import Lineage
from edgecompress.train import TrainConfig
from edgecompress.zoo import ModelChoice


def _lineage(args: argparse.Namespace) -> Lineage:
    return from_args(Lineage, args)


def _common(p: argparse.ArgumentParser) -> None:
    """--experiment and --track/--no-track: a standalone run has no pipeline run id or name."""
    add_options(p, Lineage, exclude=("pipeline_run_id", "pipeline_name"))


def io_arguments(
    p: argparse.ArgumentParser,
    *,
    model: str | None = "Model artifact directory (or a bare .onnx file)",
    dataset: str | None = "Dataset artifact (.npz)",
    output: str = "Model artifact directory to write",
    report: str | None = None,
) -> None:
    """The files a step command reads and writes (`None`: the command has no such argument)."""
    for name, text in (("--model", model), ("--dataset", dataset), ("--output", output)):
        if text:
            p.add_argument(name, type=Path, required=True, help=text)
    if report:
        p.add_argument("--report", type=Path, help=report)


def step_command(
    sub: argparse._SubParsersAction,
    func: Callable[[argparse.Namespace], int],
    *configs: type,
    **io: str | None,
) -> argparse.ArgumentParser:
    """The command that runs one step (`func`, see `edgecompress.entry.add_command`): its files
    (`io_arguments`), one option per setting of its `configs` (`edgecompress.params`), and
    --experiment/--track. Returns the parser for extra options."""
    p = add_command(sub, func)
    io_arguments(p, **io)
    for config in configs:
        add_options(p, config)
    _common(p)
    return p


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, cmd_dataset)
    p.add_argument(
        "source",
        help="digits, fashion-mnist, a .npz path, an s3:// URI, an image folder or a folder of .npz shards",
    )
    add_options(p, DatasetSource, exclude=("source",))
    p.add_argument("--output", type=Path, required=True)
    _common(p)

    step_command(
        sub,
        cmd_train,
        ModelChoice,
        TrainConfig,
        model=None,
        dataset="Dataset artifact (.npz from `edgecompress dataset`)",
    )

    step_command(sub, cmd_evaluate, EvaluateConfig, output="results JSON", report="HTML report")
    step_command(
        sub, cmd_benchmark, EdgeBenchmarkConfig, dataset=None, output="results JSON", report="HTML report"
    )
    p = step_command(
        sub, cmd_isa_check, IsaCheckConfig, model=None, output="results JSON", report="Markdown report"
    )
    p.add_argument("--parent", type=Path, required=True, help="the float parent's Model artifact directory")
    p.add_argument(
        "--child", type=Path, required=True, help="the compressed child's Model artifact directory"
    )


def _print(data) -> int:
    print(json.dumps(data, indent=2, default=str)[:20000])
    return 0


def cmd_dataset(a: argparse.Namespace) -> int:
    """write a Dataset artifact from a source (built-in, .npz, image folder, .npz shards)

    Resolve digits, fashion-mnist, a .npz path or an s3:// URI into a Dataset artifact (.npz), or stream
    an image folder (<class>/<image> or train|val|test/<class>/<image>) or a folder of .npz shards into a
    sharded artifact directory, checking every sample on the way."""
    from edgecompress.train import load_dataset_step

    return _print(load_dataset_step(from_args(DatasetSource, a), a.output, _lineage(a)))


def cmd_train(a: argparse.Namespace) -> int:
    """train a model and export it to ONNX

    Train a zoo or user model."""
    from edgecompress.train import train_step

    spec = from_args(ModelChoice, a).model_spec
    info = train_step(a.dataset, spec, a.output, from_args(TrainConfig, a), _lineage(a)).info
    return _print(
        {k: info.get(k) for k in ("technique", "params", "onnx_bytes", "mlflow_model_id", "history")}
    )


def cmd_evaluate(a: argparse.Namespace) -> int:
    """accuracy, size, MACs and latency of a Model artifact

    Evaluate a Model artifact (or a bare .onnx file) on a Dataset artifact."""
    from edgecompress.evaluate import evaluate_step

    split = from_args(EvaluateConfig, a).split
    out = evaluate_step(a.model, a.dataset, a.output, a.report, split, _lineage(a))
    return _print({k: out[k] for k in ("accuracy", "samples", "stats", "latency_ms")})


def cmd_benchmark(a: argparse.Namespace) -> int:
    """benchmark a model on device classes (farm or local emulation)

    Edge-benchmark a Model artifact (or a bare .onnx file)."""
    from edgecompress.edge import edge_benchmark_step

    out = edge_benchmark_step(a.model, from_args(EdgeBenchmarkConfig, a), a.output, a.report, _lineage(a))
    return _print(
        {c: {"emulated": r["emulated"], "latency_ms": r["latency_ms"]} for c, r in out["results"].items()}
    )


def cmd_isa_check(a: argparse.Namespace) -> int:
    """check a child's numerics on each target device class's ISA (aarch64 under QEMU on x86)

    Run the child and its float parent with the ONNX Runtime build of each device class whose ISA differs
    from this machine's (aarch64: the arm64 agent image under QEMU) on the decision split; compare
    accuracy, top-1 agreement and max |logit| difference with this machine and the parent; reject the
    child for a class where its accuracy there breaks the gate's rule."""
    from edgecompress.isa import isa_check_step

    out = isa_check_step(a.parent, a.child, a.dataset, from_args(IsaCheckConfig, a), a.output, a.report)
    keep = (
        "checked",
        "why_not",
        "isa",
        "qemu_cpu",
        "verdict",
        "reasons",
        "accuracy",
        "host_accuracy",
        "agreement_with_host",
        "max_abs_logit_diff_host",
        "wall_s",
    )
    return _print(
        {
            "rejected_device_classes": out["rejected_device_classes"],
            "samples": out["samples"],
            "subsample_step": out["subsample_step"],
            "wall_s": out["wall_s"],
            "classes": {c: {k: r[k] for k in keep if k in r} for c, r in out["classes"].items()},
        }
    )
