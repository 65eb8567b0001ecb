"""`edgecompress run` and `edgecompress compile`."""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

from edgecompress.cli.cluster import (
    add_platform_args,
    build,
    compile_pipeline,
    pipeline_builders,
    platform_from_args,
)
from edgecompress.entry import add_command
from edgecompress.errors import ConfigError
from edgecompress.params import option, surface
from edgecompress.rules import AccuracyRule
from edgecompress.runtime.devices import DEFAULT_DEVICE_CLASSES, PROFILES_ENV


def _pipeline_defaults(chain: list[str]) -> dict:
    from edgecompress.pipelines.edge_compression import build_pipeline

    fn = build_pipeline(chain).pipeline_func
    return {k: v.default for k, v in inspect.signature(fn).parameters.items()}


def register(sub: argparse._SubParsersAction) -> None:
    run = add_command(sub, cmd_run)
    run.add_argument(
        "--dataset",
        default="digits",
        help="digits (default), fashion-mnist, a .npz path, an s3:// URI, an image folder or a folder of "
        ".npz shards (streamed; image options as --param image_size=64x64 …)",
    )
    run.add_argument(
        "--model",
        default="cnn",
        help="zoo family (mlp, lenet5, cnn, mobilenet), module:factory, or JSON spec",
    )
    run.add_argument("--epochs", type=int, help="training epochs (default 10 on digits, 10 on fashion-mnist)")
    run.add_argument(
        "--chain", default="quantize", help="compression steps in order, comma-separated (default: quantize)"
    )
    run.add_argument(
        "--device-classes",
        default=",".join(DEFAULT_DEVICE_CLASSES),
        help=f"comma-separated classes of the device profiles (device_profiles.yaml, ${PROFILES_ENV}); "
        "without --farm-url, emulated ones",
    )
    run.add_argument("--farm-url", default="", help="device farm controller URL (default: local emulation)")
    drop = {p.name: p for p in surface(AccuracyRule)}["max_accuracy_drop"]
    run.add_argument(option(drop.name), type=drop.type, default=drop.default, help=f"gate: {drop.help}")
    run.add_argument(
        "--skip-isa-check",
        action="store_true",
        help="do not check the child on the ISA of device classes whose ISA differs from this machine's",
    )
    run.add_argument(
        "--registered-model-name", default=None, help="registry name (default: <dataset>-<model>)"
    )
    run.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other pipeline parameter, e.g. --param quantize_calibration_samples=512 (repeatable)",
    )
    run.add_argument(
        "--output-dir",
        type=Path,
        default=Path("edgecompress-runs"),
        help="artifacts and the local MLflow store",
    )
    run.add_argument("--no-track", action="store_true", help="skip MLflow (no lineage, no registry)")

    comp = add_command(sub, cmd_compile)
    comp.add_argument("--chain", default="quantize", help="compression steps in order, comma-separated")
    comp.add_argument("--output", type=Path, default=Path("edge_compression.yaml"), help="output YAML file")
    comp.add_argument(
        "--all", action="store_true", help="every pipeline, one <name>.yaml each in --output-dir"
    )
    comp.add_argument(
        "--output-dir", type=Path, default=Path("compiled"), help="folder for --all (default compiled/)"
    )
    comp.add_argument(
        "--components",
        action="store_true",
        help="instead, regenerate every components/<name>/component.yaml and README.md",
    )
    add_platform_args(comp)


def _parse_params(pairs: list[str], defaults: dict) -> dict:
    import json

    out = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or name not in defaults:
            raise ConfigError(f"--param {pair!r}: expected NAME=VALUE with NAME one of {sorted(defaults)}")
        default = defaults[name]
        try:
            value = json.loads(raw) if not isinstance(default, str) else raw
            if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)  # KFP types parameters strictly: 1000 → 1000.0 for a float
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--param {name}: cannot parse {raw!r} as {type(default).__name__}") from exc
        out[name] = value
    return out


def cmd_run(args: argparse.Namespace) -> int:
    """run the train→compress→evaluate→edge-benchmark pipeline locally

    Run the edge-compression pipeline locally (kfp.local, this environment), then print parent vs child
    with the gate's verdict. The tasks' own logs go to OUTPUT_DIR/pipeline.log (`edgecompress -v run …`
    streams them instead)."""
    from edgecompress.pipelines.local import run_edge_compression

    chain = [s.strip() for s in args.chain.split(",") if s.strip()]
    defaults = _pipeline_defaults(chain)
    model_name = args.model if ":" not in args.model and not args.model.startswith("{") else "custom"
    arguments = {
        "dataset": args.dataset,
        "model": args.model,
        "device_classes": [c.strip() for c in args.device_classes.split(",") if c.strip()],
        "farm_url": args.farm_url,
        "max_accuracy_drop": args.max_accuracy_drop,
        "track": not args.no_track,
        "registered_model_name": args.registered_model_name or f"{Path(args.dataset).stem}-{model_name}",
    }
    if args.epochs is not None:
        arguments["epochs"] = args.epochs
    if args.dataset == "fashion-mnist":
        arguments.setdefault("batch_size", 128)
        arguments.setdefault("augment", True)
    if args.skip_isa_check:
        arguments["skip_isa_check"] = True
    arguments.update(_parse_params(args.param, defaults))
    result = run_edge_compression(chain, arguments, args.output_dir, verbose=args.verbose)
    print_summary(result)
    return 0


