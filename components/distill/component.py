"""KFP component: knowledge distillation (Hinton soft targets, optional 1×1-projected feature loss)."""

from kfp import dsl

from edgecompress.settings import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def distill(
    teacher: dsl.Input[dsl.Model],
    dataset: dsl.Input[dsl.Dataset],
    distilled_model: dsl.Output[dsl.Model],
    report: dsl.Output[dsl.HTML],
    student: dsl.Input[dsl.Model] = None,
    student_spec: str = "",
    temperature: float = 4.0,
    alpha: float = 0.9,
    feature_weight: float = 0.0,
    feature_pairs: str = "auto",
    epochs: int = 5,
    batch_size: int = 128,
    lr: float = 1e-3,
    augment: bool = False,
    compare_scratch: bool = True,
    seed: int = 0,
    pipeline_run_id: str = "",
    pipeline_name: str = "edge-compression",
    experiment: str = "edgecompress",
    track: bool = True,
):
    """The student is the `student` Model artifact (e.g. the pruned model: prune → distill) or, when
    none is connected, a fresh `student_spec` (zoo family, `module:factory` or JSON). Loss:
    alpha·T²·KL(teacher‖student at temperature T) + (1−alpha)·CE, plus feature_weight·MSE between
    1×1-projected student and teacher activations (`feature_pairs`: auto or `s.layer=t.layer;…`).
    `compare_scratch` also trains the same student without the teacher (same epochs) for the report."""
    from edgecompress.distill import distill_config, distill_step
    from edgecompress.errors import ConfigError
    from edgecompress.step import Lineage

    if student is None and not student_spec:
        raise ConfigError("distill needs a student: connect a `student` Model artifact or set `student_spec`")
    config = distill_config(
        temperature=temperature,
        alpha=alpha,
        feature_weight=feature_weight,
        feature_pairs=feature_pairs,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        augment=augment,
        seed=seed,
    )
    info = distill_step(
        teacher.path,
        dataset.path,
        student.path if student is not None else student_spec,
        distilled_model.path,
        config,
        compare_scratch,
        report.path,
        Lineage(pipeline_run_id, pipeline_name, experiment, track),
        progress=False,
    )
    distilled_model.metadata.update(
        {k: info.get(k) for k in ("technique", "params", "onnx_bytes", "onnx_sha256", "dataset_sha256")}
    )
    distilled_model.metadata["mlflow_model_id"] = info.get("mlflow_model_id") or ""
    distilled_model.metadata["parent_model_id"] = info.get("parent_model_id") or ""
    distilled_model.metadata["teacher_model_id"] = info.get("teacher_model_id") or ""
    comparison = info["distill"]["comparison"]
    distilled_model.metadata["val_accuracy"] = comparison["student, distilled"]["val_accuracy"]
