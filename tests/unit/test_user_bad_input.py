"""Issue 29, bad input found trying the tool as a new user: an `.npz` whose `x` has no channel axis
(N x 8 x 8) was accepted as input_shape [8, 8] and failed later with a confusing channel error; an
unknown device class given to `audit unbenchmarked` listed every version and exited 0."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgecompress.cli import main
from edgecompress.data import load_digits
from edgecompress.data.base import load_user_npz
from edgecompress.errors import DatasetError


def _digits_without_channel_axis(tmp_path, meta: dict | None = None):
    digits = load_digits()
    x, y = digits.arrays["x_train"][:, 0], digits.arrays["y_train"]  # N x 8 x 8
    extra = {"meta": np.array(json.dumps(meta))} if meta else {}
    path = tmp_path / "hw.npz"
    np.savez(path, x=x, y=y, **extra)
    return path


def test_images_without_a_channel_axis_are_refused_at_load_saying_how_to_add_one(tmp_path, capsys):
    path = _digits_without_channel_axis(tmp_path)
    with pytest.raises(DatasetError, match=r"samples of shape \(8, 8\) with no channel axis.*x\[:, None\]"):
        load_user_npz(path)
    assert main(["dataset", str(path), "--output", str(tmp_path / "d.npz"), "--no-track"]) == 2
    assert "no channel axis" in capsys.readouterr().err
    assert not (tmp_path / "d.npz").exists()


def test_a_declared_channels_by_length_layout_is_accepted(tmp_path):
    """(C, L) samples for a Conv1d net say so in the file's meta; a layout it does not know is named."""
    assert load_user_npz(_digits_without_channel_axis(tmp_path, {"sample_layout": "CL"})).input_shape == (
        8,
        8,
    )
    with pytest.raises(DatasetError, match="sample_layout 'HW' is not one of"):
        load_user_npz(_digits_without_channel_axis(tmp_path, {"sample_layout": "HW"}))


def test_audit_unbenchmarked_refuses_an_unknown_class_naming_the_known(tracking_uri, capsys):
    assert main(["audit", "unbenchmarked", "rpi4-emulatd"]) == 2
    err = capsys.readouterr().err
    assert "unknown device class 'rpi4-emulatd'" in err and "rpi4-emulated" in err
    assert main(["audit", "unbenchmarked", "rpi4-emulated"]) == 0
