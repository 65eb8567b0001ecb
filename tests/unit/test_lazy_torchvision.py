"""Issue 29, architectures users bring: a user's factory that imports torchvision or timm inside the
function (where it uses them) failed with `operator torchvision::nms does not exist` in `train` and
`run`, while `torchvision.models:<name>` and a module importing torchvision at its top worked
(torchvision's PyPI extension does not match the CPU torch; zoo.py's workaround ran only for those
import paths). Checked in fresh processes: in this one torchvision may already be imported."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import run_cli, skip_or_fail_in_ci

if importlib.util.find_spec("torchvision") is None or importlib.util.find_spec("timm") is None:
    skip_or_fail_in_ci("torchvision and timm are not installed")

FACTORIES = """
from torch import nn


def tv_net(num_classes=10):
    from torchvision.ops.misc import Conv2dNormActivation  # imported where it is used

    return nn.Sequential(
        Conv2dNormActivation(1, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes)
    )


def timm_net(num_classes=10):
    import timm

    return timm.create_model("resnet10t", pretrained=False, num_classes=num_classes, in_chans=1)
"""


@pytest.fixture
def factory_dir(tmp_path):
    (tmp_path / "lazyfactories.py").write_text(textwrap.dedent(FACTORIES))
    return tmp_path


@pytest.mark.parametrize("factory", ["tv_net", "timm_net"])
def test_a_factory_importing_torchvision_or_timm_inside_builds(factory_dir, factory):
    code = (
        "from edgecompress.zoo import build_model, count_parameters; "
        f"print(count_parameters(build_model({{'factory': 'lazyfactories:{factory}'}}, (1, 8, 8), 10)))"
    )
    env = {"PYTHONPATH": str(factory_dir), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout.strip()) > 0


def test_train_with_the_lazy_factory(factory_dir, digits_artifact):
    """The issue's command: `train --model mypkg:make_net` from the directory holding the module."""
    out = factory_dir / "model"
    proc = run_cli(
        "train", "--dataset", str(digits_artifact), "--model", "lazyfactories:tv_net", "--output", str(out),
        "--epochs", "1", "--max-train-samples", "64", "--no-track", cwd=factory_dir,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((out / "model.json").read_text())["spec"]["factory"] == "lazyfactories:tv_net"
