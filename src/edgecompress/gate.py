"""The accuracy gate: accept a compressed child only where it keeps accuracy and is faster than its
parent, register it with an alias per device class it earned, and say why when it does not."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecompress import lineage
from edgecompress.errors import ConfigError
from edgecompress.io import write_json, write_text
from edgecompress.reports import markdown_table
from edgecompress.step import Lineage


@dataclass
class GateConfig:
    """The gate's rule."""

    max_accuracy_drop: float = field(
        default=0.01, metadata={"help": "largest accuracy drop accepted, a fraction (0.01 = 1 point)"}
    )
    min_speedup: float = field(
        default=1.0, metadata={"help": "a device class passes when the child is faster than this factor"}
    )
    registered_model_name: str = field(
        default="edgecompress-model", metadata={"help": "MLflow registry name of an accepted child"}
    )

    def validate(self) -> None:
        if not 0 <= self.max_accuracy_drop < 1:
            raise ConfigError(f"max_accuracy_drop must be in [0, 1), got {self.max_accuracy_drop}")
        if not self.min_speedup >= 0:
            raise ConfigError(f"min_speedup must be ≥ 0 (0: speed is not required), got {self.min_speedup}")


def gate_step(
    parent_eval_path: Path,
    child_eval_path: Path,
    parent_bench_path: Path,
    child_bench_path: Path,
    config: GateConfig,
    results_path: Path,
    report_path: Path | None = None,
    lineage_ctx: Lineage | None = None,
) -> dict[str, Any]:
    """Accept the child only if it keeps accuracy and is faster than its parent where it will run.

    The child is registered with an alias for each device class on which it passed; a child that
    fails is tagged rejected with the reason and not registered. A failed gate is a result, not an
    error: the run completes and says so.
    """
    config.validate()
    max_accuracy_drop, min_speedup = config.max_accuracy_drop, config.min_speedup
    registered_model_name = config.registered_model_name
    ctx = lineage_ctx or Lineage()
    ctx.check()
    p_eval, c_eval = (json.loads(Path(p).read_text()) for p in (parent_eval_path, child_eval_path))
    p_bench, c_bench = (
        json.loads(Path(p).read_text())["results"] for p in (parent_bench_path, child_bench_path)
    )
    drop = p_eval["accuracy"] - c_eval["accuracy"]
    accuracy_ok = drop <= max_accuracy_drop + 1e-12
    per_class = {}
    for cls in c_bench:
        speedup = p_bench[cls]["latency_ms"]["p50"] / c_bench[cls]["latency_ms"]["p50"]
        per_class[cls] = {
            "parent_p50_ms": p_bench[cls]["latency_ms"]["p50"],
            "child_p50_ms": c_bench[cls]["latency_ms"]["p50"],
            "parent_p90_ms": p_bench[cls]["latency_ms"]["p90"],
            "child_p90_ms": c_bench[cls]["latency_ms"]["p90"],
            "speedup": speedup,
            "faster": speedup > min_speedup,
            "emulated": bool(c_bench[cls].get("emulated")),
        }
    passed_classes = [c for c, v in per_class.items() if v["faster"]] if accuracy_ok else []
    reasons = []
    if not accuracy_ok:
        reasons.append(f"accuracy drop {drop * 100:.2f} points > allowed {max_accuracy_drop * 100:.2f}")
    slower = [c for c, v in per_class.items() if not v["faster"]]
    if slower:
        reasons.append(
            "not faster than its parent on "
            + ", ".join(f"{c} ({per_class[c]['speedup']:.2f}×)" for c in slower)
        )
    verdict = "accepted" if passed_classes else "rejected"
    child_id = c_eval["model"].get("mlflow_model_id")
    result = {
        "verdict": verdict,
        "reasons": reasons,
        "accuracy_drop": drop,
        "max_accuracy_drop": max_accuracy_drop,
        "min_speedup": min_speedup,
        "accepted_device_classes": passed_classes,
        "device_classes": per_class,
        "parent": _summary_row(p_eval),
        "child": _summary_row(c_eval),
        "registered": None,
    }
    with ctx.task(
        "accuracy-gate",
        {"max_accuracy_drop": max_accuracy_drop, "min_speedup": min_speedup, "child_model_id": child_id},
    ):
        if ctx.enabled and child_id:
            lineage.set_model_tags(
                child_id,
                {
                    "edgecompress.gate": verdict,
                    "edgecompress.gate_reason": "; ".join(reasons) or "passed",
                    "edgecompress.gate_accepted_classes": ",".join(passed_classes),
                },
            )
            if passed_classes:
                version = lineage.register(
                    child_id,
                    registered_model_name,
                    passed_classes,
                    tags={"edgecompress.technique": c_eval["model"].get("technique", "")},
                )
                result["registered"] = {
                    "name": registered_model_name,
                    "version": version,
                    "aliases": [lineage.alias_name(c) for c in passed_classes],
                }
        write_json(Path(results_path), result)
        if report_path is not None:
            write_text(Path(report_path), gate_markdown(result))
    return result


def _summary_row(evaluation: dict[str, Any]) -> dict[str, Any]:
    stats = evaluation["stats"]
    return {
        "technique": evaluation["model"].get("technique"),
        "model_id": evaluation["model"].get("mlflow_model_id"),
        "accuracy": evaluation["accuracy"],
        "params": stats["params"],
        "macs": stats["macs"],
        "onnx_bytes": stats["onnx_bytes"],
        "gzip_bytes": stats["gzip_bytes"],
    }


def gate_markdown(result: dict[str, Any]) -> str:
    p, c = result["parent"], result["child"]
    rows = [
        [label, r["technique"], r["accuracy"], r["params"], r["macs"], r["onnx_bytes"], r["gzip_bytes"]]
        for label, r in (("parent", p), ("child", c))
    ]
    lines = [f"# Accuracy gate: **{result['verdict'].upper()}**", ""]
    lines += [f"- {r}" for r in result["reasons"]] or ["- passed every check"]
    lines += [
        "",
        markdown_table(
            ["model", "technique", "accuracy", "params", "MACs", "ONNX bytes", "gzip bytes"], rows
        ),
        "",
    ]
    lines += [
        markdown_table(
            ["device class", "emulated", "parent p50 ms", "child p50 ms", "speed-up", "faster"],
            [
                [k, v["emulated"], v["parent_p50_ms"], v["child_p50_ms"], v["speedup"], v["faster"]]
                for k, v in result["device_classes"].items()
            ],
        )
    ]
    if result.get("registered"):
        reg = result["registered"]
        lines += [
            "",
            f"Registered as `{reg['name']}` version {reg['version']} with aliases {', '.join(reg['aliases'])}.",
        ]
    return "\n".join(lines) + "\n"
