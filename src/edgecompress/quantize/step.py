"""The quantize and autotune steps: a Model artifact in, a quantized Model artifact out, checked
against its parent and logged with its lineage (edgecompress.step)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from edgecompress import __version__, lineage
from edgecompress.data import load_dataset
from edgecompress.edge import Measurement
from edgecompress.export import load_model_package, save_model_package
from edgecompress.io import write_json
from edgecompress.quantize.autotune import AutotuneConfig
from edgecompress.quantize.check import check_against_parent
from edgecompress.quantize.config import QuantConfig
from edgecompress.quantize.methods import quantize_model
from edgecompress.step import Lineage, inherited_info, log_child, write_report


def quantize_step(
    model_dir: Path,
    dataset_path: Path,
    output_dir: Path,
    config: QuantConfig,
    lineage_ctx: Lineage | None = None,
    measurement: Measurement | None = None,
) -> dict[str, Any]:
    """Quantize with any method (static, dynamic, fp16, mixed, qat) and check the result against its
    parent: validation accuracy, top-1 agreement, max abs logit error, size and, with a measurement
    (a device class), latency there."""
    ctx = lineage_ctx or Lineage()
    config.validate()
    config = config.resolved()  # recorded as decided for its target
    if measurement is not None and not measurement.device_class:
        measurement = None  # an empty device class: no latency check
    if measurement is not None:
        measurement.validate()
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
            checks = check_against_parent(parent.onnx_path, onnx_file, dataset, "val", measurement)
            info = {
                **inherited_info(parent.info),
                "technique": technique,
                "parent_model_id": parent.info.get("mlflow_model_id"),
                "quant_config": config.as_params(),
                "quant_details": details,
                "parent_agreement": checks,
                "package_version": __version__,
            }
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
    from edgecompress.quantize.autotune import autotune, mlflow_trial_logger, report_html, report_markdown

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
                "technique": technique,
                "parent_model_id": parent.info.get("mlflow_model_id"),
                "quant_config": pick["config"],
                "parent_agreement": pick["check"],
                "autotune": summary,
                "package_version": __version__,
            }
            result.pop("pick_path")
            package = save_model_package(Path(output_dir), info, Path(pick["path"]))
        for t in result["trials"]:
            t.pop("path", None)
        write_json(Path(results_path), result)
        if report_path is not None:
            write_report(report_path, report_html(result))
        if markdown_path is not None:
            write_report(markdown_path, report_markdown(result))
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
