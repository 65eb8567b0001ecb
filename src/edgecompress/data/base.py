"""In-memory datasets and the single-file Dataset artifact.

A dataset artifact is either a directory of shards (`edgecompress.data.sharded`, streamed) or one
`.npz` file holding `x_train, y_train, x_val, y_val, x_test, y_test` and a
`meta` JSON string (name, source, input shape, classes, per-split sizes, content digest). The digest
is a sha256 over the arrays themselves, so it identifies the data whatever the zip container's
timestamps, and a corrupt or edited file is caught when it is loaded.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress.errors import ConfigError, DatasetError
from edgecompress.io import atomic_path

SPLITS = ("train", "val", "test")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
BUILTIN_DATASETS = ("digits", "fashion-mnist")
# Validation is used twice: to choose (calibration checks, autotune and mixed-precision trials, pruning
# sensitivity and budgets, NAS ranking) and to decide (the gate, the target-ISA check, promotion). An
# interval on images that also chose the child is optimistic, so the first SELECTION_FRACTION of the
# validation split is the selection part and the gate decides on the rest (`decision_range`).
SELECTION_FRACTION = 0.3


def selection_size(val_size: int) -> int:
    """How many leading validation images the choosing steps may look at."""
    return int(val_size * SELECTION_FRACTION)


def decision_range(split: str, size: int) -> range:
    """The images of `split` a decision uses: validation past its selection part, or all of test."""
    return range(selection_size(size) if split == "val" else 0, size)


@dataclass
class DatasetSource:
    """Where a Dataset artifact comes from, and the seed of its train/val/test split."""

    source: str = field(
        default="digits",
        metadata={
            "help": "digits, fashion-mnist, a .npz path, an s3:// URI, an image folder (one folder per "
            "class) or a folder of .npz shards"
        },
    )
    seed: int = field(default=0, metadata={"help": "seed of the stratified train/val/test split"})
    image_size: str = field(
        default="",
        metadata={
            "help": "image folders: resize every image to HEIGHTxWIDTH (e.g. 32x32); empty: keep the "
            "size, which all images must then share"
        },
    )
    image_channels: int = field(
        default=0,
        metadata={"help": "image folders: 1 (grayscale) or 3 (RGB); 0: as the first image, all must match"},
    )
    image_mean: str = field(
        default="", metadata={"help": "per-channel mean subtracted after scaling to [0, 1] (e.g. 0.5)"}
    )
    image_std: str = field(default="", metadata={"help": "per-channel std divided by after the mean"})
    class_names: str = field(
        default="",
        metadata={
            "help": "explicit comma-separated class list (label i is the i-th name): a folder or label "
            "not in it is an error, a class may be empty; empty: the sorted class folders, or labels "
            "0..C-1 with every class present"
        },
    )
    val_fraction: float = field(
        default=0.15,
        metadata={"help": "image folders / shards without a val split: share of samples put in val"},
    )
    test_fraction: float = field(
        default=0.15,
        metadata={"help": "image folders / shards without a test split: share of samples put in test"},
    )
    shard_samples: int = field(
        default=0, metadata={"help": "samples per written shard; 0: about 4 MiB of pixels each"}
    )

    def validate(self) -> None:
        for name in ("val_fraction", "test_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError("val_fraction + test_fraction must leave samples for training")
        if self.image_channels not in (0, 1, 3):
            raise ConfigError(f"image_channels must be 0, 1 or 3, got {self.image_channels}")
        if self.shard_samples < 0:
            raise ConfigError(f"shard_samples must be ≥ 0, got {self.shard_samples}")


@dataclass
class Dataset:
    """Images as uint8 (scaled to [0, 1] floats on use) or float32, labels as int64."""

    name: str
    source: str
    arrays: dict[str, np.ndarray]
    class_names: list[str]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.arrays["x_train"].shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # An in-memory dataset; `ShardedDataset` streams from disk and sets this True.
    streamed = False

    @property
    def transform(self) -> dict[str, Any] | None:
        """The recorded input transform (image size, channels, mean/std), None for plain [0, 1] scaling."""
        return self.extra.get("transform")

    def model_input(self, x: np.ndarray) -> np.ndarray:
        """Stored samples as the model takes them: [0, 1] floats, normalised by the recorded transform."""
        return to_model_input(x, self.transform)

    def split(self, name: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Model-ready (float32 inputs, int64 labels) for one split, all in memory: for bounded use
        (a `limit`) or small data; `batches` streams."""
        _check_split(name)
        x, y = self.arrays[f"x_{name}"], self.arrays[f"y_{name}"]
        if limit is not None:
            x, y = x[:limit], y[:limit]
        return self.model_input(x), y.astype(np.int64)

    def size(self, name: str) -> int:
        _check_split(name)
        return int(len(self.arrays[f"y_{name}"]))

    def labels(self, name: str, limit: int | None = None) -> np.ndarray:
        """The labels of a split (small next to the inputs, so always in memory)."""
        _check_split(name)
        return self.arrays[f"y_{name}"][:limit].astype(np.int64)

    def batches(
        self, name: str, batch_size: int, limit: int | None = None, shuffle: bool = False, seed: int = 0
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Model-ready (x, y) batches of the first `limit` samples of a split, in stored order or
        (`shuffle`) a seeded permutation."""
        _check_split(name)
        n = self.size(name) if limit is None else min(limit, self.size(name))
        x, y = self.arrays[f"x_{name}"], self.arrays[f"y_{name}"]
        order = np.random.default_rng(seed).permutation(n) if shuffle else None
        for i in range(0, n, batch_size):
            idx = slice(i, min(n, i + batch_size)) if order is None else order[i : i + batch_size]
            yield self.model_input(x[idx]), y[idx].astype(np.int64)

    def take(self, name: str, indices: np.ndarray) -> np.ndarray:
        """Model-ready inputs of the samples at sorted `indices` of a split."""
        _check_split(name)
        return self.model_input(self.arrays[f"x_{name}"][np.asarray(indices, dtype=np.int64)])

    def sample(self, name: str, n: int, seed: int) -> np.ndarray:
        """A seeded draw of at most `n` inputs of a split, without replacement, in stored order."""
        size = self.size(name)
        idx = np.sort(np.random.default_rng(seed).choice(size, size=min(n, size), replace=False))
        return self.take(name, idx)

    @property
    def digest(self) -> str:
        return content_digest(self.arrays)

    @property
    def dtype(self) -> np.dtype:
        """How inputs are stored (uint8 images, or floats taken as they are)."""
        return self.arrays["x_train"].dtype

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "splits": {s: self.size(s) for s in SPLITS},
            "dtype": str(self.dtype),
            "sha256": self.digest,
            **self.extra,
        }


def _check_split(name: str) -> None:
    if name not in SPLITS:
        raise DatasetError(f"unknown split {name!r}; expected one of {SPLITS}")


def to_model_input(x: np.ndarray, transform: dict[str, Any] | None = None) -> np.ndarray:
    """uint8 images become [0, 1] floats; float data is taken as already scaled. A transform's
    per-channel mean/std then normalise channel axis 1 (recorded with the data, so training,
    evaluation, drift checks and inference apply the same)."""
    normalise = bool(transform and (transform.get("mean") or transform.get("std")))
    # Float data is used as it is, copied only if the normalisation would change it.
    out = x.astype(np.float32, copy=x.dtype == np.uint8 or normalise)
    return scale_in_place(out, x.dtype, transform)


def scale_in_place(out: np.ndarray, stored: np.dtype, transform: dict[str, Any] | None) -> np.ndarray:
    """`to_model_input` on `out`, float32 samples cast from `stored` ones, without a second array."""
    if stored == np.uint8:
        np.divide(out, np.float32(255.0), out=out)
    if transform and (transform.get("mean") or transform.get("std")):
        shape = (1, -1) + (1,) * (out.ndim - 2)
        out -= np.asarray(transform.get("mean") or [0.0], dtype=np.float32).reshape(shape)
        out /= np.asarray(transform.get("std") or [1.0], dtype=np.float32).reshape(shape)
    return out


def content_digest(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over each array's name, dtype, shape and C-order bytes; a contiguous array is hashed
    through its buffer, not copied (`tobytes` would double a shard's memory while it is checked)."""
    h = hashlib.sha256()
    for key in sorted(arrays):
        arr = np.ascontiguousarray(arrays[key])
        h.update(f"{key}:{arr.dtype.str}:{arr.shape}".encode())
        h.update(arr.reshape(-1).view(np.uint8))
    return h.hexdigest()


def _stratified_split(
    y: np.ndarray, fractions: tuple[float, float], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices for train/val/test keeping class proportions; deterministic for a seed."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[], [], []]
    for cls in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == cls))
        n_val, n_test = round(len(idx) * fractions[0]), round(len(idx) * fractions[1])
        parts[1] += idx[:n_val].tolist()
        parts[2] += idx[n_val : n_val + n_test].tolist()
        parts[0] += idx[n_val + n_test :].tolist()
    return tuple(np.sort(np.array(p, dtype=np.int64)) for p in parts)  # type: ignore[return-value]


