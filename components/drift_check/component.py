"""KFP component: drift check of a new batch against the reference data in the model's lineage."""

from kfp import dsl

from edgecompress.components.factory import technique_component
from edgecompress.drift import DriftCheckOptions, DriftConfig, drift_check_step
from edgecompress.params import build
from edgecompress.settings import component_image

# The component's settings: every flat field of these, with their defaults (edgecompress.params).
SURFACES = (
    DriftConfig,
    DriftCheckOptions,
)


def run(batch, model, result, report, retrain_dataset, **settings) -> bool:
    prepare = build(DriftCheckOptions, settings).prepare_retrain
    out = drift_check_step(
        batch,
        model,
        result.path,
        report.path,
        retrain_dataset.path if prepare else None,
        build(DriftConfig, settings),
        retrain_dataset.uri,
    )
    result.metadata.update(out["result_metadata"])
    retrain_dataset.metadata.update(out["retrain_dataset_metadata"])
    return bool(out["drifted"])


drift_check = technique_component(
    "drift_check",
    run,
    data={"batch": "str", "model": "str"},
    outputs={"result": "Artifact", "report": "HTML", "retrain_dataset": "Dataset"},
    surfaces=SURFACES,
    returns="bool",
    doc="""`batch`: a .npz path or s3:// URI (`x`, plus `y` to retrain); `model`: models:/NAME@ALIAS,
    models:/NAME/VERSION or a model id, in the MLflow server of MLFLOW_TRACKING_URI. The reference
    data is the Dataset artifact stored with the model's training run. Returns `drifted`. On drift
    (with `prepare_retrain`), `retrain_dataset` holds reference + new data, and `result` (JSON) names
    it under `retrain.source`, with the model spec and registered name to retrain under.""",
)


def drift_retrain_field(result: dsl.Input[dsl.Artifact], field: str) -> str:
    """One field of drift_check's `retrain` plan (source, model_spec, registered_model_name), as a
    parameter for the retraining pipeline (kfp.local cannot pass NamedTuple outputs into dsl.If)."""
    from edgecompress.drift import retrain_plan_field

    return retrain_plan_field(result.path, field)


# Inside a running task KFP loads only its runtime (no decorator); the task imports this module for `run`.
if hasattr(dsl, "component"):
    drift_retrain_field = dsl.component(base_image=component_image(), install_kfp_package=False)(
        drift_retrain_field
    )
