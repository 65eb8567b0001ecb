"""The quantize and autotune steps: a Model artifact in, a quantized Model artifact out, checked
against its parent and logged with its lineage (edgecompress.step)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgecompress.edge import Measurement
from edgecompress.io import write_json
from edgecompress.quantize.autotune import AutotuneConfig
from edgecompress.quantize.check import check_against_parent
from edgecompress.quantize.config import QuantConfig
from edgecompress.quantize.methods import quantize_model
from edgecompress.step import Child, Lineage, Parent, StepInputs, StepResult, run_step, write_report


def quantize_step(
    model_dir: Path,
    dataset_path: Path,
    output_dir: Path,
    config: QuantConfig,
    lineage_ctx: Lineage | None = None,
    measurement: Measurement | None = None,
) -> StepResult:
    """Quantize with any method (static, dynamic, fp16, mixed, qat) and check the result against its
    parent: validation accuracy, top-1 agreement, max abs logit error, size and, with a measurement
    (a device class), latency there. The config is validated once (by the runner) and recorded as
    decided for its target (`QuantConfig.resolved`)."""
    import onnx

    config.validate()  # before resolving: an unknown target is named as such
    config = config.resolved()
    if measurement is not None and not measurement.device_class:
        measurement = None  # an empty device class: no latency check
    module: dict[str, Any] = {}

    def prepare(inputs: StepInputs) -> None:
        if measurement is not None:
            measurement.validate()
        if config.method == "qat":
            module["float"] = inputs.packages["model"].load_module()

    def make(inputs: StepInputs) -> Child:
        parent = inputs.packages["model"]
        proto, details = quantize_model(parent.onnx_path, inputs.dataset, config, module.get("float"))
        onnx_file = inputs.workdir / "model.onnx"
        onnx.save_model(proto, str(onnx_file))
        checks = check_against_parent(parent.onnx_path, onnx_file, inputs.dataset, "val", measurement)
        info = {"quant_config": config.as_params(), "quant_details": details, "parent_agreement": checks}
        return Child(
            onnx_path=onnx_file,
            info=info,
            metrics={f"vs_parent.{k}": v for k, v in checks.items()},
            name=f"{parent.info.get('dataset_name')}-{config.technique}",
        )

    return run_step(
        "quantize",
        config,
        dataset_path,
        output_dir,
        make,
        parents={"model": Parent(model_dir, torch=False)},
        lineage_ctx=lineage_ctx,
        prepare=prepare,
        technique=config.technique,
    )


def autotune_step(
    model_dir: Path,
    dataset_path: Path,
    output_dir: Path,
    results_path: Path,
    config: AutotuneConfig,
    report_path: Path | None = None,
    markdown_path: Path | None = None,
    lineage_ctx: Lineage | None = None,
) -> StepResult:
    """Accuracy-aware auto-tuning (edgecompress.autotune): the picked model, the trials as JSON, and a
    report. A result that did not pass is still written, with `autotune.passed = false`.
    `StepResult.extra["autotune_result"]`: every trial and the pick."""
    from edgecompress.quantize.autotune import autotune, mlflow_trial_logger, report_html, report_markdown

    ctx = lineage_ctx or Lineage()
    module: dict[str, Any] = {}

    def prepare(inputs: StepInputs) -> dict[str, Any]:
        parent = inputs.packages["model"]
        if parent.has_module and config.include_qat:
            module["float"] = parent.load_module()
        return {"parent_model_id": parent.info.get("mlflow_model_id")}

    def make(inputs: StepInputs) -> Child:
        parent = inputs.packages["model"]
        hook = mlflow_trial_logger(ctx.pipeline_run_id) if inputs.run_id else None
        result = autotune(parent.onnx_path, inputs.dataset, config, module.get("float"), inputs.workdir, hook)
        pick = result["trials"][result["pick_index"]]
        technique = QuantConfig(
            **{k: v for k, v in pick["config"].items() if k != "nodes_to_exclude"}
        ).technique
        summary = {k: result[k] for k in ("passed", "pick", "criterion", "objective", "device_class")}
        summary["reasons"] = pick["reasons"]
        onnx_file = Path(pick["path"])
        result.pop("pick_path")
        for t in result["trials"]:
            t.pop("path", None)

        def finish(package, made: Child) -> None:
            write_json(Path(results_path), result)
            if report_path is not None:
                write_report(report_path, report_html(result))
            if markdown_path is not None:
                write_report(markdown_path, report_markdown(result))

        return Child(
            onnx_path=onnx_file,
            info={"quant_config": pick["config"], "parent_agreement": pick["check"], "autotune": summary},
            metrics={f"vs_parent.{k}": v for k, v in pick["check"].items()},
            technique=technique,
            name=f"{parent.info.get('dataset_name')}-autotuned",
            params={f"quantize.{k}": v for k, v in pick["config"].items()},
            tags={"edgecompress.autotune.passed": str(result["passed"]).lower()},
            extra={"autotune_result": result},
            finish=finish,
        )

    return run_step(
        "autotune",
        config,
        dataset_path,
        output_dir,
        make,
        parents={"model": Parent(model_dir, torch=False)},
        lineage_ctx=ctx,
        prepare=prepare,
    )
