"""Bad input (issue 19, item 5): data a model cannot be trained on, and user model factories that
fail, are refused with a message that names the problem: `error: …`, exit 2, nothing written."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from edgecompress.data import SPLITS, Dataset, load_dataset, load_digits, load_user_npz, save_dataset
from edgecompress.errors import ConfigError, DatasetError, ModelError
from edgecompress.zoo import build_model
from tests.conftest import run_cli


def _float_digits() -> dict[str, np.ndarray]:
    """The six split arrays of digits, inputs as [0, 1] float32 (the dtype NaN can live in)."""
    arrays = dict(load_digits().arrays)
    for s in SPLITS:
        arrays[f"x_{s}"] = arrays[f"x_{s}"].astype(np.float32) / 255.0
    return arrays


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_any_split_is_refused(tmp_path, split, value):
    arrays = _float_digits()
    arrays[f"x_{split}"][7, 0, 3, 3] = value
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(
        DatasetError, match=rf"x_{split} holds NaN or Inf in 1 sample\(s\) \(first: index 7\)"
    ):
        load_user_npz(tmp_path / "bad.npz")


def test_nan_in_x_y_form_and_in_a_dataset_artifact_is_refused(tmp_path):
    x = _float_digits()["x_train"]
    y = load_digits().arrays["y_train"]
    x[100, 0, 0, 0] = np.nan
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    with pytest.raises(DatasetError, match="NaN or Inf"):
        load_user_npz(tmp_path / "xy.npz")
    # an artifact whose digest is right but whose data holds NaN (written before this check existed)
    arrays = _float_digits()
    arrays["x_val"][0] = np.nan
    save_dataset(Dataset("nan", "test", arrays, [str(i) for i in range(10)]), tmp_path / "nan.npz")
    with pytest.raises(DatasetError, match="x_val holds NaN or Inf"):
        load_dataset(tmp_path / "nan.npz")


def _xy(tmp_path, labels: np.ndarray, meta: dict | None = None):
    rng = np.random.default_rng(0)
    extra = {"meta": np.array(json.dumps(meta))} if meta else {}
    path = tmp_path / "labels.npz"
    np.savez(path, x=rng.random((len(labels), 4)).astype(np.float32), y=labels, **extra)
    return path


def test_labels_must_be_0_to_c_minus_1_unless_a_class_list_covers_them(tmp_path):
    twelve = np.full(60, 12)
    with pytest.raises(DatasetError, match=r"labels \{12\} are not 0..C-1.*no sample has label 0, 1, 2"):
        load_user_npz(_xy(tmp_path, twelve))
    gap = np.repeat([0, 1, 3], 20)
    with pytest.raises(DatasetError, match=r"labels \{0, 1, 3\}.*no sample has label 2\)"):
        load_user_npz(_xy(tmp_path, gap))
    with pytest.raises(DatasetError, match="not whole numbers"):
        load_user_npz(_xy(tmp_path, np.repeat([0.0, 1.5], 30)))
    # an explicit class list: classes may be absent from the data, but every label must name one
    names = [f"c{i}" for i in range(13)]
    ds = load_user_npz(_xy(tmp_path, twelve, {"class_names": names}))
    assert ds.num_classes == 13 and ds.class_names == names
    with pytest.raises(DatasetError, match="label 12 is out of range for its 4 class names"):
        load_user_npz(_xy(tmp_path, twelve, {"class_names": names[:4]}))
    # contiguous labels keep working, integer or whole-number floats
    assert load_user_npz(_xy(tmp_path, np.repeat([0.0, 1.0, 2.0], 20))).num_classes == 3


def test_cli_dataset_and_train_refuse_bad_data_and_write_nothing(tmp_path):
    arrays = _float_digits()
    arrays["x_train"][5] = np.nan
    np.savez(tmp_path / "nan.npz", **arrays)
    proc = run_cli("dataset", str(tmp_path / "nan.npz"), "--output", str(tmp_path / "d.npz"), "--no-track")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: dataset ") and "x_train holds NaN or Inf" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "d.npz").exists()

    proc = run_cli(
        "dataset", str(_xy(tmp_path, np.full(60, 12))), "--output", str(tmp_path / "d.npz"), "--no-track"
    )
    assert proc.returncode == 2 and "labels {12} are not 0..C-1" in proc.stderr
    assert not (tmp_path / "d.npz").exists()

    # `train` on an artifact that holds NaN (digest intact): refused before a model is written
    save_dataset(Dataset("nan", "test", arrays, [str(i) for i in range(10)]), tmp_path / "nan-artifact.npz")
    proc = run_cli(
        "train", "--dataset", str(tmp_path / "nan-artifact.npz"), "--model", "mlp", "--epochs", "1",
        "--output", str(tmp_path / "model"), "--no-track",
    )  # fmt: skip
    assert proc.returncode == 2 and "error: dataset " in proc.stderr and "NaN or Inf" in proc.stderr
    assert not (tmp_path / "model").exists()


MODULE = """
import torch.nn as nn

def raises(hidden=8):
    raise ValueError(f"hidden={hidden} is not supported")

def fine():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
"""


def test_user_factory_failures_are_named(tmp_path, monkeypatch):
    (tmp_path / "userfactories.py").write_text(MODULE)
    (tmp_path / "brokenmodule.py").write_text("import torch\nraise RuntimeError('no GPU here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(
        ModelError, match=r"^model factory 'userfactories:raises' raised ValueError: hidden=4 is"
    ):
        build_model({"factory": "userfactories:raises", "kwargs": {"hidden": 4}}, (1, 8, 8), 10)
    with pytest.raises(ModelError, match=r"'userfactories:fine' raised TypeError: .*unexpected keyword"):
        build_model({"factory": "userfactories:fine", "kwargs": {"width": 4}}, (1, 8, 8), 10)
    with pytest.raises(ConfigError, match="module 'userfactories' has no callable 'missing'"):
        build_model("userfactories:missing", (1, 8, 8), 10)
    with pytest.raises(
        ConfigError, match="cannot import .*'brokenmodule': it raised RuntimeError: no GPU here"
    ):
        build_model("brokenmodule:anything", (1, 8, 8), 10)
    assert build_model("userfactories:fine", (1, 8, 8), 10) is not None
    sys.modules.pop("userfactories", None)


def test_cli_train_with_a_raising_factory(tmp_path, digits_artifact):
    (tmp_path / "userfactories.py").write_text(MODULE)
    proc = run_cli(
        "train", "--dataset", str(digits_artifact), "--model", "userfactories:raises",
        "--output", str(tmp_path / "model"), "--no-track", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "error: model factory 'userfactories:raises' raised ValueError: hidden=8 is not supported" in (
        proc.stderr
    )
    assert "Traceback" not in proc.stderr and not (tmp_path / "model").exists()
    proc = run_cli(
        "train", "--dataset", str(digits_artifact), "--model", "userfactories:nothing",
        "--output", str(tmp_path / "model"), "--no-track", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2 and "has no callable 'nothing'" in proc.stderr
    assert not (tmp_path / "model").exists()
