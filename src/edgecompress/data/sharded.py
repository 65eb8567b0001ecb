"""Datasets that do not fit in memory: a directory of `.npz` shards, read one shard at a time.

The artifact is a directory:

- `dataset.json`: name, source, input shape, class names, per-split sizes, dtype, the input
  transform, the shard manifest (split, file, samples, content sha256 of each shard) and `sha256`,
  the dataset's digest: a hash of that manifest (with the sample shape, dtype and transform), so it
  is computed while the shards are written and checked at load without reading any of them;
- `<split>-<n>.npz`: `x` (samples, *input_shape) and `y` (samples,) int64 each; a shard's digest is
  over its arrays (like a single-file artifact's), checked every time the shard is read;
- `sources.tsv` (image folders): path, sha256 of the file's bytes, label and split of every source
  image, the manifest the shards were decoded from (its hash is `source_sha256`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress.data.base import (
    SPLITS,
    Dataset,
    _check_finite,
    _check_labels,
    _check_split,
    check_class_coverage,
    content_digest,
    scale_in_place,
)
from edgecompress.errors import DatasetError

MANIFEST = "dataset.json"
SOURCES = "sources.tsv"
SHARD_BYTES = 4 << 20  # default shard: about 4 MiB of samples, so reading one stays small


def shard_digest(x: np.ndarray, y: np.ndarray) -> str:
    return content_digest({"x": x, "y": y})


def manifest_digest(
    input_shape: list[int], dtype: str, transform: dict[str, Any] | None, shards: list[dict[str, Any]]
) -> str:
    """The dataset's content digest: its shards' content digests in order, with what they mean."""
    body = {
        "input_shape": list(input_shape),
        "dtype": dtype,
        "transform": transform,
        "shards": [[s["split"], int(s["samples"]), s["sha256"]] for s in shards],
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class ShardWriter:
    """Fills one preallocated shard buffer per split and writes it whenever it is full; checks what it
    is given (one sample shape and dtype, finite inputs, whole-number labels) as it goes."""

    def __init__(self, root: Path, where: str, shard_samples: int = 0) -> None:
        self.root, self.where, self.shard_samples = Path(root), where, shard_samples
        self.shards: list[dict[str, Any]] = []
        self.sample_shape: tuple[int, ...] | None = None
        self.dtype: np.dtype | None = None
        self.present: set[int] = set()
        # Allocated on a split's first sample and reused: no per-sample arrays, no concatenation.
        self._x: dict[str, np.ndarray] = {}
        self._y: dict[str, np.ndarray] = {}
        self._counts = dict.fromkeys(SPLITS, 0)
        self._index = dict.fromkeys(SPLITS, 0)

    def add(self, split: str, x: np.ndarray, y: np.ndarray, origin: str) -> None:
        """Samples `x` with labels `y` for `split`; `origin` names them in error messages."""
        _check_split(split)
        if len(x) != len(y):
            raise DatasetError(f"dataset {origin}: x has {len(x)} samples but y has {len(y)}")
        if self.sample_shape is None:
            self.sample_shape, self.dtype = tuple(x.shape[1:]), x.dtype
            if not self.shard_samples:
                per_sample = max(1, int(np.prod(self.sample_shape)) * x.dtype.itemsize)
                self.shard_samples = int(np.clip(SHARD_BYTES // per_sample, 64, 65536))
        if tuple(x.shape[1:]) != self.sample_shape:
            raise DatasetError(
                f"dataset {origin}: samples have shape {tuple(x.shape[1:])}, but earlier ones have "
                f"{self.sample_shape}"
            )
        if x.dtype != self.dtype:
            raise DatasetError(
                f"dataset {origin}: x has dtype {x.dtype}, but earlier samples have {self.dtype}"
            )
        _check_finite(x, "x", origin)
        _check_labels(y, "y", origin)
        self.present.update(int(v) for v in np.unique(y))
        if split not in self._x:
            self._x[split] = np.empty((self.shard_samples, *self.sample_shape), dtype=self.dtype)
            self._y[split] = np.empty(self.shard_samples, dtype=np.int64)
        done = 0
        while done < len(x):
            at = self._counts[split]
            n = min(len(x) - done, self.shard_samples - at)
            self._x[split][at : at + n] = x[done : done + n]
            self._y[split][at : at + n] = y[done : done + n]
            self._counts[split] += n
            done += n
            if self._counts[split] == self.shard_samples:
                self._flush(split)

    def _flush(self, split: str) -> None:
        n = self._counts[split]
        x, y = self._x[split][:n], self._y[split][:n]
        name = f"{split}-{self._index[split]:05d}.npz"
        with open(self.root / name, "wb") as f:
            np.savez_compressed(f, x=x, y=y)
        self.shards.append({"split": split, "file": name, "samples": int(n), "sha256": shard_digest(x, y)})
        self._index[split] += 1
        self._counts[split] = 0

    def finish(
        self,
        *,
        name: str,
        source: str,
        class_names: list[str] | None,
        transform: dict[str, Any] | None,
        extra: dict[str, Any] | None = None,
        hint: str = "with --class-names",
    ) -> dict[str, Any]:
        """Write the last shards and `dataset.json`; the label set must name every class (or fit
        the explicit `class_names`). Returns the metadata."""
        for split in SPLITS:
            if self._counts[split]:
                self._flush(split)
        self._x.clear(), self._y.clear()
        sizes = {s: sum(sh["samples"] for sh in self.shards if sh["split"] == s) for s in SPLITS}
        for split, n in sizes.items():
            if n == 0:
                raise DatasetError(f"dataset {self.where}: split {split!r} is empty")
        present = np.array(sorted(self.present), dtype=np.int64)
        check_class_coverage(present, self.where, class_names, hint)
        names = class_names or [str(i) for i in range(int(present.max()) + 1)]
        assert self.sample_shape is not None and self.dtype is not None
        shape, dtype = [int(d) for d in self.sample_shape], str(self.dtype)
        meta = {
            "name": name,
            "source": source,
            "format": "shards",
            "input_shape": shape,
            "num_classes": len(names),
            "class_names": names,
            "splits": sizes,
            "dtype": dtype,
            "transform": transform,
            **(extra or {}),
            "shards": self.shards,
            "sha256": manifest_digest(shape, dtype, transform, self.shards),
        }
        (self.root / MANIFEST).write_text(json.dumps(meta, indent=1))
        return {**meta, "shards": len(self.shards)}


class _StreamedArrays(dict):
    """`Dataset.arrays` of a streamed dataset: empty, and says why when indexed."""

    def __missing__(self, key: str) -> np.ndarray:
        raise DatasetError(
            f"this step needs the whole dataset in memory ({key}), but it is a sharded dataset that is "
            "streamed; use a single-file .npz dataset for it"
        )


@dataclass
class ShardedDataset(Dataset):
    """A dataset read shard by shard from its directory: nothing but the labels is ever held whole."""

    root: Path = field(default_factory=Path)
    manifest: dict[str, Any] = field(default_factory=dict)
    streamed = True

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.manifest["input_shape"])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.manifest["dtype"])

    @property
    def digest(self) -> str:
        return str(self.manifest["sha256"])

    def metadata(self) -> dict[str, Any]:
        meta = super().metadata()
        meta["shards"] = len(self.manifest["shards"])
        return meta

    def _shards(self, name: str) -> list[dict[str, Any]]:
        _check_split(name)
        return [s for s in self.manifest["shards"] if s["split"] == name]

    def size(self, name: str) -> int:
        return sum(int(s["samples"]) for s in self._shards(name))

    def read_shard(self, shard: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """One shard's stored (x, y), checked against its recorded digest."""
        path = self.root / shard["file"]
        try:
            with np.load(path, allow_pickle=False) as npz:
                x, y = npz["x"], npz["y"]
        except Exception as exc:  # missing file, zipfile.BadZipFile, KeyError, ValueError …
            raise DatasetError(f"dataset shard {path} is unreadable ({type(exc).__name__}: {exc})") from exc
        if len(y) != shard["samples"] or shard_digest(x, y) != shard["sha256"]:
            raise DatasetError(f"dataset shard {path} is corrupt: its content does not match {MANIFEST}")
        return x, y

    def labels(self, name: str, limit: int | None = None) -> np.ndarray:
        out, need = [], self.size(name) if limit is None else limit
        for shard in self._shards(name):
            if need <= 0:
                break
            with np.load(self.root / shard["file"], allow_pickle=False) as npz:
                y = npz["y"][:need]
            out.append(y.astype(np.int64))
            need -= len(y)
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def _covering(self, name: str, limit: int | None) -> list[tuple[dict[str, Any], int]]:
        """The shards holding the first `limit` samples, with how many to use of each."""
        out, need = [], self.size(name) if limit is None else limit
        for shard in self._shards(name):
            if need <= 0:
                break
            out.append((shard, min(need, int(shard["samples"]))))
            need -= out[-1][1]
        return out

    def batches(
        self, name: str, batch_size: int, limit: int | None = None, shuffle: bool = False, seed: int = 0
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Model-ready batches of the first `limit` samples; `shuffle`: shards in a seeded order,
        samples permuted within each (the writer already mixed the classes across shards). Holds one
        shard and the batch being made: a batch is gathered from the shard by index, and only the
        fewer than `batch_size` samples left at a shard's end are copied to start the next batch."""
        parts = self._covering(name, limit)
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(parts)) if shuffle else range(len(parts))
        held: list[tuple[np.ndarray, np.ndarray]] = []  # samples left from earlier shards, < batch_size
        for k in order:
            shard, n = parts[int(k)]
            x, y = self.read_shard(shard)
            index: np.ndarray | None = rng.permutation(n) if shuffle else None
            at = 0
            while n - at >= batch_size - sum(len(h[1]) for h in held):
                pick = at + batch_size - sum(len(h[1]) for h in held)
                part = slice(at, pick) if index is None else index[at:pick]
                batch = self._assemble([*held, (x[part], y[part])])  # its pieces are freed here
                held, at = [], pick
                yield batch
                del batch  # before the next batch is made
            if at < n:
                # a copy (fancy indexing copies too), so the shard itself is not kept
                part = slice(at, n) if index is None else index[at:n]
                held.append((np.array(x[part]), np.array(y[part])))
            del x, y
        if held:
            yield self._assemble(held)

    def _assemble(self, pieces: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """One model-ready batch from pieces of stored samples, cast into its float32 array directly."""
        out = np.empty((sum(len(y) for _, y in pieces), *self.input_shape), np.float32)
        at = 0
        for x, y in pieces:
            out[at : at + len(y)] = x
            at += len(y)
        labels = np.concatenate([y for _, y in pieces]).astype(np.int64, copy=False)
        return scale_in_place(out, self.dtype, self.transform), labels

    def split(self, name: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        parts = self._covering(name, limit)
        out = np.empty((sum(n for _, n in parts), *self.input_shape), np.float32)
        ys, at = [], 0
        for shard, n in parts:
            x, y = self.read_shard(shard)
            out[at : at + n] = x[:n]
            ys.append(y[:n].astype(np.int64))
            at += n
        labels = np.concatenate(ys) if ys else np.zeros(0, np.int64)
        return scale_in_place(out, self.dtype, self.transform), labels

    def take(self, name: str, indices: np.ndarray) -> np.ndarray:
        indices = np.sort(np.asarray(indices, dtype=np.int64))
        out = np.empty((len(indices), *self.input_shape), np.float32)  # filled shard by shard
        start, at = 0, 0
        for shard in self._shards(name):
            end = start + int(shard["samples"])
            mine = indices[(indices >= start) & (indices < end)] - start
            if len(mine):
                out[at : at + len(mine)] = self.read_shard(shard)[0][mine]
                at += len(mine)
            start = end
        if at != len(indices):
            raise DatasetError(f"split {name!r} has {start} samples; indices up to {int(indices[-1])} asked")
        return scale_in_place(out, self.dtype, self.transform)


def load_sharded(root: Path) -> ShardedDataset:
    """Open a sharded artifact: its manifest must be whole, its shards present, its digest right."""
    root = Path(root)
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(
            f"{root} is not a sharded dataset artifact (cannot read {MANIFEST}: {exc})"
        ) from exc
    needed = {"name", "source", "input_shape", "class_names", "dtype", "shards", "sha256"}
    if not isinstance(manifest, dict) or not needed <= manifest.keys():
        raise DatasetError(f"{root / MANIFEST} lacks {sorted(needed - set(manifest or {}))}")
    missing = [s["file"] for s in manifest["shards"] if not (root / s["file"]).is_file()]
    if missing:
        raise DatasetError(f"dataset {root} is incomplete: shard(s) {missing[:5]} are missing")
    digest = manifest_digest(
        manifest["input_shape"], manifest["dtype"], manifest.get("transform"), manifest["shards"]
    )
    if digest != manifest["sha256"]:
        raise DatasetError(
            f"dataset {root} is corrupt: manifest sha256 {digest[:12]}… != recorded {manifest['sha256'][:12]}…"
        )
    known = {
        "name",
        "source",
        "input_shape",
        "num_classes",
        "class_names",
        "splits",
        "dtype",
        "sha256",
        "shards",
        "format",
    }
    extra = {k: v for k, v in manifest.items() if k not in known}
    return ShardedDataset(
        manifest["name"],
        manifest["source"],
        _StreamedArrays(),
        manifest["class_names"],
        extra,
        root=root,
        manifest=manifest,
    )


def copy_sharded(dataset: ShardedDataset, target: Path) -> None:
    """Copy the artifact's files into the (empty, temporary) directory `target`."""
    for name in [MANIFEST, *(s["file"] for s in dataset.manifest["shards"])]:
        shutil.copyfile(dataset.root / name, Path(target) / name)
    if (dataset.root / SOURCES).exists():
        shutil.copyfile(dataset.root / SOURCES, Path(target) / SOURCES)
