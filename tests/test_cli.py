"""The terminal interface: help everywhere, and bad input → a clear message, exit 2, nothing written."""

import numpy as np
import pytest

from edgecompress.cli import build_parser
from tests.conftest import io_args, run_cli


def _subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def test_top_level_help():
    proc = run_cli("--help")
    assert proc.returncode == 0 and "run" in proc.stdout and "compile" in proc.stdout


@pytest.mark.parametrize("command", _subcommands())
def test_every_subcommand_has_help(command, capsys):
    from edgecompress.cli import main

    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "usage: edgecompress" in capsys.readouterr().out


def test_missing_dataset(tmp_path):
    proc = run_cli("run", "--dataset", str(tmp_path / "nothing.npz"), "--output-dir", str(tmp_path / "out"))
    assert proc.returncode == 2 and "nothing.npz" in proc.stderr
    assert not (tmp_path / "out" / "kfp").exists()


def test_corrupt_dataset(tmp_path):
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(b"PK\x03\x04 truncated zip")
    proc = run_cli("dataset", str(bad), "--output", str(tmp_path / "d.npz"), "--no-track")
    assert proc.returncode == 2 and "corrupt.npz" in proc.stderr and "not a readable .npz" in proc.stderr
    assert not (tmp_path / "d.npz").exists()


def test_corrupt_onnx(tmp_path, digits_artifact):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07 this is not protobuf")
    proc = run_cli(
        "evaluate",
        *io_args(bad, digits_artifact, tmp_path / "r.json"),
        "--no-track",
    )
    assert proc.returncode == 2 and "broken.onnx" in proc.stderr and "not a valid ONNX model" in proc.stderr
    assert not (tmp_path / "r.json").exists()


def test_model_input_shape_does_not_match_data(tmp_path, trained_model):
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "big.npz",
        x=rng.integers(0, 255, (300, 1, 28, 28), dtype=np.uint8),
        y=rng.integers(0, 10, 300),
    )
    proc = run_cli(
        "dataset", str(tmp_path / "big.npz"), "--output", str(tmp_path / "big-artifact.npz"), "--no-track"
    )
    assert proc.returncode == 0, proc.stderr
    proc = run_cli(
        "evaluate",
        *io_args(trained_model, tmp_path / "big-artifact.npz", tmp_path / "r.json"),
        "--no-track",
    )
    assert proc.returncode == 2 and "expects inputs of shape" in proc.stderr and "(1, 28, 28)" in proc.stderr
    assert not (tmp_path / "r.json").exists()
    proc = run_cli(
        "train",
        "--dataset",
        str(tmp_path / "big-artifact.npz"),
        "--model",
        '{"family": "mlp", "kwargs": {"hidden": [8]}}',
        "--epochs",
        "1",
        "--output",
        str(tmp_path / "fits"),
        "--no-track",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]  # the same data with a fitting model works


def test_unknown_device_class(tmp_path):
    proc = run_cli("run", "--device-classes", "rpi4-emulated,toaster", "--output-dir", str(tmp_path))
    assert proc.returncode == 2 and "toaster" in proc.stderr and "rpi4-emulated" in proc.stderr
    assert not (tmp_path / "kfp").exists()


def test_unreachable_tracking_server(tmp_path, trained_model):
    env = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}  # discard port: nothing listens
    proc = run_cli("run", "--output-dir", str(tmp_path), env=env, timeout=120)
    assert proc.returncode == 2 and "127.0.0.1:9" in proc.stderr and "unreachable" in proc.stderr
    assert not (tmp_path / "kfp").exists()
    proc = run_cli(
        "benchmark", "--model", str(trained_model), "--output", str(tmp_path / "b.json"), env=env, timeout=120
    )
    assert proc.returncode == 2 and "unreachable" in proc.stderr
    assert not (tmp_path / "b.json").exists()


def test_bad_param(tmp_path):
    proc = run_cli("run", "--param", "epochz=3", "--output-dir", str(tmp_path))
    assert proc.returncode == 2 and "epochz" in proc.stderr
