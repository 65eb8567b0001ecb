"""Folder sources written into a sharded artifact one sample at a time: an image folder (the
torchvision `ImageFolder` layout) and a folder of `.npz` shards.

Layouts and the split rule:

- image folder: `root/<class>/**/<image>` (split by rule), or `root/train/<class>/…` with optional
  `root/val/…` and `root/test/…` (a missing val or test is taken from train by the same rule);
- `.npz` shards, each with `x` and `y`: files named `train*.npz`, `val*.npz`, `test*.npz` (or in
  folders of those names), or unsplit `*.npz` split by rule;
- the rule: a sample goes to test when a seeded hash of its path (and index, for shards) falls
  below `test_fraction`, to val below `test_fraction + val_fraction`, else to train. It needs no
  pass over the data, does not depend on listing order, and keeps a file's split when others are
  added.

Images are decoded with Pillow, converted to the recorded channel count and resized (bilinear) to
the recorded size; they are stored as uint8 and scaled/normalised on use (`Dataset.model_input`).
"""

from __future__ import annotations

import hashlib
import io
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress.data.base import SPLITS, DatasetSource, to_model_input
from edgecompress.data.sharded import SOURCES, ShardWriter
from edgecompress.errors import ConfigError, DatasetError
from edgecompress.io import atomic_path
from edgecompress.progress import progress_bar

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


