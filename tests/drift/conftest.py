"""A SQLite MLflow store holding models trained (with lineage) on digits images and wine features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import log_model_without_lineage, tracking_store, train_model, use_tracking_store

SMALL_CNN = {"family": "cnn", "kwargs": {"widths": [8, 16], "depths": [1, 1]}}


def wine_dataset():
    """sklearn's wine (178 × 13 real features) plus the cultivar as a categorical feature."""
    from sklearn.datasets import load_wine

    from edgecompress.data import Dataset, _stratified_split, split_arrays

    bunch = load_wine()
    x = np.concatenate([bunch.data, bunch.target[:, None]], axis=1).astype(np.float32)
    names = [*bunch.feature_names, "cultivar"]
    y = bunch.target.astype(np.int64)
    tr, va, te = _stratified_split(y, (0.15, 0.15), 0)
    arrays = split_arrays(x, y, tr, va, te)
    return Dataset(
        "wine",
        "sklearn.datasets.load_wine",
        arrays,
        [str(c) for c in bunch.target_names],
        {"feature_names": names},
    )


@pytest.fixture(scope="session")
def wine():
    return wine_dataset()


@pytest.fixture(scope="session")
def drift_store(tmp_path_factory: pytest.TempPathFactory, digits_artifact: Path) -> dict:

    from edgecompress import lineage
    from edgecompress.data import save_dataset
    from edgecompress.step import Lineage
    from edgecompress.train import TrainConfig, train_step

    tmp = tmp_path_factory.mktemp("drift-store")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with tracking_store(uri):
        ctx = Lineage(experiment="drift")
        digits = train_model(
            digits_artifact, tmp / "digits-model", TrainConfig(epochs=4, batch_size=64), ctx, spec=SMALL_CNN
        ).info
        lineage.register(digits["mlflow_model_id"], "digits-drift", ["rpi4-emulated"])
        wine_path = tmp / "wine.npz"
        save_dataset(wine_dataset(), wine_path)
        wine = train_step(
            wine_path,
            {"family": "mlp", "kwargs": {"hidden": [16]}},
            tmp / "wine-model",
            TrainConfig(epochs=2, batch_size=32),
            ctx,
            progress=False,
        ).info
        lineage.register(wine["mlflow_model_id"], "wine-drift", ["rpi4-emulated"])
        # a model with no dataset lineage: logged without dataset tags
        with ctx.task("imported"):
            bare = log_model_without_lineage(tmp / "digits-model" / "model.onnx", "imported", "imported")
        yield {
            "uri": uri,
            "dir": tmp,
            "digits_model": tmp / "digits-model",
            "wine": wine_path,
            "bare_model_id": bare,
        }


@pytest.fixture
def store(drift_store: dict, monkeypatch: pytest.MonkeyPatch) -> dict:
    use_tracking_store(drift_store["uri"], monkeypatch)
    return drift_store


@pytest.fixture(scope="session")
def digits_batches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """New batches from another draw of digits: clean, noisy, and malformed ones."""
    from edgecompress.data import load_digits

    tmp = tmp_path_factory.mktemp("batches")
    d = load_digits(seed=7)
    x = np.concatenate([d.arrays["x_test"], d.arrays["x_val"]])
    y = np.concatenate([d.arrays["y_test"], d.arrays["y_val"]])
    rng = np.random.default_rng(0)
    noisy = np.clip(x.astype(float) + rng.normal(0, 64, x.shape), 0, 255).astype(np.uint8)
    files = {
        "clean": {"x": x, "y": y},
        "clean_unlabelled": {"x": x},
        "noisy": {"x": noisy, "y": y},
        "noisy_unlabelled": {"x": noisy},
        "wrong_shape": {"x": np.zeros((20, 1, 28, 28), np.uint8)},
        "empty": {"x": np.zeros((0, 1, 8, 8), np.uint8)},
        "no_x": {"images": x},
        "bad_labels": {"x": noisy, "y": y + 10},
    }
    out = {}
    for name, arrays in files.items():
        out[name] = tmp / f"{name}.npz"
        np.savez(out[name], **arrays)
    out["not_npz"] = tmp / "not_npz.npz"
    out["not_npz"].write_text("hello")
    return out
