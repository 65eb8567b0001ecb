"""The two sides of a drift check: the new batch, and the model with the data it was trained on.

A `Batch` comes from an `.npz` file or a folder of images (`load_batch`) and must match the reference data before any
test (`check_batch`): same sample shape and feature names, images in the training data's scale,
finite values, labels in range. The `Reference` is found through MLflow lineage
(`resolve_reference`): the dataset logged with the model's training run, verified by digest. Every
failure raises `DatasetError` before anything is written. `merge_for_retrain` builds the retraining
data: reference + labelled batch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress.data import SPLITS, Dataset, load_dataset, read_image_batch
from edgecompress.errors import DatasetError


@dataclass
class Batch:
    x: np.ndarray
    y: np.ndarray | None = None
    feature_names: list[str] | None = None
    source: str = ""
    images: Path | None = None  # a folder of images: decoded by `check_batch` with the data's transform


@dataclass
class Reference:
    """A model and the data it was trained on, resolved through lineage."""

    onnx_path: Path
    dataset: Dataset
    model_id: str | None
    model_spec: Any = None
    registered_name: str | None = None


def load_batch(path: Path | str) -> Batch:
    """A batch file: `.npz` with `x` (required), `y` (labels, needed to retrain) and, for tabular
    data, `feature_names`. An s3:// URI is downloaded first."""
    source = str(path)
    if source.startswith("s3://"):
        from edgecompress.storage import download_s3

        path = download_s3(source)
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"batch file {source} does not exist")
    if path.is_dir():
        return Batch(np.zeros((0,), np.uint8), source=source, images=path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:
        raise DatasetError(
            f"batch file {source} is not a readable .npz ({type(exc).__name__}: {exc})"
        ) from exc
    if "x" not in arrays:
        raise DatasetError(f"batch file {source} has no array 'x' (found: {sorted(arrays) or 'nothing'})")
    x = arrays["x"]
    if x.ndim == 0 or len(x) == 0:
        raise DatasetError(f"batch file {source} is empty: 'x' has shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DatasetError(f"batch file {source}: 'x' has non-numeric dtype {x.dtype}")
    y = arrays.get("y")
    if y is not None and len(y) != len(x):
        raise DatasetError(f"batch file {source}: 'x' has {len(x)} samples but 'y' has {len(y)}")
    names = [str(n) for n in arrays["feature_names"].tolist()] if "feature_names" in arrays else None
    return Batch(x, y, names, source)


def feature_names_of(dataset: Dataset) -> list[str]:
    """The dataset's feature names, or f0, f1, … where it records none."""
    names = dataset.extra.get("feature_names")
    n = int(np.prod(dataset.input_shape))
    return [str(v) for v in names] if names else [f"f{i}" for i in range(n)]


def check_batch(batch: Batch, dataset: Dataset) -> Batch:
    """The batch must look like the reference data: same sample shape, same feature names. A folder
    of images is decoded by the training data's recorded transform (resize, channels, normalisation)."""
    if batch.images is not None:
        if not dataset.transform:
            raise DatasetError(f"batch {batch.source} is a folder of images, but the training data was not")
        x, y = read_image_batch(batch.images, dataset.transform, dataset.class_names)
        batch = Batch(x, y, None, batch.source)
    shape = tuple(dataset.input_shape)
    if tuple(batch.x.shape[1:]) != shape:
        raise DatasetError(
            f"batch {batch.source}: samples have shape {tuple(batch.x.shape[1:])}, but the model's "
            f"training data {dataset.name!r} has samples of shape {shape}"
        )
    if dataset.dtype == np.uint8 and batch.x.dtype != np.uint8 and float(np.nanmax(batch.x)) > 1.0 + 1e-6:
        raise DatasetError(
            f"batch {batch.source}: float images must be scaled to [0, 1] like the training data "
            f"(max is {float(np.nanmax(batch.x)):.3g}); or pass uint8 pixels"
        )
    # The training data's recorded scaling and normalisation; uint8 values of float data stay as they are.
    x = (
        dataset.model_input(batch.x)
        if dataset.dtype == np.uint8 or batch.x.dtype != np.uint8
        else batch.x.astype(np.float32)
    )
    if not np.all(np.isfinite(x)):
        raise DatasetError(f"batch {batch.source}: 'x' contains NaN or infinite values")
    if len(shape) == 1 and batch.feature_names is not None:
        expected = feature_names_of(dataset)
        if batch.feature_names != expected:
            missing = [n for n in expected if n not in batch.feature_names]
            extra = [n for n in batch.feature_names if n not in expected]
            detail = (
                f"missing {missing}, unexpected {extra}"
                if missing or extra
                else "same names in another order"
            )
            raise DatasetError(
                f"batch {batch.source}: feature names differ from the training data's ({detail})"
            )
    if batch.y is not None:
        y = batch.y.astype(np.int64)
        if len(y) and (y.min() < 0 or y.max() >= dataset.num_classes):
            raise DatasetError(
                f"batch {batch.source}: labels must be in [0, {dataset.num_classes}), got "
                f"[{int(y.min())}, {int(y.max())}]"
            )
    return Batch(x, batch.y, batch.feature_names, batch.source)


def resolve_reference(model: str | Path, workdir: Path) -> Reference:
    """The model's ONNX file and its training data, found through MLflow lineage.

    `model` is a registry reference or model id, or a local Model artifact directory whose
    model.json carries its MLflow model id."""
    from edgecompress import lineage

    local = Path(str(model))
    info: dict[str, Any] = {}
    model_id = None
    registered = None
    if local.exists():
        from edgecompress.export import load_model_package

        package = load_model_package(local)
        info, onnx_path = package.info, package.onnx_path
        model_id = info.get("mlflow_model_id")
        if not model_id:
            raise DatasetError(
                f"model {local} has no dataset lineage: it was never logged to MLflow "
                "(no mlflow_model_id in its model.json), so its training data is unknown"
            )
        lineage.connect()
    else:
        client = lineage.connect()
        model_id = lineage.resolve_model_id(str(model), client)
        onnx_path = lineage.download_model_onnx(model_id, workdir / "model")
        if str(model).startswith("models:/") and not lineage.MODEL_ID_RE.match(str(model)[8:]):
            body = str(model)[len("models:/") :]
            registered = body.rsplit("@", 1)[0] if "@" in body else body.rsplit("/", 1)[0]
    location = lineage.dataset_location(model_id)
    data_path = lineage.download_dataset(location, workdir / "data")
    dataset = load_dataset(data_path)
    if dataset.digest != location["digest"]:
        raise DatasetError(
            f"dataset fetched for model {model_id} has digest {dataset.digest[:12]}…, but the "
            f"lineage records {location['digest'][:12]}…"
        )
    chain, _ = lineage.parent_chain(model_id)
    spec = (chain[0].params or {}).get("model_spec") if chain else None
    return Reference(
        Path(onnx_path), dataset, model_id, json.loads(spec) if spec else info.get("spec"), registered
    )


def reference_sample(dataset: Dataset, n: int, seed: int, held_out: bool) -> np.ndarray:
    """Held-out splits (val + test) for model-output tests; every split for raw-feature tests."""
    splits = ("val", "test") if held_out else SPLITS
    sizes = [dataset.size(s) for s in splits]
    total = sum(sizes)
    idx = (
        np.sort(np.random.default_rng(seed).choice(total, n, replace=False))
        if total > n
        else np.arange(total)
    )
    parts, start = [], 0
    for split, size in zip(splits, sizes, strict=True):  # only the drawn samples are read
        mine = idx[(idx >= start) & (idx < start + size)] - start
        parts.append(dataset.take(split, mine))
        start += size
    return np.concatenate(parts)


def merge_for_retrain(reference: Dataset, batch: Batch, seed: int = 0) -> Dataset:
    """Reference data plus the labelled new batch, the batch split 70/15/15 into train/val/test."""
    if batch.y is None:
        raise DatasetError(f"batch {batch.source} has no labels 'y': retraining needs labelled new data")
    if reference.streamed:
        raise DatasetError(
            f"retraining on a sharded dataset ({reference.source}) is not supported yet: add the new "
            "images to its folder and run `edgecompress dataset` and `train` on it"
        )
    x_new = batch.x
    if reference.arrays["x_train"].dtype == np.uint8:
        x_new = np.clip(np.round(x_new * 255.0), 0, 255).astype(np.uint8)
    x_new = x_new.astype(reference.arrays["x_train"].dtype)
    y_new = batch.y.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x_new))
    n_val, n_test = round(0.15 * len(order)), round(0.15 * len(order))
    parts = {"val": order[:n_val], "test": order[n_val : n_val + n_test], "train": order[n_val + n_test :]}
    arrays = {}
    for split in SPLITS:
        arrays[f"x_{split}"] = np.concatenate([reference.arrays[f"x_{split}"], x_new[parts[split]]])
        arrays[f"y_{split}"] = np.concatenate([reference.arrays[f"y_{split}"], y_new[parts[split]]])
    extra = {**reference.extra, "derived_from": reference.digest, "added_samples": int(len(x_new))}
    return Dataset(
        reference.name, f"{reference.source} + {batch.source}", arrays, reference.class_names, extra
    )
