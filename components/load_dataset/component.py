"""KFP component: resolve a dataset source into a Dataset artifact (npz + metadata with sha256)."""

from kfp import dsl

from edgecompress.settings import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def load_dataset(
    dataset: dsl.Output[dsl.Dataset],
    source: str = "digits",
    seed: int = 0,
    pipeline_run_id: str = "",
    pipeline_name: str = "edge-compression",
    experiment: str = "edgecompress",
    track: bool = True,
):
    """Load `digits`, `fashion-mnist`, a `.npz` path or an `s3://` URI into a Dataset artifact."""
    from edgecompress.step import Lineage
    from edgecompress.steps import load_dataset_step

    meta = load_dataset_step(
        source, dataset.path, seed, Lineage(pipeline_run_id, pipeline_name, experiment, track)
    )
    dataset.metadata.update(
        {k: meta[k] for k in ("name", "source", "input_shape", "num_classes", "splits", "sha256")}
    )
