"""KFP component: knowledge distillation (Hinton soft targets, optional hint or attention-transfer feature loss)."""

from edgecompress.components import stamp_model
from edgecompress.components.factory import technique_component
from edgecompress.distill import DistillConfig, DistillStepOptions, distill_step
from edgecompress.params import build
from edgecompress.step import Lineage

# The component's settings: every flat field of these, with their defaults (edgecompress.params).
SURFACES = (
    DistillStepOptions,
    DistillConfig,
    Lineage,
)


def run(teacher, dataset, distilled_model, report, student=None, **settings) -> None:
    options = build(DistillStepOptions, settings)
    result = distill_step(
        teacher.path,
        dataset.path,
        student.path if student is not None else options.student_spec,
        distilled_model.path,
        build(DistillConfig, settings),
        options.compare_scratch,
        report.path,
        build(Lineage, settings),
        progress=False,
    )
    info = result.info
    stamp_model(distilled_model, result, teacher_model_id=info.get("teacher_model_id") or "")
    distilled_model.metadata["val_accuracy"] = info["distill"]["comparison"]["student, distilled"][
        "val_accuracy"
    ]


distill = technique_component(
    "distill",
    run,
    inputs={"teacher": "Model", "dataset": "Dataset"},
    outputs={"distilled_model": "Model", "report": "HTML"},
    optional_inputs={"student": "Model"},
    surfaces=SURFACES,
    doc="""The student is the `student` Model artifact (e.g. the pruned model: prune → distill) or, when
    none is connected, a fresh `student_spec` (zoo family, `module:factory` or JSON). Loss:
    alpha·T²·KL(teacher‖student at temperature T) + (1−alpha)·CE, plus feature_weight times the
    feature loss: `hint` (MSE between 1×1-projected student and teacher activations) or `attention`
    (attention transfer at matched stages; no adapter, so it fits a pruned student) on `feature_pairs`
    (auto or `s.layer=t.layer;…`).
    `compare_scratch` also trains the same student without the teacher (same epochs) for the report.""",
)
