"""`edgecompress nas`: the same search the nas component runs, from a terminal."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgecompress.cli.steps import _lineage, _print, step_command
from edgecompress.nas import Constraints, NasConfig, NasStepOptions
from edgecompress.params import from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = step_command(
        sub,
        cmd_nas,
        NasStepOptions,
        NasConfig,
        Constraints,
        model=None,
        output="Model artifact directory for the retrained pick",
        report="HTML report with the front plot",
    )
    p.add_argument("--front", type=Path, help="Pareto front + all trials, JSON (default: OUTPUT.front.json)")
    p.add_argument(
        "--reference-model", type=Path, help="Model artifact to measure alongside (lineage parent)"
    )


def cmd_nas(a: argparse.Namespace) -> int:
    """hardware-aware architecture search: the most accurate model under a latency budget

    Search the zoo's CNN/MobileNet families (a search space in YAML/JSON) for accuracy vs p50 latency
    measured on a device class (farm or local emulation), then retrain the pick. The optuna study is kept
    in --storage: run the same command again to resume it."""
    from edgecompress.nas import nas_step

    options, config, constraints = (
        from_args(NasStepOptions, a),
        from_args(NasConfig, a),
        from_args(Constraints, a),
    )
    output = a.output.resolve()
    storage = options.storage or f"sqlite:///{output.parent / (output.name + '.study.db')}"
    front = a.front or output.parent / f"{output.name}.front.json"
    result = nas_step(
        a.dataset,
        output,
        front,
        a.report,
        options.search_space,
        constraints,
        config,
        storage,
        options.study_name,
        options.farm_url,
        a.reference_model,
        _lineage(a),
    )
    s, info = result.extra["nas_summary"], result.info
    return _print(
        {
            "study": s["study_name"],
            "storage": storage,
            "counts": s["counts"],
            "budget": s["budget"],
            "pick": {"spec": s["pick"]["spec"], **s["pick"]["final"]},
            "reference": s["reference"],
            "front": [{k: m[k] for k in ("number", "accuracy", "p50_ms", "params")} for m in s["front"]],
            "front_json": str(front),
            "mlflow_model_id": info.get("mlflow_model_id"),
        }
    )