def print_summary(result) -> None:
    from rich.console import Console
    from rich.table import Table

    from edgecompress.reports import fmt

    gate = result.gate
    console = Console(width=None if sys.stdout.isatty() else 140)  # logs and CI: no wrapped labels
    table = Table(title=f"parent vs child — gate: {gate['verdict'].upper()}")
    table.add_column("metric")
    table.add_column("parent", justify="right")
    table.add_column("child", justify="right")
    table.add_column("child / parent", justify="right")
    p, c = gate["parent"], gate["child"]
    table.add_row("technique", p["technique"], c["technique"], "")
    acc = gate["accuracy"]
    table.add_row(
        f"{gate['decision_split']} accuracy change (paired, {gate['confidence']:.0%} CI)",
        "",
        "",
        # + 0.0: a zero change prints as +0.00, not -0.00
        f"{-acc['drop'] * 100 + 0.0:+.2f} pt [{-acc['ci_high'] * 100 + 0.0:+.2f}, {-acc['ci_low'] * 100 + 0.0:+.2f}]",
    )
    table.add_row(
        "test accuracy",
        f"{p['accuracy']:.4f}",
        f"{c['accuracy']:.4f}",
        f"{(c['accuracy'] - p['accuracy']) * 100:+.2f} pt",
    )
    for key, label in (
        ("params", "parameters"),
        ("macs", "MACs"),
        ("onnx_bytes", "ONNX bytes"),
        ("gzip_bytes", "gzip bytes"),
    ):
        ratio = c[key] / p[key] if p[key] else float("nan")
        table.add_row(label, fmt(p[key]), fmt(c[key]), f"{ratio:.3f}×")
    for cls, v in gate["device_classes"].items():
        label = f"p50 ms {cls}" + (" (emulated)" if v["emulated"] else "")
        label += " (QEMU: timing not meaningful)" if v.get("timing_meaningful") is False else ""
        verdict = "faster" if v["faster"] else "not faster"
        table.add_row(
            label,
            f"{v['parent_p50_ms']:.4f}",
            f"{v['child_p50_ms']:.4f}",
            f"{v['speedup']:.2f}× [{v['ci_low']:.2f}, {v['ci_high']:.2f}] {verdict}",
        )
    console.print(table)
    console.print(f"gate rule: {gate['rule']}")
    isa = gate.get("isa_check") or {}
    if isa:
        checked = ", ".join(isa["checked"]) or "none (no device class of another ISA)"
        rejected = ", ".join(isa["rejected_device_classes"]) or "none"
        console.print(
            "isa-check: skipped" if isa["skipped"] else f"isa-check on {checked}: rejected {rejected}"
        )
    for reason in gate["reasons"]:
        console.print(f"[yellow]gate:[/] {reason}")
    if gate.get("registered"):
        reg = gate["registered"]
        console.print(
            f"registered [bold]{reg['name']}[/] v{reg['version']} with aliases {', '.join(reg['aliases'])}"
        )
    else:
        console.print("child model not registered")
    console.print(f"pipeline took {result.seconds:.0f} s")
    console.print(f"artifacts:      {result.pipeline_root}")
    console.print(f"gate result:    {result.gate_path}")
    if not result.tracked:  # --no-track: nothing was written to any MLflow store
        return
    console.print(f"MLflow store:   {result.tracking_uri}")
    if result.tracking_uri.startswith("sqlite:///"):
        console.print(
            f"open the UI:    .venv/bin/mlflow ui --backend-store-uri {result.tracking_uri} --port 5000"
        )


def cmd_compile(args: argparse.Namespace) -> int:
    """compile pipelines to KFP IR YAML

    Compile the edge-compression pipeline (for a given chain), or with --all every pipeline, to KFP IR
    YAML, with the image and Kubernetes settings given."""
    if args.components:
        from edgecompress.components import compile_all, write_docs

        for path in compile_all():
            print(f"wrote {path}")
        write_docs()
        return 0
    platform = platform_from_args(args)
    chain = [s.strip() for s in args.chain.split(",") if s.strip()]
    if args.all:
        from edgecompress.pipelines.platform import pipeline_components

        # every pipeline that takes a chain gets it (retrain-on-drift's inner one too); a setting must
        # meet a task in one of them at least (--cache promote=off has nothing to do in edge-compression)
        builders = pipeline_builders()
        built = {
            name: build(
                name,
                platform,
                chain if "chain" in inspect.signature(builders[name]).parameters else None,
                check=False,
            )
            for name in sorted(builders)
        }
        platform.check_honoured("--all", set().union(*(pipeline_components(p) for p in built.values())))
        for name, pipeline in built.items():
            out = compile_pipeline(name, args.output_dir / f"{name}.yaml", platform, pipeline=pipeline)
            print(f"wrote {out}")
        return 0
    compile_pipeline("edge-compression", args.output, platform, chain)
    print(f"wrote {args.output} (chain: {' → '.join(chain)})")
    return 0
