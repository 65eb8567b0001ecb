import numpy as np
import pytest

from edgecompress.data import (
    Dataset,
    load_dataset,
    load_digits,
    load_fashion_mnist,
    load_source,
    load_user_npz,
    save_dataset,
)
from edgecompress.errors import DatasetError


def test_digits_splits_are_stratified_disjoint_and_deterministic():
    a, b = load_digits(seed=0), load_digits(seed=0)
    assert a.digest == b.digest
    sizes = {s: len(a.arrays[f"y_{s}"]) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == 1797 and sizes["val"] > 200 and sizes["test"] > 200
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    for split in ("val", "test"):  # every class in every split
        assert set(np.unique(a.arrays[f"y_{split}"])) == set(range(10))
    x, y = a.split("train")
    assert x.dtype == np.float32 and x.min() >= 0 and x.max() <= 1 and y.dtype == np.int64
    assert load_digits(seed=1).digest != a.digest


def test_dataset_artifact_round_trip_and_digest(tmp_path):
    ds = load_digits()
    meta = save_dataset(ds, tmp_path / "d.npz")
    assert meta["sha256"] == ds.digest and meta["splits"]["train"] == len(ds.arrays["y_train"])
    back = load_dataset(tmp_path / "d.npz")
    assert back.digest == ds.digest and back.class_names == ds.class_names


def test_corrupt_and_missing_dataset_artifacts_are_named(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(DatasetError, match="bad.npz"):
        load_dataset(bad)
    # a valid npz whose arrays were edited after the digest was recorded
    ds = load_digits()
    save_dataset(ds, tmp_path / "d.npz")
    with np.load(tmp_path / "d.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["y_test"] = arrays["y_test"][::-1].copy()
    np.savez(tmp_path / "edited.npz", **arrays)
    with pytest.raises(DatasetError, match="corrupt"):
        load_dataset(tmp_path / "edited.npz")


def test_user_npz_with_x_y_is_split(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "mine.npz", x=rng.random((300, 4)).astype(np.float32), y=rng.integers(0, 3, 300))
    ds = load_source(str(tmp_path / "mine.npz"))
    assert ds.input_shape == (4,) and ds.num_classes == 3
    assert sum(len(ds.arrays[f"y_{s}"]) for s in ("train", "val", "test")) == 300


def test_user_npz_missing_arrays(tmp_path):
    np.savez(tmp_path / "wrong.npz", features=np.zeros((3, 2)))
    with pytest.raises(DatasetError, match="lacks arrays"):
        load_user_npz(tmp_path / "wrong.npz")


def test_unknown_source_and_failed_save_leave_nothing(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_source("imagenet")
    broken = Dataset("x", "test", {"x_train": np.zeros((2, 2))}, ["a"])  # no y arrays → metadata fails
    with pytest.raises(KeyError):
        save_dataset(broken, tmp_path / "out.npz")
    assert list(tmp_path.iterdir()) == []


def test_fashion_mnist_from_debian_package():
    ds = load_fashion_mnist()
    assert ds.input_shape == (1, 28, 28)
    assert len(ds.arrays["y_train"]) + len(ds.arrays["y_val"]) == 60000 and len(ds.arrays["y_test"]) == 10000
    assert ds.class_names[0] == "T-shirt/top"


def test_fashion_mnist_missing_directory_names_the_file(tmp_path):
    with pytest.raises(DatasetError, match="dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path)
