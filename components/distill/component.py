"""KFP component: knowledge distillation (Hinton soft targets, optional 1×1-projected feature loss)."""

from kfp import dsl

from edgecompress.distill import DistillConfig, DistillStepOptions
from edgecompress.settings import component_image
from edgecompress.step import Lineage

# The settings of this component, one definition each (tests/test_parameter_surfaces.py checks them).
SURFACES = (DistillStepOptions, DistillConfig, Lineage)


@dsl.component(base_image=component_image(), install_kfp_package=False)
def distill(
    teacher: dsl.Input[dsl.Model],
    dataset: dsl.Input[dsl.Dataset],
    distilled_model: dsl.Output[dsl.Model],
    report: dsl.Output[dsl.HTML],
    student: dsl.Input[dsl.Model] = None,
    student_spec: str = '{"family": "cnn", "kwargs": {"widths": [16, 32, 64], "depths": [1, 1, 1]}}',
    compare_scratch: bool = True,
    temperature: float = 4.0,
    alpha: float = 0.9,
    feature_weight: float = 0.0,
    feature_pairs: str = "auto",
    epochs: int = 5,
    batch_size: int = 128,
    lr: float = 0.001,
    weight_decay: float = 0.0001,
    seed: int = 0,
    augment: bool = False,
    label_smoothing: float = 0.0,
    max_train_samples: int = 0,
    pipeline_run_id: str = "",
    pipeline_name: str = "standalone",
    experiment: str = "edgecompress",
    track: bool = True,
):
    """The student is the `student` Model artifact (e.g. the pruned model: prune → distill) or, when
    none is connected, a fresh `student_spec` (zoo family, `module:factory` or JSON). Loss:
    alpha·T²·KL(teacher‖student at temperature T) + (1−alpha)·CE, plus feature_weight·MSE between
    1×1-projected student and teacher activations (`feature_pairs`: auto or `s.layer=t.layer;…`).
    `compare_scratch` also trains the same student without the teacher (same epochs) for the report."""
    from edgecompress.components import stamp_model
    from edgecompress.distill import DistillConfig, DistillStepOptions, distill_step
    from edgecompress.params import build
    from edgecompress.step import Lineage

    options = build(DistillStepOptions, locals())
    info = distill_step(teacher.path, dataset.path, student.path if student is not None else options.student_spec,
                        distilled_model.path, build(DistillConfig, locals()), options.compare_scratch, report.path,
                        build(Lineage, locals()), progress=False)  # fmt: skip
    stamp_model(distilled_model, info, teacher_model_id=info.get("teacher_model_id") or "")
    comparison = info["distill"]["comparison"]
    distilled_model.metadata["val_accuracy"] = comparison["student, distilled"]["val_accuracy"]
