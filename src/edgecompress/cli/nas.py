"""`edgecompress nas`: the same search the nas component runs, from a terminal."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgecompress.cli.steps import _common, _lineage, _print


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "nas",
        help="hardware-aware architecture search: the most accurate model under a latency budget",
        description="Search the zoo's CNN/MobileNet families (a search space in YAML/JSON) for accuracy vs "
        "p50 latency measured on a device class (farm or local emulation), then retrain the pick. "
        "The optuna study is kept in --storage: run the same command again to resume it.",
    )
    p.add_argument("--dataset", type=Path, required=True, help="Dataset artifact (.npz)")
    p.add_argument(
        "--output", type=Path, required=True, help="Model artifact directory for the retrained pick"
    )
    p.add_argument("--front", type=Path, help="Pareto front + all trials, JSON (default: OUTPUT.front.json)")
    p.add_argument("--report", type=Path, help="HTML report with the front plot")
    p.add_argument(
        "--search-space",
        default="default",
        help="preset name, YAML/JSON file, or inline JSON (default: default)",
    )
    p.add_argument("--strategy", default="tpe", choices=["tpe", "nsga2", "random"])
    p.add_argument("--trials", type=int, default=24, help="budget: finished trials in the study")
    p.add_argument("--timeout-s", type=float, default=0.0, help="budget: wall-clock seconds (0 = none)")
    p.add_argument("--search-epochs", type=int, default=3, help="low fidelity: epochs per trial")
    p.add_argument(
        "--train-samples", type=int, default=10_000, help="low fidelity: training images per trial"
    )
    p.add_argument(
        "--holdout-samples", type=int, default=5_000, help="hold-out (from the training split) size"
    )
    p.add_argument("--eta", type=int, default=3, help="successive halving factor (1 = off)")
    p.add_argument("--final-epochs", type=int, default=10, help="retraining of the pick")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--augment", action="store_true")
    p.add_argument("--device-class", default="rpi4-emulated")
    p.add_argument("--farm-url", default=None, help="device farm controller (default: local emulation)")
    p.add_argument("--max-params", type=int, default=0)
    p.add_argument("--max-macs", type=int, default=0)
    p.add_argument("--max-latency-ms", type=float, default=0.0, help="p50, batch 1, on --device-class")
    p.add_argument(
        "--accuracy-tolerance", type=float, default=0.0,
        help="pick the fastest front member within this (fraction) of the best accuracy",
    )  # fmt: skip
    p.add_argument(
        "--reference-model", type=Path, help="Model artifact to measure alongside (lineage parent)"
    )
    p.add_argument("--storage", default="", help="optuna storage URL (default: sqlite file OUTPUT.study.db)")
    p.add_argument(
        "--study-name", default="", help="default: derived from dataset, device class, strategy, seed"
    )
    p.add_argument("--seed", type=int, default=0)
    _common(p)
    p.set_defaults(func=cmd_nas)


def cmd_nas(a: argparse.Namespace) -> int:
    from edgecompress.nas import Constraints, NasConfig, nas_step

    config = NasConfig(
        strategy=a.strategy, n_trials=a.trials, timeout_s=a.timeout_s, search_epochs=a.search_epochs,
        train_samples=a.train_samples, holdout_samples=a.holdout_samples, eta=a.eta, final_epochs=a.final_epochs,
        batch_size=a.batch_size, lr=a.lr, augment=a.augment, seed=a.seed, accuracy_tolerance=a.accuracy_tolerance,
    )  # fmt: skip
    constraints = Constraints(a.device_class, a.max_params, a.max_macs, a.max_latency_ms)
    output = a.output.resolve()
    storage = a.storage or f"sqlite:///{output.parent / (output.name + '.study.db')}"
    front = a.front or output.parent / f"{output.name}.front.json"
    info = nas_step(
        a.dataset, output, front, a.report, a.search_space, constraints, config, storage, a.study_name,
        a.farm_url, a.reference_model, _lineage(a),
    )  # fmt: skip
    s = info["nas_summary"]
    return _print(
        {
            "study": s["study_name"], "storage": storage, "counts": s["counts"], "budget": s["budget"],
            "pick": {"spec": s["pick"]["spec"], **s["pick"]["final"]}, "reference": s["reference"],
            "front": [{k: m[k] for k in ("number", "accuracy", "p50_ms", "params")} for m in s["front"]],
            "front_json": str(front), "mlflow_model_id": info.get("mlflow_model_id"),
        }
    )  # fmt: skip
