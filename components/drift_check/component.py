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
    import json
    from pathlib import Path

    from edgecompress.drift import DriftConfig, drift_check_step
    from edgecompress.io import write_json

    config = DriftConfig(
        alpha=alpha, permutations=permutations, reference_samples=reference_samples, seed=seed
    )
    out = drift_check_step(
        batch, model, result.path, report.path, retrain_dataset.path if prepare_retrain else None, config
    )
    source = ""
    if out["retrain_dataset_digest"]:
        uri = retrain_dataset.uri
        source = "s3://" + uri[len("minio://") :] if uri.startswith("minio://") else uri
        if not source.startswith("s3://"):
            source = retrain_dataset.path
        retrain_dataset.metadata.update(
            {"sha256": out["retrain_dataset_digest"], "name": out["dataset"]["name"]}
        )
    saved = json.loads(Path(result.path).read_text())
    saved["retrain"] = {
        "source": source,
        "model_spec": out["model_spec"],
        "registered_model_name": out["registered_model_name"],
    }
    write_json(Path(result.path), saved)
    result.metadata.update(
        {
            "drifted": out["drifted"],
            "score": out["score"],
            "p_value": out["p_value"],
            "kind": out["kind"],
            "model_id": out["model_id"] or "",
        }
    )
    return bool(out["drifted"])


@dsl.component(base_image=component_image(), install_kfp_package=False)
def drift_retrain_field(result: dsl.Input[dsl.Artifact], field: str) -> str:
    """One field of drift_check's `retrain` plan (source, model_spec, registered_model_name), as a
    parameter for the retraining pipeline (kfp.local cannot pass NamedTuple outputs into dsl.If)."""
    import json
    from pathlib import Path

    return str(json.loads(Path(result.path).read_text())["retrain"][field])
