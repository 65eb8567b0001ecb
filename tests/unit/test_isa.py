"""`isa-check` through its public interfaces on digits: which classes it checks and why not, the
verdict by the gate's rule, and bad input. The aarch64 run itself (the arm64 image under QEMU) is
tested in tests/containers/test_arm64_agent.py; here a stand-in target runs this machine's ONNX
Runtime, once unchanged and once with the child's weights broken as a saturating INT8 kernel would."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgecompress import isa
from edgecompress.data import load_dataset
from edgecompress.errors import ConfigError
from edgecompress.export import load_model_package
from edgecompress.gate import GateConfig
from edgecompress.isa import IsaCheckConfig, IsaResult, isa_check, isa_check_step, subsample
from edgecompress.quantize import StaticQuantConfig, quantize_step
from edgecompress.step import Lineage
from tests.conftest import run_cli

PI4_CPU = {"isa": "aarch64", "int8_dot_product": "none", "features": ["fp", "asimd"], "source": "auxv"}


@pytest.fixture(scope="module")
def child(trained_model, digits_artifact, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("isa") / "child"
    quantize_step(
        trained_model, digits_artifact, out, StaticQuantConfig(calibration_samples=64), Lineage(enabled=False)
    )
    return out


def _config(*classes: str, **gate) -> IsaCheckConfig:
    return IsaCheckConfig(gate=GateConfig(device_classes=list(classes), **gate))


def _stand_in(break_weights: bool):
    """A target that runs the job with this machine's ONNX Runtime and reports a Pi 4's CPU. A Pi's
    kernels do not saturate: on an x86 machine without VNNI, whose kernels do, its logits are the QDQ
    graph's as written (what this machine judges accuracy by, `export.onnx_logits`)."""
    from edgecompress.export import onnx_logits
    from edgecompress.runtime.logits import run_job

    def run(job_dir: Path, runner: str, config: IsaCheckConfig, qemu_cpu: str = "") -> dict:
        assert (runner, qemu_cpu) == ("qemu", "cortex-a72")
        if break_weights:  # every weight's sign flipped: what a kernel that mangles INT8 products does
            model = onnx.load(str(job_dir / "child.onnx"))
            for init in model.graph.initializer:
                arr = numpy_helper.to_array(init)
                if arr.ndim > 1 and arr.dtype in (np.float32, np.int8):  # float or INT8 (QDQ) weights
                    flipped = np.clip(-arr.astype(np.float32), -127, 127).astype(arr.dtype)
                    init.CopyFrom(numpy_helper.from_array(flipped, init.name))
            onnx.save(model, str(job_dir / "child.onnx"))
        info = run_job(job_dir)
        job = json.loads((job_dir / "job.json").read_text())
        inputs = (
            job["inputs"] if isinstance(job["inputs"], dict) else dict.fromkeys(job["models"], job["inputs"])
        )
        for name, file in job["models"].items():
            logits = onnx_logits(job_dir / file, np.load(job_dir / inputs[name]))
            np.save(job_dir / f"logits-{name}.npy", logits.astype(np.float32))
        return {**info, "machine": "aarch64", "cpu": PI4_CPU}

    return run


def test_classes_of_this_machines_isa_are_not_checked_and_say_why(trained_model, child, digits_artifact):
    x, y = load_dataset(digits_artifact).split("val")
    p, c = load_model_package(trained_model), load_model_package(child)
    out = isa_check(p.onnx_path, c.onnx_path, x, y, _config("rpi4-emulated", "jetson-orin-nano-emulated"))
    assert out.host_isa == "x86_64" and out.rejected_device_classes == []
    row = out.classes["rpi4-emulated"]
    why = row.details["why_not"]
    assert not row.checked and row.verdict is None and "same ISA" in why and "add rpi4-qemu" in why
    assert IsaResult.from_json(out.to_json()) == out
    skipped = isa_check(p.onnx_path, c.onnx_path, x, y, IsaCheckConfig(skip_isa_check=True))
    assert skipped.skipped and all("skipped" in r.details["why_not"] for r in skipped.classes.values())