@dataclass
class ImageTransform:
    """What turns an image file into a model input; recorded in the artifact (`transform`)."""

    size: tuple[int, int] | None = None  # (height, width); None: the images' own, which must agree
    channels: int = 0  # 1 or 3; 0: as the first image
    mean: list[float] | None = None
    std: list[float] | None = None
    # Whether images of another size / channel count are converted (the user asked for a size or
    # channel count, or the transform is a recorded one) or refused.
    resize: bool = field(default=False, repr=False)
    convert: bool = field(default=False, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "size": list(self.size) if self.size else None,
            "channels": self.channels,
            "resample": "bilinear",
            "scale": "1/255",
            "mean": self.mean,
            "std": self.std,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageTransform:
        size = tuple(d["size"]) if d.get("size") else None
        return cls(size, int(d.get("channels") or 0), d.get("mean"), d.get("std"), True, True)  # type: ignore[arg-type]


def _floats(text: str, what: str) -> list[float] | None:
    if not text.strip():
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError as exc:
        raise ConfigError(f"{what} must be comma-separated numbers, got {text!r}") from exc


def transform_from(src: DatasetSource) -> ImageTransform:
    size = None
    if src.image_size.strip():
        parts = src.image_size.lower().replace(",", "x").split("x")
        try:
            dims = [int(p) for p in parts]
        except ValueError as exc:
            raise ConfigError(
                f"image_size must be HEIGHTxWIDTH or one number, got {src.image_size!r}"
            ) from exc
        if len(dims) not in (1, 2) or min(dims) < 1:
            raise ConfigError(f"image_size must be HEIGHTxWIDTH or one number, got {src.image_size!r}")
        size = (dims[0], dims[-1])
    mean, std = _floats(src.image_mean, "image_mean"), _floats(src.image_std, "image_std")
    if std is not None and min(std) <= 0:
        raise ConfigError(f"image_std must be > 0, got {src.image_std!r}")
    return ImageTransform(size, src.image_channels, mean, std, size is not None, src.image_channels != 0)


def decode_image(data: bytes, where: str, transform: ImageTransform) -> np.ndarray:
    """(channels, height, width) uint8 of an image file's bytes under a resolved transform; an image
    that does not decode, or whose size or channels differ where no transform says what to do, is an
    error naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            channels = 1 if img.mode in _GRAY_MODES else 3
            if transform.channels and channels != transform.channels and not transform.convert:
                raise DatasetError(
                    f"image {where} has {channels} channel(s) but the first image has {transform.channels}; "
                    "pass image_channels (1 or 3) to convert them all"
                )
            img = img.convert("L" if (transform.channels or channels) == 1 else "RGB")
            if transform.size and img.size != (transform.size[1], transform.size[0]):
                if not transform.resize:
                    raise DatasetError(
                        f"image {where} is {img.size[0]}x{img.size[1]} (WxH) but the first image is "
                        f"{transform.size[1]}x{transform.size[0]}; pass image_size HEIGHTxWIDTH to resize them all"
                    )
                img = img.resize((transform.size[1], transform.size[0]), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except DatasetError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"image {where} cannot be decoded ({type(exc).__name__}: {exc})") from exc
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def load_image(path: Path, transform: dict[str, Any]) -> np.ndarray:
    """One image file as a model input (1, C, H, W) under a dataset's recorded transform: what an
    application on the device does before inference."""
    t = ImageTransform.from_dict(transform)
    return to_model_input(decode_image(Path(path).read_bytes(), str(path), t)[None], transform)


def read_image_batch(
    root: Path, transform: dict[str, Any], class_names: list[str]
) -> tuple[np.ndarray, np.ndarray | None]:
    """A folder of new images (a drift batch) as stored samples under a dataset's recorded transform:
    `root/<image>` (unlabelled) or `root/<class>/<image>` with the dataset's class names (labelled)."""
    root, t = Path(root), ImageTransform.from_dict(transform)
    classes = _subdirs(root)
    unknown = sorted(set(classes) - set(class_names))
    if unknown:
        raise DatasetError(
            f"image batch {root}: class folders {unknown} are not classes of the training data"
        )
    files = (
        [(f, class_names.index(c)) for c in classes for f in _images_under(root / c)]
        if classes
        else [(f, -1) for f in _images_under(root)]
    )
    if not files:
        raise DatasetError(f"image batch {root} holds no images")
    x = np.stack([decode_image(f.read_bytes(), str(f), t) for f, _ in files])
    return x, (np.array([lab for _, lab in files], dtype=np.int64) if classes else None)


def _rule(key: str, seed: int, val_fraction: float, test_fraction: float) -> str:
    u = int.from_bytes(hashlib.sha256(f"{seed}/{key}".encode()).digest()[:8], "big") / 2.0**64
    return "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"


def _subdirs(path: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def _images_under(path: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [
            Path(dirpath) / f
            for f in sorted(filenames)
            if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS
        ]
    return found


def _class_list(src: DatasetSource) -> list[str] | None:
    names = [n.strip() for n in src.class_names.split(",") if n.strip()] if src.class_names.strip() else None
    if names is not None and len(set(names)) != len(names):
        raise ConfigError(f"class_names lists a class twice: {src.class_names!r}")
    return names


def scan_image_folder(root: Path, src: DatasetSource) -> tuple[list[tuple[str, int, str]], list[str]]:
    """(relative path, label, split) of every image, and the class names."""
    top = _subdirs(root)
    split_dirs = [d for d in top if d in SPLITS]
    if split_dirs and "train" not in split_dirs:
        raise DatasetError(f"image folder {root} has {split_dirs} but no train/ folder")
    if split_dirs and set(top) - set(SPLITS):
        raise DatasetError(
            f"image folder {root} mixes split folders {split_dirs} with other folders "
            f"{sorted(set(top) - set(SPLITS))}; use train/<class>/…, or only <class>/… folders"
        )
    bases = {s: root / s for s in split_dirs} if split_dirs else {"": root}
    found = sorted({c for base in bases.values() for c in _subdirs(base)})
    if not found:
        raise DatasetError(f"image folder {root} has no class folders (expected {root}/<class>/<image>)")
    names = _class_list(src)
    if names is not None and set(found) - set(names):
        raise DatasetError(
            f"image folder {root}: class folders {sorted(set(found) - set(names))} are not in class_names"
        )
    names = names or found
    label = {n: i for i, n in enumerate(names)}
    entries: list[tuple[str, int, str]] = []
    for split, base in bases.items():
        for cls in _subdirs(base):
            files = _images_under(base / cls)
            if not files and src.class_names.strip() == "":
                raise DatasetError(f"image folder {root}: class folder {base / cls} has no images")
            for f in files:
                rel = f.relative_to(root).as_posix()
                if split in ("", "train"):
                    rule = _rule(
                        rel,
                        src.seed,
                        0.0 if "val" in bases else src.val_fraction,
                        0.0 if "test" in bases else src.test_fraction,
                    )
                else:
                    rule = split
                entries.append((rel, label[cls], rule))
    return entries, names


def write_image_folder(root: Path, output: Path, src: DatasetSource, progress: bool = True) -> dict[str, Any]:
    """Decode, check and shard an image folder into the artifact directory `output`, one image at a
    time (in a seeded order, so shards mix the classes); nothing is written unless all of it is good."""
    root = Path(root)
    transform = transform_from(src)
    entries, names = scan_image_folder(root, src)
    first = root / entries[0][0]
    probe = decode_image(first.read_bytes(), str(first), transform)
    transform.channels = transform.channels or probe.shape[0]
    transform.size = transform.size or (probe.shape[1], probe.shape[2])
    if transform.mean is not None and len(transform.mean) not in (1, transform.channels):
        raise ConfigError(f"image_mean has {len(transform.mean)} values for {transform.channels} channel(s)")
    if transform.std is not None and len(transform.std) not in (1, transform.channels):
        raise ConfigError(f"image_std has {len(transform.std)} values for {transform.channels} channel(s)")
    order = np.random.default_rng(src.seed).permutation(len(entries))
    lines: list[str] = []
    with atomic_path(Path(output), directory=True) as tmp, progress_bar(enabled=progress) as bar:
        writer = ShardWriter(tmp, str(root), src.shard_samples)
        task = bar.add_task(f"decode {root.name}", total=len(entries))
        for k in order:
            rel, lab, split = entries[int(k)]
            data = (root / rel).read_bytes()
            x = decode_image(data, str(root / rel), transform)
            writer.add(split, x[None], np.array([lab], dtype=np.int64), str(root / rel))
            lines.append(f"{rel}\t{hashlib.sha256(data).hexdigest()}\t{lab}\t{split}\n")
            bar.advance(task)
        lines.sort()
        h = hashlib.sha256()
        with open(tmp / SOURCES, "w") as f:
            for line in lines:
                f.write(line)
                h.update(line.encode())
        meta = writer.finish(
            name=root.name,
            source=str(root),
            class_names=names,
            transform=transform.as_dict(),
            extra={"source_files": len(lines), "source_sha256": h.hexdigest()},
            hint="with class_names",
        )
    return meta


def _npz_split(path: Path, root: Path) -> str | None:
    parts = path.relative_to(root).parts
    for part in (*parts[:-1], path.stem):
        for split in SPLITS:
            if part == split or (part.startswith(split) and not part[len(split)].isalpha()):
                return split
    return None


def write_npz_shards(root: Path, output: Path, src: DatasetSource, progress: bool = True) -> dict[str, Any]:
    """Check and re-shard a folder of `.npz` files (`x`, `y` each) one file at a time."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*.npz") if not p.name.startswith("."))
    if not files:
        raise DatasetError(f"folder {root} holds no .npz shards and no class folders of images")
    splits = {f: _npz_split(f, root) for f in files}
    named = {s for s in splits.values() if s}
    if named and None in splits.values():
        unnamed = [f.name for f, s in splits.items() if s is None][:5]
        raise DatasetError(
            f"shards in {root}: {unnamed} belong to no split, while others are named train/val/test"
        )
    if named and "train" not in named:
        raise DatasetError(f"shards in {root} name splits {sorted(named)} but none is train")
    names = _class_list(src)
    with atomic_path(Path(output), directory=True) as tmp, progress_bar(enabled=progress) as bar:
        writer = ShardWriter(tmp, str(root), src.shard_samples)
        task = bar.add_task(f"shards {root.name}", total=len(files))
        for f in files:
            try:
                with np.load(f, allow_pickle=False) as npz:
                    if not {"x", "y"} <= set(npz.files):
                        raise DatasetError(f"shard {f} lacks 'x' or 'y' (has {sorted(npz.files)})")
                    x, y = npz["x"], npz["y"]
            except DatasetError:
                raise
            except Exception as exc:
                raise DatasetError(f"shard {f} is not a readable .npz ({type(exc).__name__}: {exc})") from exc
            split = splits[f]
            if split in (None, "train"):
                seed = zlib.crc32(f"{src.seed}/{f.relative_to(root).as_posix()}".encode())
                u = np.random.default_rng(seed).random(len(y))
                val = 0.0 if "val" in named else src.val_fraction
                test = 0.0 if "test" in named else src.test_fraction
                where = np.where(u < test, 2, np.where(u < test + val, 1, 0))
                for i, s in enumerate(SPLITS):
                    if (where == i).any():
                        writer.add(s, x[where == i], y[where == i], str(f))
            else:
                writer.add(split, x, y, str(f))
            bar.advance(task)
        meta = writer.finish(
            name=root.name, source=str(root), class_names=names, transform=None, hint="with class_names"
        )
    return meta


def is_image_folder(root: Path) -> bool:
    """A folder of class folders (or split folders of them), rather than of .npz shards."""
    return not any(Path(root).rglob("*.npz"))
