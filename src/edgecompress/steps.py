"""Pipeline steps: each is one typed function that a KFP component and a CLI command both call.

A step checks its inputs and the tracking server first, does the work, writes its outputs
atomically, then records lineage in MLflow. A failure leaves no half-written output.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgecompress import __version__, lineage
from edgecompress.autotune import AutotuneConfig
from edgecompress.data import load_dataset, load_source, save_dataset
from edgecompress.errors import ConfigError
from edgecompress.evaluate import evaluate_model
from edgecompress.export import (
    ModelPackage,
    load_model_package,
    onnx_logits,
    save_model_package,
)
from edgecompress.io import write_json, write_text
from edgecompress.quantize import QuantConfig, check_against_parent, quantize_model
from edgecompress.reports import (
    confusion_matrix_png,
    html_page,
    html_table,
    latency_png,
    markdown_table,
    png_img_tag,
)
from edgecompress.step import Lineage, inherited_info, log_child, save_torch_child
from edgecompress.train import TrainConfig, fit
from edgecompress.zoo import build_model, parse_spec

log = logging.getLogger(__name__)


# --- load_dataset ---------------------------------------------------------------------------


def load_dataset_step(
    source: str, output_path: Path, seed: int = 0, lineage_ctx: Lineage | None = None
) -> dict[str, Any]:
    ctx = lineage_ctx or Lineage()
    ctx.check()
    dataset = load_source(source, seed=seed)
    meta = save_dataset(dataset, Path(output_path))
    with ctx.task("load-dataset", {"source": source, "seed": seed}):
        if ctx.enabled:
            lineage.log_dataset(meta, context="source")
    return meta


# --- train ------------------------------------------------------------------------------------


def train_step(
    dataset_path: Path,
    model_spec: str | dict[str, Any],
    output_dir: Path,
    config: TrainConfig,
    lineage_ctx: Lineage | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    ctx = lineage_ctx or Lineage()
    spec = parse_spec(model_spec)
    config.validate()
    ctx.check()
    dataset = load_dataset(Path(dataset_path))
    model = build_model(spec, dataset.input_shape, dataset.num_classes, seed=config.seed)
    params = {"model_spec": json.dumps(spec), **{f"train.{k}": v for k, v in asdict(config).items()}}
    with ctx.task("train", params):
        history = fit(model, dataset, config, description="train", progress=progress)
        info = {
            "spec": spec, "technique": "train", "input_shape": list(dataset.input_shape),
            "num_classes": dataset.num_classes, "class_names": dataset.class_names, "dataset_sha256": dataset.digest,
            "dataset_name": dataset.name, "parent_model_id": None, "train_config": asdict(config),
            "history": history.as_dict(),
        }  # fmt: skip
        package = save_torch_child(model, dataset, Path(output_dir), info)
        if ctx.enabled:
            lineage.log_dataset(dataset.metadata(), context="training")
            stored = lineage.log_dataset_artifact(Path(dataset_path), dataset.metadata())
            log_child(
                package, f"{dataset.name}-{spec.get('family') or 'user'}", "train", dataset, params,
                {"val_accuracy": history.final_val_accuracy, "export_max_abs_error": package.info["export_parity"]["max_abs_error"]},
                ctx, dataset_info={**dataset.metadata(), "uri": stored},
            )  # fmt: skip
    return package.info


# --- quantize ---------------------------------------------------------------------------------


def agreement(
    parent: ModelPackage, child_onnx: Path, dataset_path: Path, split: str = "val"
) -> dict[str, float]:
    """How closely a compressed model follows its parent on real data."""
    import numpy as np

    dataset = load_dataset(Path(dataset_path))
    x, y = dataset.split(split)
    a, b = onnx_logits(parent.onnx_path, x), onnx_logits(child_onnx, x)
    return {
        "top1_agreement": float(np.mean(a.argmax(1) == b.argmax(1))),
        "max_abs_logit_error": float(np.max(np.abs(a - b))),
        "parent_accuracy": float(np.mean(a.argmax(1) == y)),
        "accuracy": float(np.mean(b.argmax(1) == y)),
    }


def quantize_step(
    model_dir: Path,
    dataset_path: Path,
    output_dir: Path,
    config: QuantConfig,
    lineage_ctx: Lineage | None = None,
    device_class: str | None = "rpi4-emulated",
    bench_settings: dict[str, Any] | None = None,
    farm_url: str | None = None,
) -> dict[str, Any]:
    """Quantize with any method (static, dynamic, fp16, mixed, qat) and check the result against its
    parent: validation accuracy, top-1 agreement, max abs logit error, size and, with a device class,
    latency there."""
    ctx = lineage_ctx or Lineage()
    config.validate()
    ctx.check()
    parent = load_model_package(Path(model_dir))
    dataset = load_dataset(Path(dataset_path))
    module = parent.load_module() if config.method == "qat" else None
    technique = config.technique
    params = {f"quant.{k}": v for k, v in config.as_params().items()} | {"technique": technique}
    with ctx.task("quantize", params):
        proto, details = quantize_model(parent.onnx_path, dataset, config, module)
        with tempfile.TemporaryDirectory(prefix="edgecompress-quant-") as tmp:
            import onnx

            onnx_file = Path(tmp) / "model.onnx"
            onnx.save_model(proto, str(onnx_file))
            checks = check_against_parent(
                parent.onnx_path, onnx_file, dataset, "val", device_class, bench_settings, farm_url
            )
            info = {
                **inherited_info(parent.info),
                "technique": technique, "parent_model_id": parent.info.get("mlflow_model_id"),
                "quant_config": config.as_params(), "quant_details": details, "parent_agreement": checks,
                "package_version": __version__,
            }  # fmt: skip
            package = save_model_package(Path(output_dir), info, onnx_file)
        log_child(
            package,
            f"{info['dataset_name']}-{technique}",
            technique,
            dataset,
            params,
            {f"vs_parent.{k}": v for k, v in checks.items()},
            ctx,
        )
    return package.info


def autotune_step(
    model_dir: Path,
    dataset_path: Path,
    output_dir: Path,
    results_path: Path,
    config: AutotuneConfig,
    report_path: Path | None = None,
    markdown_path: Path | None = None,
    lineage_ctx: Lineage | None = None,
) -> dict[str, Any]:
    """Accuracy-aware auto-tuning (edgecompress.autotune): the picked model, the trials as JSON, and a
    report. A result that did not pass is still written, with `autotune.passed = false`."""
    from edgecompress.autotune import autotune, mlflow_trial_logger, report_html, report_markdown

    ctx = lineage_ctx or Lineage()
    config.validate()
    ctx.check()
    parent = load_model_package(Path(model_dir))
    dataset = load_dataset(Path(dataset_path))
    module = parent.load_module() if parent.has_module and config.include_qat else None
    params = {
        "objective": config.objective,
        "device_class": config.device_class,
        "max_drop": config.criterion.max_drop,
        "relative": config.criterion.relative,
        "min_gain": config.min_gain,
        "include_qat": config.include_qat,
        "parent_model_id": parent.info.get("mlflow_model_id"),
    }
    with ctx.task("autotune", params):
        with tempfile.TemporaryDirectory(prefix="edgecompress-autotune-") as tmp:
            hook = mlflow_trial_logger(ctx.pipeline_run_id) if ctx.enabled else None
            result = autotune(parent.onnx_path, dataset, config, module, Path(tmp), hook)
            pick = result["trials"][result["pick_index"]]
            technique = QuantConfig(
                **{k: v for k, v in pick["config"].items() if k != "nodes_to_exclude"}
            ).technique
            summary = {k: result[k] for k in ("passed", "pick", "criterion", "objective", "device_class")}
            summary["reasons"] = pick["reasons"]
            info = {
                **inherited_info(parent.info),
                "technique": technique, "parent_model_id": parent.info.get("mlflow_model_id"),
                "quant_config": pick["config"], "parent_agreement": pick["check"], "autotune": summary,
                "package_version": __version__,
            }  # fmt: skip
            result.pop("pick_path")
            package = save_model_package(Path(output_dir), info, Path(pick["path"]))
        for t in result["trials"]:
            t.pop("path", None)
        write_json(Path(results_path), result)
        if report_path is not None:
            write_text(Path(report_path), report_html(result))
        if markdown_path is not None:
            write_text(Path(markdown_path), report_markdown(result))
        model_id = log_child(
            package,
            f"{info['dataset_name']}-autotuned",
            technique,
            dataset,
            {**params, **{f"quant.{k}": v for k, v in pick["config"].items()}},
            {f"vs_parent.{k}": v for k, v in pick["check"].items()},
            ctx,
        )
        if model_id:
            lineage.set_model_tags(model_id, {"edgecompress.autotune.passed": str(result["passed"]).lower()})
    return {**package.info, "autotune_result": result}


# --- evaluate ---------------------------------------------------------------------------------


def evaluate_step(
    model_dir: Path,
    dataset_path: Path,
    results_path: Path,
    report_path: Path | None = None,
    split: str = "test",
    lineage_ctx: Lineage | None = None,
) -> dict[str, Any]:
    ctx = lineage_ctx or Lineage()
    ctx.check()
    package = load_model_package(Path(model_dir))
    dataset = load_dataset(Path(dataset_path))
    model_id = package.info.get("mlflow_model_id")
    with ctx.task(
        "evaluate", {"model_id": model_id, "split": split, "technique": package.info.get("technique")}
    ):
        evaluation = evaluate_model(package, dataset, split)
        result = {"model": package.info, **evaluation.as_dict()}
        if report_path is not None:
            write_text(Path(report_path), evaluation_report(result))
        write_json(Path(results_path), result)
        if ctx.enabled and model_id:
            stats = evaluation.stats.as_dict()
            lineage.log_model_metrics(model_id, {
                f"{split}_accuracy": evaluation.accuracy, "params": stats["params"], "macs": stats["macs"],
                "onnx_bytes": stats["onnx_bytes"], "gzip_bytes": stats["gzip_bytes"], "sparsity": stats["sparsity"],
                "latency_1thread_p50_ms": evaluation.latency_ms.get("p50", float("nan")),
            })  # fmt: skip
    return result


def evaluation_report(result: dict[str, Any]) -> str:
    stats = result["stats"]
    title = f"Evaluation: {result['model'].get('technique')} model on {result['split']} ({result['samples']} samples)"
    summary = html_table(
        ["accuracy", "params", "MACs", "ONNX bytes", "gzip bytes", "p50 ms (1 thread)", "p90 ms"],
        [
            [
                result["accuracy"],
                stats["params"],
                stats["macs"],
                stats["onnx_bytes"],
                stats["gzip_bytes"],
                result["latency_ms"].get("p50", float("nan")),
                result["latency_ms"].get("p90", float("nan")),
            ]
        ],
    )
    per_class = html_table(["class", "accuracy"], list(result["per_class_accuracy"].items()))
    cm = png_img_tag(
        confusion_matrix_png(result["confusion_matrix"], result["class_names"], "confusion matrix"),
        "confusion matrix",
    )
    return html_page(
        title, [("Summary", summary), ("Confusion matrix", cm), ("Per-class accuracy", per_class)]
    )


# --- edge benchmark ---------------------------------------------------------------------------


def edge_benchmark_step(
    model_dir: Path,
    device_classes: str | list[str],
    results_path: Path,
    report_path: Path | None = None,
    farm_url: str | None = None,
    settings: dict[str, Any] | None = None,
    timeout_s: float = 600.0,
    lineage_ctx: Lineage | None = None,
) -> dict[str, Any]:
    from edgecompress.edge import edge_benchmark

    ctx = lineage_ctx or Lineage()
    ctx.check()
    package = load_model_package(Path(model_dir))
    model_id = package.info.get("mlflow_model_id")
    with ctx.task(
        "edge-benchmark",
        {"model_id": model_id, "device_classes": device_classes, "farm_url": farm_url or "local"},
    ):
        results = edge_benchmark(package.onnx_path, device_classes, settings, farm_url, timeout_s)
        out = {"model": package.info, "results": results}
        if report_path is not None:
            write_text(Path(report_path), benchmark_report(out))
        write_json(Path(results_path), out)
        if ctx.enabled and model_id:
            lineage.log_benchmarks(model_id, results)
    return out


def benchmark_report(out: dict[str, Any]) -> str:
    results = out["results"]
    rows = [
        [
            cls,
            "emulated" if r.get("emulated") else "real",
            r.get("provider_used"),
            r["latency_ms"]["p50"],
            r["latency_ms"]["p90"],
            r["latency_ms"]["p99"],
            r["runs"],
            r["load_ms"],
            r["peak_rss_bytes"],
        ]
        for cls, r in results.items()
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
        latency_png({c: r["samples_ms"] for c, r in results.items()}, "latency per device class"),
        "latency distribution",
    )
    note = "<p>Emulated device classes run on this machine with the class's thread cap and CPU affinity; they are not real board figures.</p>"
    return html_page(
        f"Edge benchmark: {out['model'].get('technique')} model",
        [("Results", table + note), ("Latency", plot)],
    )


# --- accuracy gate ----------------------------------------------------------------------------


def gate_step(
    parent_eval_path: Path,
    child_eval_path: Path,
    parent_bench_path: Path,
    child_bench_path: Path,
    max_accuracy_drop: float,
    registered_model_name: str,
    results_path: Path,
    report_path: Path | None = None,
    min_speedup: float = 1.0,
    lineage_ctx: Lineage | None = None,
) -> dict[str, Any]:
    """Accept the child only if it keeps accuracy and is faster than its parent where it will run.

    The child is registered with an alias for each device class on which it passed; a child that
    fails is tagged rejected with the reason and not registered. A failed gate is a result, not an
    error: the run completes and says so.
    """
    if not 0 <= max_accuracy_drop < 1:
        raise ConfigError(f"max_accuracy_drop must be in [0, 1), got {max_accuracy_drop}")
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
        "verdict": verdict, "reasons": reasons, "accuracy_drop": drop, "max_accuracy_drop": max_accuracy_drop,
        "min_speedup": min_speedup, "accepted_device_classes": passed_classes, "device_classes": per_class,
        "parent": _summary_row(p_eval), "child": _summary_row(c_eval), "registered": None,
    }  # fmt: skip
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
