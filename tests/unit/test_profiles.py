"""Device profiles as data, and quantization settings that follow the target device class, never the
CPU of the machine that quantizes."""

import textwrap

import pytest

from edgecompress.errors import ConfigError
from edgecompress.runtime.devices import PROFILES_ENV, needs_reduce_range, profile, profiles
from tests.conftest import run_cli

X86_NO_VNNI = textwrap.dedent("""
    x86-avx2:
      description: an x86 box with AVX2 and no VNNI
      isa: x86_64
      int8_dot_product: none
      cores: 4
      threads: 4
      emulated: false
""")


def test_packaged_profiles_and_the_reduce_range_rule():
    assert {"rpi4", "rpi5", "jetson-orin-nano", "rpi4-emulated", "jetson-orin-nano-emulated"} <= set(
        profiles()
    )
    assert profile("rpi4-emulated").emulation == "emulated" and profile("rpi4").emulation == "real"
    assert needs_reduce_range("rpi4") is False and needs_reduce_range("rpi4-emulated") is False  # its board's
    with pytest.raises(ConfigError, match="unknown device class 'toaster'"):
        profile("toaster")


def test_a_users_profile_file_adds_classes_and_is_checked(tmp_path, monkeypatch):
    good = tmp_path / "profiles.yaml"
    good.write_text(X86_NO_VNNI)
    monkeypatch.setenv(PROFILES_ENV, str(good))
    assert needs_reduce_range("x86-avx2") is True
    bad = tmp_path / "bad.yaml"
    bad.write_text("pi-zero:\n  description: x\n  isa: armv6\n")
    monkeypatch.setenv(PROFILES_ENV, str(bad))
    with pytest.raises(
        ConfigError, match=r"'pi-zero'.*lacks \['int8_dot_product', 'cores', 'threads', 'emulated'\]"
    ):
        profiles()


def _quantize_sha(model, data, out, target):
    from edgecompress.export import load_model_package
    from edgecompress.quantize import QuantConfig, quantize_step
    from edgecompress.step import Lineage

    quantize_step(
        model, data, out, QuantConfig(calibration_samples=32, target=target), Lineage(enabled=False)
    )
    package = load_model_package(out)
    return package.info["onnx_sha256"], package.info["quant_config"]


def test_the_same_target_gives_the_same_model_whatever_cpu_quantizes_it(
    trained_model, digits_artifact, tmp_path, monkeypatch
):
    import edgecompress.quantize.config as config

    shas = set()
    for build_cpu_needs_it in (True, False):  # a build node without VNNI, then one with it
        monkeypatch.setattr(config, "cpu_needs_reduce_range", lambda v=build_cpu_needs_it: v)
        sha, recorded = _quantize_sha(
            trained_model, digits_artifact, tmp_path / f"q{build_cpu_needs_it}", "rpi4"
        )
        shas.add(sha)
        assert recorded["reduce_range"] is False and recorded["target"] == "rpi4"
    assert len(shas) == 1
    good = tmp_path / "profiles.yaml"
    good.write_text(X86_NO_VNNI)
    monkeypatch.setenv(PROFILES_ENV, str(good))
    sha, recorded = _quantize_sha(trained_model, digits_artifact, tmp_path / "x86", "x86-avx2")
    assert recorded["reduce_range"] is True and sha not in shas  # 7-bit weights for that target


def test_an_unknown_target_or_a_broken_profile_file_is_exit_2(trained_model, digits_artifact, tmp_path):
    from tests.conftest import io_args

    out = tmp_path / "q"
    proc = run_cli(
        "quantize", *io_args(trained_model, digits_artifact, out), "--target", "toaster", "--no-track"
    )
    assert proc.returncode == 2 and "unknown device class 'toaster'" in proc.stderr and not out.exists()
    broken = tmp_path / "broken.yaml"
    broken.write_text("rpi9: [not, a, mapping]\n")
    proc = run_cli("quantize", *io_args(trained_model, digits_artifact, out), "--no-track",
                   env={PROFILES_ENV: str(broken)})  # fmt: skip
    assert proc.returncode == 2 and "'rpi9'" in proc.stderr and "must be a mapping" in proc.stderr
    assert not out.exists()
