"""`edgecompress lineage`, `audit`, `promote` and `drift`: the auditor's and the operator's commands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgecompress.drift import DriftConfig
from edgecompress.entry import add_command
from edgecompress.params import add_options, from_args
from edgecompress.runtime.devices import DEFAULT_DEVICE_CLASSES

MODEL_HELP = "models:/NAME@ALIAS, models:/NAME/VERSION, or a logged model id (m-…)"


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, cmd_lineage)
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument(
        "--format", default="text", choices=["text", "json", "mermaid"], help="output format (default text)"
    )

    p = sub.add_parser(
        "audit",
        help="audit queries over MLflow lineage",
        description="Audit queries over the models and registry in MLFLOW_TRACKING_URI.",
    )
    q = p.add_subparsers(dest="query", metavar="QUERY", required=True)
    # (query, help, description, its positional argument and that argument's help, command)
    queries = [
        (
            "dataset",
            "every model derived from a dataset digest",
            "List every logged model trained or compressed from a dataset (sha256 or prefix).",
            ("digest", "dataset sha256 (or a prefix of at least 8 characters)"),
            cmd_audit_dataset,
        ),
        (
            "unbenchmarked",
            "registered versions with no benchmark on a device class",
            "List registered model versions whose model has no benchmark on a device class.",
            ("device_class", "e.g. rpi4-emulated"),
            cmd_audit_unbenchmarked,
        ),
        (
            "broken",
            "models whose parent model no longer exists",
            "List logged models whose lineage chain is broken (parent deleted or missing).",
            None,
            cmd_audit_broken,
        ),
    ]
    for name, help_, description, positional, func in queries:
        a = q.add_parser(name, help=help_, description=description)
        if positional:
            a.add_argument(positional[0], help=positional[1])
        a.add_argument("--format", default="text", choices=["text", "json"])
        a.set_defaults(func=func)

    p = add_command(sub, cmd_promote)
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--alias", required=True, help="<device-class>-production, e.g. rpi4-emulated-production")
    p.add_argument("--name", help="registered model name (when the model is not registered yet)")

    p = add_command(sub, cmd_drift)
    p.add_argument(
        "batch",
        type=str,  # not Path: Path("s3://b/k") is "s3:/b/k", and the chart's CronJob reads s3:// batches
        help=".npz with `x` (and `y` for --retrain; `feature_names` for tabular), an s3:// URI, or a folder of images "
        "(<image> or <class>/<image>) when the model was trained on an image folder",
    )
    p.add_argument("--model", required=True, help=MODEL_HELP + ", or a local Model artifact directory")
    add_options(p, DriftConfig)
    p.add_argument(
        "--output-dir", type=Path, default=Path("edgecompress-drift"), help="report.html + result.json"
    )
    p.add_argument("--exit-code", action="store_true", help="exit 1 when drift is detected")
    p.add_argument(
        "--retrain", action="store_true", help="on drift, retrain + compress + benchmark + promote"
    )
    p.add_argument(
        "--chain",
        help="compression chain for the retrain (default: the chain recorded in the model's lineage, "
        "with each step's recorded settings; --param/--epochs still override)",
    )
    p.add_argument("--epochs", type=int, help="retrain epochs (default: the pipeline's)")
    p.add_argument(
        "--device-classes",
        default=",".join(DEFAULT_DEVICE_CLASSES),
        help="device classes to benchmark and promote on",
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other retrain_on_drift parameter, e.g. --param max_accuracy_drop=0.02 (repeatable)",
    )
    p.add_argument(
        "--run-dir", type=Path, default=Path("edgecompress-runs"), help="artifacts of the retrain run"
    )


def _rows(rows: list[dict], fmt: str, columns: list[str]) -> int:
    if fmt == "json":
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print("(none)")
    for r in rows:
        print("  ".join(f"{c}={r.get(c)}" for c in columns))
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    """walk a model back to its training data (MLflow lineage)

    Print dataset → trained model → each compression step → benchmarks per device class → registry
    versions and aliases, from the MLflow server in MLFLOW_TRACKING_URI."""
    from edgecompress import audit

    print(audit.render(audit.lineage_of(args.model), args.format), end="")
    return 0


def cmd_audit_dataset(args: argparse.Namespace) -> int:
    from edgecompress import audit

    return _rows(
        audit.models_from_dataset(args.digest),
        args.format,
        ["model_id", "technique", "name", "parent_model_id", "dataset_name"],
    )


def cmd_audit_unbenchmarked(args: argparse.Namespace) -> int:
    from edgecompress import audit

    return _rows(
        audit.unbenchmarked_versions(args.device_class),
        args.format,
        ["name", "version", "aliases", "model_id", "reason"],
    )


def cmd_audit_broken(args: argparse.Namespace) -> int:
    from edgecompress import audit

    return _rows(audit.broken_chains(), args.format, ["model_id", "technique", "name", "missing_parent"])


def cmd_promote(args: argparse.Namespace) -> int:
    """point <device-class>-production at a model that earned it

    Set the registry alias <device-class>-production on a model, refusing one that failed its accuracy
    gate or has no benchmark on that device class."""
    from edgecompress import audit

    out = audit.promote(args.model, args.alias, args.name)
    b = out["benchmark"]
    kind = "emulated" if b["emulated"] else "real device"
    print(
        f"promoted {out['name']} v{out['version']} ({out['model_id']}) to @{out['alias']}: "
        f"{out['device_class']} ({kind}) p50 {b.get('p50_ms', float('nan')):.4g} ms"
    )
    return 0


def _recorded_arguments(recorded: dict, chain: list[str], defaults: dict, given: set[str]) -> dict:
    """The pipeline arguments of the settings recorded in a model's lineage (`recorded_chain`): a
    step's setting `name` is the pipeline's `<step>_name` (training's keep their names); one the user
    gave, one the pipeline has no parameter for, one whose default is computed (`auto`: the recorded
    value is what it resolved to then, e.g. reduce_range for the target) or one that does not parse
    as the parameter's type is left out."""
    from edgecompress.cli.pipeline import _parse_params
    from edgecompress.errors import ConfigError

    out = {}
    for step, settings in recorded["settings"].items():
        if step != "train" and step not in chain:
            continue
        for name, raw in settings.items():
            param = name if step == "train" else f"{step}_{name}"
            if param not in defaults or param in given or raw in ("", "None", "{}", "[]"):
                continue
            if defaults[param] == "auto":  # computed for the target (e.g. reduce_range): computed again
                continue
            if isinstance(defaults[param], bool):
                if raw.lower() in ("true", "false"):
                    out[param] = raw.lower() == "true"
                continue
            try:
                value = _parse_params([f"{param}={raw}"], defaults)[param]
            except ConfigError:
                continue
            if isinstance(defaults[param], int) and isinstance(value, float) and value.is_integer():
                value = int(value)
            if type(value) is type(defaults[param]) or (
                isinstance(defaults[param], float) and isinstance(value, int)
            ):
                out[param] = value
    return out


def cmd_drift(args: argparse.Namespace) -> int:
    """check a new batch for drift against the model's training data

    Two-sample drift tests between a new batch and the reference data found through the model's lineage
    (tabular: KS / chi-squared per feature with Bonferroni, PSI; images: KS on softmax outputs + MMD on
    penultimate embeddings). Exit status 0 (1 on drift with --exit-code), 2 = bad input (nothing written,
    no retrain). With --retrain, drift starts the compression pipeline on reference + new data and
    promotes the result."""
    import inspect

    from edgecompress.cli.pipeline import _parse_params
    from edgecompress.drift import check_and_report, retrain_arguments
    from edgecompress.pipelines.retrain_on_drift import build_pipeline

    config = from_args(DriftConfig, args)
    recorded = None
    if args.chain:
        chain = [s.strip() for s in args.chain.split(",") if s.strip()]
    elif args.retrain:
        from edgecompress.drift.recorded import recorded_chain

        recorded = recorded_chain(str(args.model))
        chain = recorded["chain"] or ["quantize"]  # a trained model only: the default chain
    else:
        chain = ["quantize"]
    fn = build_pipeline(chain).pipeline_func
    defaults = {k: v.default for k, v in inspect.signature(fn).parameters.items()}
    arguments = {
        "device_classes": [c.strip() for c in args.device_classes.split(",") if c.strip()],
        **({"epochs": args.epochs} if args.epochs is not None else {}),
        **_parse_params(args.param, defaults),
    }
    if args.retrain:
        from edgecompress.pipelines.local import run_retrain_on_drift

        if recorded is not None:
            reused = _recorded_arguments(recorded, chain, defaults, set(arguments))
            print(
                f"retrain: the chain recorded for {args.model}: {' → '.join(recorded['techniques'])} "
                f"(retrained as {' → '.join(['train', *chain])}); recorded "
                "settings reused: " + (", ".join(f"{k}={v}" for k, v in sorted(reused.items())) or "none")
            )
            arguments = {**reused, **arguments}
        arguments = {**arguments, **retrain_arguments(args.batch, args.model, config)}
        outcome = run_retrain_on_drift(chain, arguments, args.run_dir, args.output_dir)
    else:
        outcome = check_and_report(args.batch, args.model, args.output_dir, config)
    r = outcome["drift"]
    print(
        f"drift: {'DRIFTED' if r['drifted'] else 'no drift'}  score {r['score']:.4g}  p-value {r['p_value']:.4g}  "
        f"(alpha {r['alpha']}, {r['kind']}, {r['batch_size']} new vs {r['reference_size']} reference samples)"
    )
    for name, t in r["tests"].items():
        print(f"  {name}: p-value {t['p_value']:.4g}  {'drifted' if t['drifted'] else 'ok'}")
    print(f"report: {outcome['report']}")
    if outcome.get("retrain"):
        rt = outcome["retrain"]
        print(f"retrain: gate {rt['gate']['verdict']}; promoted: {', '.join(rt['promoted']) or 'none'}")
        if rt.get("rule"):
            print(f"  promotion rule: {rt['rule']}")
        for why in rt.get("refused", []):
            print(f"  not promoted: {why}")
    return 1 if r["drifted"] and args.exit_code else 0
