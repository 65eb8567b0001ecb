"""KFP component: drift check of a new batch against the reference data in the model's lineage."""

from kfp import dsl

from edgecompress.settings import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def drift_check(
    batch: str,
    model: str,
    result: dsl.Output[dsl.Artifact],
    report: dsl.Output[dsl.HTML],
    retrain_dataset: dsl.Output[dsl.Dataset],
    alpha: float = 0.05,
    permutations: int = 200,
    reference_samples: int = 2000,
    seed: int = 0,
    prepare_retrain: bool = True,
) -> bool:
    """`batch`: a .npz path or s3:// URI (`x`, plus `y` to retrain); `model`: models:/NAME@ALIAS,
    models:/NAME/VERSION or a model id, in the MLflow server of MLFLOW_TRACKING_URI. The reference
    data is the Dataset artifact stored with the model's training run. Returns `drifted`. On drift
    (with `prepare_retrain`), `retrain_dataset` holds reference + new data, and `result` (JSON) names
    it under `retrain.source`, with the model spec and registered name to retrain under."""
    from edgecompress.drift import DriftConfig, drift_check_step

    config = DriftConfig(
        alpha=alpha, permutations=permutations, reference_samples=reference_samples, seed=seed
    )
    out = drift_check_step(
        batch,
        model,
        result.path,
        report.path,
        retrain_dataset.path if prepare_retrain else None,
        config,
        retrain_dataset.uri,
    )
    result.metadata.update(out["result_metadata"])
    retrain_dataset.metadata.update(out["retrain_dataset_metadata"])
    return bool(out["drifted"])


@dsl.component(base_image=component_image(), install_kfp_package=False)
def drift_retrain_field(result: dsl.Input[dsl.Artifact], field: str) -> str:
    """One field of drift_check's `retrain` plan (source, model_spec, registered_model_name), as a
    parameter for the retraining pipeline (kfp.local cannot pass NamedTuple outputs into dsl.If)."""
    from edgecompress.drift import retrain_plan_field

    return retrain_plan_field(result.path, field)