def split_arrays(
    x: np.ndarray, y: np.ndarray, train: np.ndarray, val: np.ndarray, test: np.ndarray
) -> dict[str, np.ndarray]:
    """The six split arrays of a Dataset from one `x`/`y` and the index arrays of its three splits."""
    return {
        "x_train": x[train],
        "y_train": y[train],
        "x_val": x[val],
        "y_val": y[val],
        "x_test": x[test],
        "y_test": y[test],
    }


def load_digits(seed: int = 0) -> Dataset:
    """sklearn's 8×8 digits (1,797 images, ships with scikit-learn): the embedded default."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    # 40/45/15: validation is large enough that its decision part (~566 images) can resolve the gate's
    # default 1-point rule (at least `edgecompress.stats.min_decision_images(0.01)` = 381 images)
    tr, va, te = _stratified_split(y, (0.45, 0.15), seed)
    arrays = split_arrays(x, y, tr, va, te)
    return Dataset("digits", "sklearn.datasets.load_digits", arrays, [str(i) for i in range(10)])


def _read_idx(path: Path) -> np.ndarray:
    if not path.exists():
        raise DatasetError(
            f"Fashion-MNIST file {path} is missing; install Debian's dataset-fashion-mnist package "
            "(scripts/system-deps.sh does) or pass --fashion-mnist-dir"
        )
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
        (magic,) = struct.unpack(">I", data[:4])
        ndim = magic & 0xFF
        dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
        arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
        return arr.reshape(dims)
    except (OSError, EOFError, ValueError, struct.error) as exc:
        raise DatasetError(f"Fashion-MNIST file {path} is corrupt: {exc}") from exc


def load_fashion_mnist(directory: Path = FASHION_MNIST_DIR, val_size: int = 5000, seed: int = 0) -> Dataset:
    """The full 60k/10k Fashion-MNIST; the last `val_size` of a seeded shuffle of train is validation."""
    x_tr = _read_idx(directory / "train-images-idx3-ubyte.gz")[:, None]
    y_tr = _read_idx(directory / "train-labels-idx1-ubyte.gz").astype(np.int64)
    x_te = _read_idx(directory / "t10k-images-idx3-ubyte.gz")[:, None]
    y_te = _read_idx(directory / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    if len(x_tr) != len(y_tr) or len(x_te) != len(y_te):
        raise DatasetError(f"Fashion-MNIST in {directory}: image and label counts differ")
    order = np.random.default_rng(seed).permutation(len(x_tr))
    tr, va = np.sort(order[:-val_size]), np.sort(order[-val_size:])
    arrays = {
        "x_train": x_tr[tr],
        "y_train": y_tr[tr],
        "x_val": x_tr[va],
        "y_val": y_tr[va],
        "x_test": x_te,
        "y_test": y_te,
    }
    return Dataset("fashion-mnist", str(directory), arrays, list(FASHION_MNIST_CLASSES))


def load_user_npz(path: Path, seed: int = 0) -> Dataset:
    """A user's `.npz`: either our six split arrays, or `x`/`y` that are split 70/15/15 here.

    Labels must be the integers 0..C-1 with every class present, unless the file's `meta` gives
    `class_names` (then any label below their count is allowed): labels {12} are an error, not a
    13-class dataset with 12 empty classes."""
    arrays = _read_npz(path)
    meta = arrays.pop("meta", None)
    if {"x", "y"} <= arrays.keys():
        x, y = arrays["x"], arrays["y"]
        _check_labels(y, "y", str(path))
        tr, va, te = _stratified_split(y, (0.15, 0.15), seed)
        y = y.astype(np.int64)
        arrays = split_arrays(x, y, tr, va, te)
    info = json.loads(str(meta)) if meta is not None else {}
    class_names = info.get("class_names")
    _check_arrays(arrays, str(path), class_names)
    _check_channel_axis(arrays["x_train"].shape[1:], str(path), info.get("sample_layout"))
    if not class_names:
        n_classes = int(max(int(arrays[f"y_{s}"].max()) for s in SPLITS) + 1)
        class_names = [str(i) for i in range(n_classes)]
    return Dataset(info.get("name", path.stem), str(path), arrays, class_names)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise DatasetError(f"dataset file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError, EOFError …
        raise DatasetError(
            f"dataset file {path} is not a readable .npz ({type(exc).__name__}: {exc})"
        ) from exc


def _check_arrays(arrays: dict[str, np.ndarray], where: str, class_names: list[str] | None = None) -> None:
    """Shapes, lengths, finite inputs and labels that name a class; `class_names` None: the labels
    themselves must be 0..C-1 with none missing."""
    missing = [f"{p}_{s}" for s in SPLITS for p in ("x", "y") if f"{p}_{s}" not in arrays]
    if missing:
        raise DatasetError(f"dataset {where} lacks arrays {missing}; expected x/y or x_train…y_test")
    shapes = {arrays[f"x_{s}"].shape[1:] for s in SPLITS}
    if len(shapes) != 1:
        raise DatasetError(f"dataset {where}: splits have different sample shapes {sorted(shapes)}")
    for s in SPLITS:
        if len(arrays[f"x_{s}"]) != len(arrays[f"y_{s}"]):
            raise DatasetError(f"dataset {where}: x_{s} and y_{s} have different lengths")
        if len(arrays[f"y_{s}"]) == 0:
            raise DatasetError(f"dataset {where}: split {s!r} is empty")
        _check_finite(arrays[f"x_{s}"], f"x_{s}", where)
        _check_labels(arrays[f"y_{s}"], f"y_{s}", where)
    present = np.unique(np.concatenate([np.unique(arrays[f"y_{s}"]) for s in SPLITS])).astype(np.int64)
    check_class_coverage(present, where, class_names)


SAMPLE_LAYOUTS = ("CL",)  # what a 2-D sample may declare itself to be: channels x length (Conv1d)


def _check_channel_axis(sample: tuple[int, ...], where: str, layout: str | None) -> None:
    """A 2-D sample (N x H x W images) has no channel axis: every model reads the first sample axis as
    channels, so it would fail later naming channels. Refused here, unless the file's `meta` says
    `"sample_layout": "CL"` (channels x length, a Conv1d net's input)."""
    if len(sample) != 2 or layout == "CL":
        return
    if layout is not None:
        raise DatasetError(f"dataset {where}: meta sample_layout {layout!r} is not one of {SAMPLE_LAYOUTS}")
    shape = ", ".join(map(str, sample))
    raise DatasetError(
        f"dataset {where}: x has samples of shape ({shape}) with no channel axis; models read the first "
        f"sample axis as channels. Images must be N x C x H x W: for grayscale add one with x[:, None] "
        f"(samples (1, {shape})). If the samples are channels x length for a Conv1d net, say so in the "
        f'file: meta=json.dumps({{"sample_layout": "CL"}})'
    )


def check_class_coverage(
    present: np.ndarray,
    where: str,
    class_names: list[str] | None,
    hint: str = "as 'class_names' in the file's 'meta' JSON",
) -> None:
    """`present`: the sorted distinct labels of every split. With a class list any label below its
    length is allowed; without one the labels must be 0..C-1 with none missing."""
    if class_names is not None:
        if present.max() >= len(class_names):
            raise DatasetError(
                f"dataset {where}: label {int(present.max())} is out of range for its "
                f"{len(class_names)} class names (labels must be 0..{len(class_names) - 1})"
            )
        return
    absent = sorted(set(range(int(present.max()) + 1)) - set(present.tolist()))
    if absent:
        shown = ", ".join(map(str, absent[:10])) + (", …" if len(absent) > 10 else "")
        raise DatasetError(
            f"dataset {where}: labels {_label_set(present)} are not 0..C-1 with every class present "
            f"(no sample has label {shown}); relabel them 0..{len(present) - 1}, or give the class list "
            + hint
        )


def _label_set(labels: np.ndarray) -> str:
    shown = ", ".join(str(int(v)) for v in labels[:10])
    return "{" + shown + (", …" if len(labels) > 10 else "") + "}"


def _check_finite(x: np.ndarray, name: str, where: str) -> None:
    """NaN or Inf in an input trains a NaN model without any other error: refuse it here."""
    if x.dtype.kind not in "fc":
        if x.dtype.kind not in "biu":
            raise DatasetError(f"dataset {where}: {name} has dtype {x.dtype}; expected numbers")
        return
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise DatasetError(
            f"dataset {where}: {name} holds NaN or Inf in {len(rows)} sample(s) (first: index "
            f"{int(rows[0])}); drop or repair them"
        )


def _check_labels(y: np.ndarray, name: str, where: str) -> None:
    """Labels are class indices: whole numbers >= 0 in a 1-d array."""
    if y.ndim != 1:
        raise DatasetError(f"dataset {where}: {name} has shape {y.shape}; expected one label per sample")
    if y.dtype.kind == "f":
        if not (np.isfinite(y).all() and (y == np.round(y)).all()):
            raise DatasetError(f"dataset {where}: {name} holds labels that are not whole numbers (or NaN)")
    elif y.dtype.kind not in "biu":
        raise DatasetError(f"dataset {where}: {name} has dtype {y.dtype}; expected integer class labels")
    if len(y) and y.min() < 0:
        raise DatasetError(f"dataset {where}: negative labels in {name}")


def load_source(source: str, seed: int = 0, fashion_mnist_dir: Path = FASHION_MNIST_DIR) -> Dataset:
    """Resolve a dataset name (`digits`, `fashion-mnist`), a local `.npz` path or an `s3://` URI."""
    if source == "digits":
        return load_digits(seed)
    if source == "fashion-mnist":
        return load_fashion_mnist(fashion_mnist_dir, seed=seed)
    if source.startswith("s3://"):
        from edgecompress.storage import download_s3

        return load_user_npz(download_s3(source), seed)
    path = Path(source)
    if path.suffix == ".npz" or path.exists():
        return load_user_npz(path, seed)
    raise DatasetError(
        f"unknown dataset {source!r}: use one of {BUILTIN_DATASETS}, a .npz path or an s3:// URI"
    )


def save_npz_artifact(dataset: Dataset, path: Path) -> dict[str, Any]:
    """Write the single-file artifact atomically and return its metadata."""
    meta = dataset.metadata()
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, meta=np.array(json.dumps(meta)), **dataset.arrays)
    return meta


def load_npz_artifact(path: Path) -> Dataset:
    """Read a single-file dataset artifact and verify its digest."""
    path = Path(path)
    arrays = _read_npz(path)
    if "meta" not in arrays:
        raise DatasetError(f"{path} is not an edgecompress dataset artifact (no 'meta' entry)")
    meta = json.loads(str(arrays.pop("meta")))
    _check_arrays(arrays, str(path), meta.get("class_names"))
    digest = content_digest(arrays)
    if digest != meta.get("sha256"):
        raise DatasetError(
            f"dataset {path} is corrupt: content sha256 {digest[:12]}… != recorded {str(meta.get('sha256'))[:12]}…"
        )
    known = {"name", "source", "input_shape", "num_classes", "class_names", "splits", "dtype", "sha256"}
    return Dataset(
        meta["name"],
        meta["source"],
        arrays,
        meta["class_names"],
        {k: v for k, v in meta.items() if k not in known},
    )