def test_verdict_follows_the_gate_rule_on_the_target(
    trained_model, child, digits_artifact, tmp_path, monkeypatch
):
    monkeypatch.setattr(isa, "run_on_isa", _stand_in(break_weights=False))
    config = _config("rpi4-qemu", "rpi4-emulated")
    out = isa_check_step(
        trained_model, child, digits_artifact, config, tmp_path / "ok.json", tmp_path / "ok.md"
    )
    row = out["classes"]["rpi4-qemu"]
    assert row["checked"] and row["verdict"] == "accepted" and row["cpu_matches_profile"]
    assert row["agreement_with_host"] == 1.0 and row["max_abs_logit_diff_host"] == 0.0
    assert row["accuracy"] == row["host_accuracy"] and out["samples"] == out["split_size"]
    assert json.loads((tmp_path / "ok.json").read_text())["rejected_device_classes"] == []
    assert row["reasons"] == row["reason_codes"] == []

    monkeypatch.setattr(isa, "run_on_isa", _stand_in(break_weights=True))
    out = isa_check_step(
        trained_model, child, digits_artifact, config, tmp_path / "bad.json", tmp_path / "bad.md"
    )
    row = out["classes"]["rpi4-qemu"]
    assert out["rejected_device_classes"] == ["rpi4-qemu"] and row["verdict"] == "rejected"
    reason = row["reasons"][0]  # the gate's default rule: the drop's upper bound decides
    assert reason.startswith("on aarch64: accuracy upper 95% bound of the drop") and "allowed 1.00" in reason
    assert row["reason_codes"] == ["accuracy_drop_too_large"]
    saved = json.loads((tmp_path / "bad.json").read_text())
    assert IsaResult.from_json(saved).to_json() == saved == out  # the type holds all of it
    assert row["agreement_with_host"] < 0.5 and row["accuracy"] < row["parent_accuracy"] - 0.01
    assert "rpi4-qemu | aarch64 (QEMU cortex-a72) | rejected" in (tmp_path / "bad.md").read_text()


def test_a_target_cpu_that_disagrees_with_the_profile_proves_nothing(
    trained_model, child, digits_artifact, tmp_path, monkeypatch
):  # noqa: E501
    stand_in = _stand_in(break_weights=False)
    monkeypatch.setattr(
        isa,
        "run_on_isa",
        lambda *a, **k: {**stand_in(*a, **k), "cpu": {**PI4_CPU, "int8_dot_product": "dotprod"}},
    )
    out = isa_check_step(trained_model, child, digits_artifact, _config("rpi4-qemu"), tmp_path / "r.json")
    assert out["rejected_device_classes"] == ["rpi4-qemu"]
    row = out["classes"]["rpi4-qemu"]
    assert "the target CPU disagrees with the profile" in row["reasons"][-1]
    assert row["reason_codes"] == ["target_cpu_mismatch"]


def test_the_float_parent_runs_on_the_target_only_on_its_subsample(
    trained_model, child, digits_artifact, tmp_path, monkeypatch
):
    """The slow float parent confirms float agreement on a few images; the child, which the rule
    judges, runs on every checked image."""
    stand_in, rows = _stand_in(break_weights=False), {}

    def counting(job_dir: Path, *args, **kwargs) -> dict:
        info = stand_in(job_dir, *args, **kwargs)
        rows.update({m: len(np.load(job_dir / f"logits-{m}.npy")) for m in ("child", "parent")})
        return info

    monkeypatch.setattr(isa, "run_on_isa", counting)
    config = _config("rpi4-qemu")
    config.isa_parent_max_samples = 50
    out = isa_check_step(
        trained_model, child, digits_artifact, config, tmp_path / "r.json", tmp_path / "r.md"
    )
    n = out["samples"]
    assert n == out["split_size"] > 200 and rows["child"] == n
    assert rows["parent"] == out["parent_on_target_samples"] == len(range(0, n, subsample(n, 50))) <= 50
    parent = out["classes"]["rpi4-qemu"]["parent_on_target"]
    assert parent["samples"] == rows["parent"] and parent["agreement_with_host"] == 1.0
    assert out["classes"]["rpi4-qemu"]["accuracy_drop"]["samples"] == n  # the rule uses every image
    assert f"on {rows['parent']} of these images" in (tmp_path / "r.md").read_text()


def test_subsample_states_its_interval():
    assert subsample(10_000, 0) == 1 and subsample(5_000, 5_000) == 1
    assert subsample(10_000, 5_000) == 2 and subsample(10_001, 5_000) == 3


def test_bad_input_is_an_error_and_writes_nothing(trained_model, child, digits_artifact, tmp_path):
    with pytest.raises(ConfigError, match="unknown device class 'pi-zero'"):
        _config("pi-zero").validate()
    out = tmp_path / "r.json"

    def cli(*extra: str):
        io = ("--parent", trained_model, "--child", child, "--dataset", digits_artifact, "--output", out)
        return run_cli("isa-check", *map(str, io), *extra)

    result = cli("--device-classes", "rpi4-qemu,pi-zero")
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "pi-zero" in result.stderr
    assert not out.exists()
    result = cli("--isa-max-samples", "-1")
    assert result.returncode == 2 and "isa_max_samples" in result.stderr and not out.exists()
    result = cli("--isa-parent-max-samples", "-1")
    assert result.returncode == 2 and "isa_parent_max_samples" in result.stderr and not out.exists()
