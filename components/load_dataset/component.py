"""KFP component: resolve a dataset source into a Dataset artifact (npz + metadata with sha256)."""

from edgecompress.components.factory import technique_component
from edgecompress.data import DatasetSource
from edgecompress.params import build
from edgecompress.step import Lineage
from edgecompress.train import load_dataset_step

# The component's settings: every flat field of these, with their defaults (edgecompress.params).
SURFACES = (
    DatasetSource,
    Lineage,
)


def run(dataset, **settings) -> None:
    meta = load_dataset_step(build(DatasetSource, settings), dataset.path, build(Lineage, settings))
    dataset.metadata.update(
        {k: meta[k] for k in ("name", "source", "input_shape", "num_classes", "splits", "sha256")}
    )


load_dataset = technique_component(
    "load_dataset",
    run,
    outputs={"dataset": "Dataset"},
    surfaces=SURFACES,
    doc="""Load `digits`, `fashion-mnist`, a `.npz` path or an `s3://` URI into a Dataset artifact, or
stream an image folder or a folder of `.npz` shards into a sharded one (a directory).""",
)
