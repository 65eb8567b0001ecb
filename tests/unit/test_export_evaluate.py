import numpy as np
import pytest
import torch
from torch import nn

from edgecompress.data import load_dataset
from edgecompress.errors import ModelError
from edgecompress.evaluate import evaluate_onnx, model_stats
from edgecompress.export import check_parity, export_onnx, load_model_package, save_model_package


def test_trained_package_has_parity_and_lineage_fields(trained_model):
    pkg = load_model_package(trained_model)
    assert pkg.info["export_parity"]["max_abs_error"] < 1e-3
    assert pkg.info["export_parity"]["top1_agreement"] == 1.0
    assert pkg.info["history"]["epochs"][-1]["val_accuracy"] > 0.85
    module = pkg.load_module()
    assert isinstance(module, nn.Module)


def test_macs_and_params_of_a_known_network(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    export_onnx(model, (1, 8, 8), tmp_path / "m.onnx")
    stats = model_stats(tmp_path / "m.onnx")
    conv_macs = 4 * 8 * 8 * (1 * 3 * 3)
    fc_macs = 256 * 10
    assert stats.macs == conv_macs + fc_macs
    assert stats.params == sum(p.numel() for p in model.parameters())
    assert stats.gzip_bytes < stats.onnx_bytes


def test_parity_failure_is_reported(tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    export_onnx(model, (1, 8, 8), tmp_path / "m.onnx")
    with torch.no_grad():
        model[1].weight.add_(1.0)  # torch now disagrees with the exported file
    with pytest.raises(ModelError, match="differs from torch"):
        check_parity(
            model, tmp_path / "m.onnx", np.random.default_rng(0).random((8, 1, 8, 8), dtype=np.float32)
        )


def test_corrupt_onnx_and_tampered_package(trained_model, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x01garbage")
    with pytest.raises(ModelError, match="bad.onnx"):
        load_model_package(bad)
    pkg = load_model_package(trained_model)
    copy = save_model_package(tmp_path / "copy", pkg.info, pkg.onnx_path)
    data = bytearray(copy.onnx_path.read_bytes())
    data[-20] ^= 0xFF
    copy.onnx_path.write_bytes(bytes(data))
    with pytest.raises(ModelError):
        load_model_package(tmp_path / "copy")
    (tmp_path / "noinfo").mkdir()
    with pytest.raises(ModelError, match="not an edgecompress model artifact"):
        load_model_package(tmp_path / "noinfo")


def test_wrong_input_shape_is_caught_before_running(trained_model, tmp_path):
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "wide.npz", x=rng.random((200, 1, 28, 28)).astype(np.float32), y=rng.integers(0, 10, 200)
    )
    from edgecompress.data import load_user_npz, save_dataset

    save_dataset(load_user_npz(tmp_path / "wide.npz"), tmp_path / "wide-artifact.npz")
    with pytest.raises(ModelError, match=r"expects inputs of shape .* samples have shape \(1, 28, 28\)"):
        evaluate_onnx(
            load_model_package(trained_model).onnx_path, load_dataset(tmp_path / "wide-artifact.npz")
        )


def test_evaluate_onnx_confusion_matrix(trained_model, digits_artifact):
    ds = load_dataset(digits_artifact)
    acc, cm, logits = evaluate_onnx(load_model_package(trained_model).onnx_path, ds)
    assert cm.sum() == len(ds.arrays["y_test"]) and np.trace(cm) / cm.sum() == pytest.approx(acc)
    assert acc > 0.8 and logits.shape == (len(ds.arrays["y_test"]), 10)


def test_failed_save_leaves_no_directory(tmp_path):
    with pytest.raises(ModelError):
        save_model_package(tmp_path / "out", {"x": 1}, tmp_path / "missing.onnx")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == []
