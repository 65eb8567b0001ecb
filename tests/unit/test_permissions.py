"""Issue 30 item 4: artifacts are written atomically through temp files, which `mkstemp`/`mkdtemp`
create 0600/0700. A later KFP task under another uid, an MLflow server or a colleague could not read
`model.json`, results JSON, the dataset `.npz` or the HTML reports. Written files now get
0666 & ~umask and directories 0777 & ~umask, as a plain `open`/`mkdir` would give them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from edgecompress.data import load_digits, save_dataset
from edgecompress.io import atomic_path, current_umask, write_json, write_text
from edgecompress.train import TrainConfig
from tests.conftest import train_model


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_current_umask_reads_the_process_umask(umask):
    assert current_umask() == umask
    assert current_umask() == umask  # reading it does not change it


def test_atomic_files_and_directories_get_the_umask_modes(tmp_path, umask):
    write_json(tmp_path / "results.json", {"a": 1})
    write_text(tmp_path / "report.html", "<html></html>")
    with atomic_path(tmp_path / "model", directory=True) as tmp:
        (tmp / "inner.txt").write_text("x")
    with atomic_path(tmp_path / "raw.bin") as tmp:
        tmp.write_bytes(b"\0")
    for name in ("results.json", "report.html", "raw.bin", "model/inner.txt"):
        assert _mode(tmp_path / name) == 0o666 & ~umask, name
    assert _mode(tmp_path / "model") == 0o777 & ~umask


def test_a_dataset_and_a_trained_model_are_readable_by_others_under_umask(tmp_path, umask):
    """Every file and directory the dataset and train steps write has the umask's mode."""
    data = tmp_path / "digits.npz"
    save_dataset(load_digits(), data)
    out = tmp_path / "model"
    train_model(data, out, TrainConfig(epochs=1, batch_size=64, max_train_samples=64))
    paths = [data, out, *out.rglob("*")]
    assert len(paths) > 3
    wrong = {
        str(p.relative_to(tmp_path)): oct(_mode(p))
        for p in paths
        if _mode(p) != (0o777 if p.is_dir() else 0o666) & ~umask
    }
    assert not wrong
