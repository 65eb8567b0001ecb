"""Bad input: clear errors, exit status 2, nothing written."""

import numpy as np
import pytest

from edgecompress.cli import main
from edgecompress.data import Dataset, load_digits, save_dataset
from edgecompress.export import export_onnx
from edgecompress.zoo import build_model
from tests.conftest import io_args


def _run(capsys, *args):
    code = main(list(args))
    return code, capsys.readouterr().err


def _quantize(capsys, model, dataset, out, *extra):
    return _run(
        capsys,
        "quantize",
        *io_args(model, dataset, out),
        "--device-class",
        "rpi4-emulated",
        "--no-track",
        *extra,
    )


def _assert_refused(result, out, *words):
    code, err = result
    assert code == 2, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("error:")
    for w in words:
        assert w in err
    assert not out.exists() and not list(out.parent.glob(f".{out.name}.tmp-*"))


def test_calibration_data_of_the_wrong_shape(trained_model, tmp_path, capsys):
    d = load_digits()
    arrays = {k: (v[:, :, :4, :4].copy() if k.startswith("x_") else v) for k, v in d.arrays.items()}
    save_dataset(Dataset("digits-4x4", "test", arrays, d.class_names), tmp_path / "small.npz")
    out = tmp_path / "q"
    _assert_refused(_quantize(capsys, trained_model, tmp_path / "small.npz", out), out, "shape", "(1, 4, 4)")


def test_opset_onnx_runtime_cannot_quantize(digits_artifact, tmp_path, capsys):
    export_onnx(build_model("mlp", (1, 8, 8), 10), (1, 8, 8), tmp_path / "old.onnx", opset=9)
    out = tmp_path / "q"
    _assert_refused(_quantize(capsys, tmp_path / "old.onnx", digits_artifact, out), out, "opset 9")


def test_empty_calibration_set(trained_model, digits_artifact, tmp_path, capsys):
    out = tmp_path / "q"
    _assert_refused(
        _quantize(capsys, trained_model, digits_artifact, out, "--calibration-samples", "0"),
        out,
        "calibration_samples",
    )
    d = load_digits()
    arrays = dict(d.arrays)
    arrays["x_train"], arrays["y_train"] = arrays["x_train"][:0], arrays["y_train"][:0]
    np.savez(
        tmp_path / "empty.npz", meta=np.array("{}"), **arrays
    )  # written by hand: save_dataset refuses it
    _assert_refused(_quantize(capsys, trained_model, tmp_path / "empty.npz", out), out, "empty.npz")


@pytest.mark.parametrize("drop", ["-0.01", "1.5"])
def test_impossible_accuracy_criterion(trained_model, digits_artifact, tmp_path, drop, capsys):
    out = tmp_path / "m"
    result = _run(
        capsys,
        "autotune",
        *io_args(trained_model, digits_artifact, out),
        "--results",
        str(tmp_path / "r.json"),
        "--max-drop",
        drop,
        "--no-track",
    )
    _assert_refused(result, out, "accuracy criterion")
    assert not (tmp_path / "r.json").exists()
