"""KFP component: resolve a dataset source into a Dataset artifact (npz + metadata with sha256)."""

from kfp import dsl

from edgecompress.data import DatasetSource
from edgecompress.settings import component_image
from edgecompress.step import Lineage

# The settings of this component, one definition each (tests/test_parameter_surfaces.py checks them).
SURFACES = (
    DatasetSource,
    Lineage,
)


@dsl.component(base_image=component_image(), install_kfp_package=False)
def load_dataset(
    dataset: dsl.Output[dsl.Dataset],
    source: str = "digits",
    seed: int = 0,
    pipeline_run_id: str = "",
    pipeline_name: str = "standalone",
    experiment: str = "edgecompress",
    track: bool = True,
):
    """Load `digits`, `fashion-mnist`, a `.npz` path or an `s3://` URI into a Dataset artifact."""
    from edgecompress.data import DatasetSource
    from edgecompress.params import build
    from edgecompress.step import Lineage
    from edgecompress.train import load_dataset_step

    src = build(DatasetSource, locals())
    meta = load_dataset_step(src.source, dataset.path, src.seed, build(Lineage, locals()))
    dataset.metadata.update(
        {k: meta[k] for k in ("name", "source", "input_shape", "num_classes", "splits", "sha256")}
    )
