"""Datasets and the Dataset artifact: in memory (`base`: built-ins and single `.npz` files) or
streamed from shards (`sharded`: written from image folders and folders of `.npz` shards by
`folders`). Every consumer reads through `Dataset` (`batches`, `labels`, `take`, `sample`, `size`),
so training, calibration, evaluation and drift checks never need a streamed dataset whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgecompress.data.base import (
    BUILTIN_DATASETS,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    SELECTION_FRACTION,
    SPLITS,
    Dataset,
    DatasetSource,
    _stratified_split,
    content_digest,
    decision_range,
    load_digits,
    load_fashion_mnist,
    load_npz_artifact,
    load_source,
    load_user_npz,
    save_npz_artifact,
    selection_size,
    split_arrays,
    to_model_input,
)
from edgecompress.data.folders import (
    ImageTransform,
    is_image_folder,
    load_image,
    read_image_batch,
    write_image_folder,
    write_npz_shards,
)
from edgecompress.data.sharded import MANIFEST, ShardedDataset, copy_sharded, load_sharded
from edgecompress.io import atomic_path

__all__ = [
    "BUILTIN_DATASETS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "SELECTION_FRACTION",
    "SPLITS",
    "Dataset",
    "DatasetSource",
    "decision_range",
    "selection_size",
    "ImageTransform",
    "ShardedDataset",
    "_stratified_split",
    "split_arrays",
    "content_digest",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_image",
    "read_image_batch",
    "load_source",
    "load_user_npz",
    "save_dataset",
    "to_model_input",
    "write_dataset",
]


def load_dataset(path: Path) -> Dataset:
    """Open a Dataset artifact: a shard directory (streamed) or a single `.npz` (in memory)."""
    path = Path(path)
    return load_sharded(path) if path.is_dir() else load_npz_artifact(path)


def save_dataset(dataset: Dataset, path: Path) -> dict[str, Any]:
    """Write a dataset's artifact atomically (a sharded one is copied file by file); its metadata."""
    if isinstance(dataset, ShardedDataset):
        with atomic_path(Path(path), directory=True) as tmp:
            copy_sharded(dataset, tmp)
        return dataset.metadata()
    return save_npz_artifact(dataset, path)


def write_dataset(src: DatasetSource, output: Path, progress: bool = True) -> dict[str, Any]:
    """Resolve any source into a Dataset artifact at `output`: folders are streamed into shards
    (image folders decoded and transformed on the way), the rest is loaded and saved as one `.npz`."""
    src.validate()
    path = Path(src.source)
    if not src.source.startswith("s3://") and path.is_dir():
        if (path / MANIFEST).exists():
            return save_dataset(load_sharded(path), output)
        if is_image_folder(path):
            return write_image_folder(path, output, src, progress)
        return write_npz_shards(path, output, src, progress)
    return save_dataset(load_source(src.source, seed=src.seed), output)
