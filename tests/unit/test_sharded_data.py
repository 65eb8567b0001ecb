"""Datasets that do not fit in memory (issue 19, item 4) and their bad input (item 5): image folders
and folders of `.npz` shards become a sharded artifact, read shard by shard by every consumer, with
the same numbers as the in-memory path on the same data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecompress.data import (
    SPLITS,
    DatasetSource,
    ShardedDataset,
    load_dataset,
    load_digits,
    load_image,
    save_dataset,
    selection_size,
    write_dataset,
)
from edgecompress.errors import DatasetError
from tests.conftest import run_cli


def _image_folder(root: Path, per_split: bool = False) -> Path:
    """sklearn digits as PNG files, one folder per class (under train/val/test with `per_split`)."""
    ds = load_digits()
    for split in SPLITS:
        x, y = ds.arrays[f"x_{split}"], ds.arrays[f"y_{split}"]
        for i, (img, label) in enumerate(zip(x, y, strict=True)):
            folder = root / (split if per_split else "") / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img[0]).save(folder / f"{split}-{i:04d}.png")
    return root


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory) -> Path:
    return _image_folder(tmp_path_factory.mktemp("images") / "digits")


@pytest.fixture(scope="module")
def digits_shards(tmp_path_factory, digits_folder) -> ShardedDataset:
    out = tmp_path_factory.mktemp("artifact") / "digits"
    write_dataset(DatasetSource(str(digits_folder), shard_samples=300), out, progress=False)
    return load_dataset(out)


def test_image_folder_becomes_a_streamed_dataset_with_its_pixels_and_manifests(digits_folder, digits_shards):
    ds = digits_shards
    assert isinstance(ds, ShardedDataset) and ds.streamed
    assert ds.input_shape == (1, 8, 8) and ds.class_names == [str(i) for i in range(10)]
    assert sum(ds.size(s) for s in SPLITS) == 1797
    assert 0.10 < ds.size("val") / 1797 < 0.20 and 0.10 < ds.size("test") / 1797 < 0.20  # the hash rule
    assert ds.transform["size"] == [8, 8] and ds.transform["channels"] == 1
    shards = json.loads((ds.root / "dataset.json").read_text())["shards"]
    assert len(shards) > 3 and all(s["samples"] <= 300 for s in shards)
    # every image once, in some batch, with its own pixels and label
    sources = [line.split("\t") for line in (ds.root / "sources.tsv").read_text().splitlines()]
    assert len(sources) == 1797 and ds.metadata()["source_files"] == 1797
    seen = sum(len(y) for s in SPLITS for _, y in ds.batches(s, 64, shuffle=True, seed=3))
    assert seen == 1797
    pixels = {}
    for rel, _, label, split in sources[:40]:
        pixels[(split, int(label))] = np.asarray(Image.open(digits_folder / rel), dtype=np.float32) / 255.0
    for split in SPLITS:
        x, y = ds.split(split)
        for (s, label), img in pixels.items():
            if s == split:
                assert any(np.array_equal(xi[0], img) for xi in x[y == label])
    # the digest is the lineage key: the same folder gives the same digest, a changed image another
    again = write_dataset(
        DatasetSource(str(digits_folder), shard_samples=300), ds.root.parent / "again", False
    )
    assert again["sha256"] == ds.digest


def test_batches_labels_take_and_sample_match_the_in_memory_path(tmp_path):
    """Digits written as split-named .npz shards stream exactly the in-memory digits: same batches,
    labels, seeded calibration sample and evaluation numbers."""
    mem = load_digits()
    shard_dir = tmp_path / "shards"
    shard_dir.mkdir()
    for split in SPLITS:
        x, y = mem.arrays[f"x_{split}"], mem.arrays[f"y_{split}"]
        for k in range(0, len(y), 500):
            np.savez(shard_dir / f"{split}-{k:05d}.npz", x=x[k : k + 500], y=y[k : k + 500])
    write_dataset(DatasetSource(str(shard_dir), shard_samples=128), tmp_path / "art", progress=False)
    ds = load_dataset(tmp_path / "art")
    for split in SPLITS:
        assert ds.size(split) == mem.size(split)
        np.testing.assert_array_equal(ds.labels(split), mem.labels(split))
        x, y = mem.split(split)
        got = list(ds.batches(split, 50))
        np.testing.assert_array_equal(np.concatenate([b[0] for b in got]), x)
        assert [len(b[1]) for b in got] == [len(b[1]) for b in mem.batches(split, 50)]
    np.testing.assert_array_equal(ds.sample("train", 200, seed=5), mem.sample("train", 200, seed=5))
    np.testing.assert_array_equal(ds.split("val", 70)[0], mem.split("val", 70)[0])
    from edgecompress.drift.reference import reference_sample

    for held_out in (True, False):
        np.testing.assert_array_equal(
            reference_sample(ds, 300, 1, held_out), reference_sample(mem, 300, 1, held_out)
        )


def test_training_and_evaluation_stream_a_sharded_dataset(tmp_path, digits_shards):
    from edgecompress.evaluate import evaluate_onnx
    from edgecompress.quantize.check import check_against_parent
    from edgecompress.step import Lineage
    from edgecompress.train import TrainConfig, train_step

    info = train_step(
        digits_shards.root, "mlp", tmp_path / "m", TrainConfig(epochs=4, lr=1e-2),
        Lineage(enabled=False), progress=False,
    ).info  # fmt: skip
    assert info["history"]["epochs"][-1]["val_accuracy"] > 0.8
    assert info["input_transform"] == digits_shards.transform
    acc, cm, logits = evaluate_onnx(tmp_path / "m" / "model.onnx", digits_shards, "test")
    assert acc > 0.8 and cm.sum() == digits_shards.size("test") == len(logits)
    check = check_against_parent(tmp_path / "m" / "model.onnx", tmp_path / "m" / "model.onnx", digits_shards)
    # the check looks at validation's selection part only (the gate decides on the rest)
    assert check["samples"] == selection_size(digits_shards.size("val")) and check["top1_agreement"] == 1.0


def test_transform_resizes_converts_normalises_and_is_reused_for_inference(tmp_path, digits_folder):
    src = DatasetSource(str(digits_folder), image_size="12x10", image_channels=3, image_mean="0.5",
                        image_std="0.25")  # fmt: skip
    write_dataset(src, tmp_path / "rgb", progress=False)
    ds = load_dataset(tmp_path / "rgb")
    assert ds.input_shape == (3, 12, 10)
    assert ds.transform == {"size": [12, 10], "channels": 3, "resample": "bilinear", "scale": "1/255",
                            "mean": [0.5], "std": [0.25]}  # fmt: skip
    x, _ = ds.split("test", 5)
    assert x.min() >= -2.0 - 1e-6 and x.max() <= 2.0 + 1e-6 and x.min() < -1.9  # (0 - 0.5) / 0.25
    rel = next(line.split("\t")[0] for line in (ds.root / "sources.tsv").read_text().splitlines())
    one = load_image(digits_folder / rel, ds.transform)  # what the device app does before inference
    assert one.shape == (1, 3, 12, 10)
    assert any(np.allclose(one[0], xi) for s in SPLITS for xb, _ in ds.batches(s, 256) for xi in xb)


def test_per_split_folders_and_a_missing_val_taken_from_train(tmp_path):
    root = _image_folder(tmp_path / "split", per_split=True)
    write_dataset(DatasetSource(str(root)), tmp_path / "a", progress=False)
    ds, mem = load_dataset(tmp_path / "a"), load_digits()
    assert {s: ds.size(s) for s in SPLITS} == {s: mem.size(s) for s in SPLITS}
    for path in (root / "val").rglob("*.png"):
        path.unlink()
    for folder in sorted((root / "val").glob("*")):
        folder.rmdir()
    (root / "val").rmdir()
    write_dataset(DatasetSource(str(root), val_fraction=0.2), tmp_path / "b", progress=False)
    ds = load_dataset(tmp_path / "b")
    assert ds.size("test") == mem.size("test") and 0.15 < ds.size("val") / mem.size("train") < 0.25


def test_a_tampered_shard_is_caught_when_read_and_a_tampered_manifest_at_load(tmp_path, digits_shards):
    save_dataset(digits_shards, tmp_path / "copy")
    ds = load_dataset(tmp_path / "copy")
    assert ds.digest == digits_shards.digest
    shard = json.loads((tmp_path / "copy" / "dataset.json").read_text())["shards"][0]
    with np.load(tmp_path / "copy" / shard["file"]) as npz:
        x, y = npz["x"].copy(), npz["y"]
    x[0, 0, 0, 0] ^= 1
    np.savez_compressed(tmp_path / "copy" / shard["file"], x=x, y=y)
    with pytest.raises(DatasetError, match="is corrupt: its content does not match"):
        list(load_dataset(tmp_path / "copy").batches(shard["split"], 64))
    meta = json.loads((tmp_path / "copy" / "dataset.json").read_text())
    meta["shards"][0]["samples"] += 1
    (tmp_path / "copy" / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="manifest sha256"):
        load_dataset(tmp_path / "copy")


def _cli_dataset(tmp_path, source: Path, *options: str):
    out = tmp_path / f"out-{len(list(tmp_path.glob('out-*')))}"
    proc = run_cli("dataset", str(source), "--output", str(out), "--no-track", *options)
    return proc, out


def _refused(proc, out: Path, needle: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: ") and needle in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not list(out.parent.glob(f".{out.name}.tmp-*"))


def test_cli_refuses_bad_image_folders_and_writes_nothing(tmp_path):
    root = tmp_path / "imgs"
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(np.full((6, 6), i * 10, np.uint8)).save(root / cls / f"{i}.png")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    proc, out = _cli_dataset(tmp_path, root)
    _refused(proc, out, "image " + str(root / "dog" / "broken.png") + " cannot be decoded")

    (root / "dog" / "broken.png").unlink()
    Image.fromarray(np.zeros((9, 7), np.uint8)).save(root / "dog" / "big.png")
    proc, out = _cli_dataset(tmp_path, root)
    _refused(proc, out, "is 7x9 (WxH) but the first image is 6x6; pass image_size")
    proc, out = _cli_dataset(tmp_path, root, "--image-size", "6x6")  # with a transform it is fine
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert load_dataset(out).input_shape == (1, 6, 6)

    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(root / "cat" / "rgb.png")
    proc, out = _cli_dataset(tmp_path, root, "--image-size", "6x6")
    _refused(proc, out, "has 3 channel(s) but the first image has 1; pass image_channels")

    (root / "bird").mkdir()
    proc, out = _cli_dataset(tmp_path, root, "--image-size", "6x6", "--image-channels", "1")
    _refused(proc, out, "class folder " + str(root / "bird") + " has no images")
    # an explicit class list allows an empty class and fixes the labels' order
    proc, out = _cli_dataset(tmp_path, root, "--image-size", "6x6", "--image-channels", "1",
                             "--class-names", "dog,cat,bird")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert load_dataset(out).class_names == ["dog", "cat", "bird"]
    proc, out = _cli_dataset(tmp_path, root, "--image-size", "6x6", "--class-names", "dog,cat")
    _refused(proc, out, "class folders ['bird'] are not in class_names")


def test_cli_refuses_bad_npz_shards_and_writes_nothing(tmp_path):
    rng = np.random.default_rng(0)
    shards = tmp_path / "shards"
    shards.mkdir()
    for k in range(3):
        np.savez(shards / f"part-{k}.npz", x=rng.random((40, 5)).astype(np.float32), y=np.arange(40) % 3 * 2)
    proc, out = _cli_dataset(tmp_path, shards)
    _refused(proc, out, "labels {0, 2, 4} are not 0..C-1 with every class present (no sample has label 1, 3)")
    proc, out = _cli_dataset(tmp_path, shards, "--class-names", "a,b,c,d,e")
    assert proc.returncode == 0, proc.stderr[-2000:]
    ds = load_dataset(out)
    assert ds.num_classes == 5 and sum(ds.size(s) for s in SPLITS) == 120

    x = rng.random((40, 5)).astype(np.float32)
    x[17, 2] = np.inf
    np.savez(shards / "part-1.npz", x=x, y=np.arange(40) % 5)
    proc, out = _cli_dataset(tmp_path, shards, "--class-names", "a,b,c,d,e")
    _refused(proc, out, "holds NaN or Inf")
    np.savez(shards / "part-1.npz", x=rng.random((40, 6)).astype(np.float32), y=np.arange(40) % 5)
    proc, out = _cli_dataset(tmp_path, shards, "--class-names", "a,b,c,d,e")
    _refused(proc, out, "samples have shape (6,), but earlier ones have (5,)")
    (shards / "part-1.npz").write_bytes(b"garbage")
    proc, out = _cli_dataset(tmp_path, shards)
    _refused(proc, out, "is not a readable .npz")


def test_cli_dataset_help_names_the_folder_options():
    proc = run_cli("dataset", "--help")
    assert proc.returncode == 0
    for option in ("--image-size", "--image-channels", "--image-mean", "--image-std", "--class-names",
                   "--val-fraction", "--test-fraction", "--shard-samples", "image folder"):  # fmt: skip
        assert option in " ".join(proc.stdout.split()), option  # whatever argparse's wrapping


def test_a_drift_batch_of_images_is_decoded_with_the_training_data_transform(tmp_path, digits_folder):
    from edgecompress.drift.reference import check_batch, load_batch

    write_dataset(
        DatasetSource(str(digits_folder), image_size="10x10", image_channels=3), tmp_path / "d", False
    )
    ds = load_dataset(tmp_path / "d")
    batch_dir = tmp_path / "new"
    for cls in ("3", "7"):
        (batch_dir / cls).mkdir(parents=True)
        for f in sorted((digits_folder / cls).glob("*.png"))[:5]:
            (batch_dir / cls / f.name).write_bytes(f.read_bytes())
    checked = check_batch(load_batch(batch_dir), ds)
    assert checked.x.shape == (10, 3, 10, 10) and checked.y.tolist() == [3] * 5 + [7] * 5
    np.testing.assert_allclose(
        checked.x[0:1], load_image(next(iter(sorted((batch_dir / "3").glob("*")))), ds.transform)
    )
    (batch_dir / "cow").mkdir()
    with pytest.raises(DatasetError, match=r"class folders \['cow'\] are not classes of the training data"):
        check_batch(load_batch(batch_dir), ds)
