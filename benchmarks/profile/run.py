"""Where the time goes: `edgecompress profile` on the zoo's CNN and MobileNet-style model, torchvision's
ResNet-18 and timm's ViT-Tiny (random weights: latency does not depend on their values; small inputs),
and the CNN's static INT8 child against its float parent per op family, on an emulated device class.
For each model: the end-to-end p50 (benchmark runner), Σ node p50 (ONNX Runtime's profiler), the
per-call floor, the parts-vs-whole gap against the stated rule, and the top layers.

    python -m benchmarks.profile.run            # the committed report (8 interleaved rounds)
    python -m benchmarks.profile.run --quick    # the CNN only, 8 rounds of 20 calls (smoke)

results.json holds every measurement; results.md is rendered from it; results.png the share plots.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import machine_info, write_report
from edgecompress.export import export_onnx
from edgecompress.profile import ProfileConfig, op_type_comparison, profile_markdown, profile_models
from edgecompress.zoo import build_model

HERE = Path(__file__).resolve().parent
log = logging.getLogger(__name__)

MODELS = {
    "cnn": ({"family": "cnn"}, [1, 28, 28]),
    "mobilenet": ({"family": "mobilenet"}, [1, 28, 28]),
    "resnet18": ({"factory": "edgecompress.architectures:resnet18"}, [3, 64, 64]),
    "vit_tiny": ({"factory": "edgecompress.architectures:vit_tiny"}, [3, 32, 32]),
}
DEVICE_CLASS = "rpi4-emulated"


def int8_child(float_path: Path, input_shape: list[int], out: Path) -> Path:
    """Static QDQ INT8, per channel (the project's default recipe), calibrated on random inputs:
    latency only, which does not depend on the calibration data."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.items = iter([{"input": rng.random((1, *input_shape), dtype=np.float32)} for _ in range(16)])

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(float_path), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)  # fmt: skip
    return out


def run(quick: bool, shared: bool = True) -> dict[str, Any]:
    names = ["cnn"] if quick else list(MODELS)
    config = ProfileConfig(DEVICE_CLASS, rounds=8, runs=20 if quick else 100, warmup_runs=10, top=8)
    info = machine_info()
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name in names:
            spec, shape = MODELS[name]
            model = build_model(spec, shape, 10, seed=0).eval()
            paths[name] = Path(tmp) / f"{name}.onnx"
            export_onnx(model, tuple(shape), paths[name])
        import onnx

        assert onnx.load(str(paths["cnn"])).graph.input[0].name == "input"
        paths["cnn-int8"] = int8_child(paths["cnn"], MODELS["cnn"][1], Path(tmp) / "cnn-int8.onnx")
        result = profile_models(paths, config)
    result["int8_vs_float"] = [
        {"float": "cnn", "int8": "cnn-int8", "rows": op_type_comparison(result, "cnn", "cnn-int8")}
    ]
    result["machine"] = {**info, "load_average_at_end": os.getloadavg(), "shared": shared}
    result["inputs"] = {n: MODELS[n][1] for n in names}
    result["command"] = "python -m benchmarks.profile.run" + (" --quick" if quick else "")
    return result


MACHINE_STATE = {
    True: "**A shared machine** (other engineers' jobs ran)",
    False: "**A quiet machine** (nothing else was started on it during the run)",
}


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    head = (
        f"Measured {m['date']} on {m['cpu_model']} ({m['cpu_count']} CPUs), git {m['git_commit']}, onnxruntime "
        f"{m['onnxruntime']}. {MACHINE_STATE[m.get('shared', True)]}: load average "
        f"{m['load_average_at_start'][0]:.2f} at start, {m['load_average_at_end'][0]:.2f} at end. Random weights, "
        f"inputs {results['inputs']}. Command: `{results['command']}`.\n\n"
    )
    notes = "".join(f"- {n}\n" for n in results.get("notes", []))
    notes = f"Reading (written after the run, from its numbers):\n\n{notes}\n" if notes else ""
    return head + notes + profile_markdown(results, {label: "results.png" for label in results["models"]})


def plot(results: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgecompress.reports import figure_png

    labels = list(results["models"])
    fig, axes = plt.subplots(len(labels), 1, figsize=(8, 2.6 * len(labels)))
    for ax, label in zip(np.atleast_1d(axes), labels, strict=True):
        s = results["models"][label]
        nodes = s["nodes"][:6]
        names = [f"{n['node'][-38:]} ({n['op']})" for n in nodes] + ["outside nodes"]
        values = [100 * n["share"] for n in nodes] + [100 * s["gap_fraction"]]
        ax.barh(range(len(names))[::-1], values, color=["#4477aa"] * len(nodes) + ["#cc6677"])
        ax.set_yticks(range(len(names))[::-1], names, fontsize=7)
        ax.set_title(
            f"{label}: p50 {s['whole_p50_ms']:.4f} ms on {results['device_class']} (emulated)", fontsize=8
        )
        ax.set_xlabel("% of end-to-end p50", fontsize=7)
    fig.tight_layout()
    return figure_png(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument(
        "--quiet-machine",
        action="store_true",
        help="say in the report that nothing else was started on the machine during the run",
    )
    parser.add_argument("--render", action="store_true", help="re-render results.md/png from results.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    if args.render:
        write_report(
            json.loads((args.out / "results.json").read_text()), args.out, render, plot, "results.png"
        )
        return
    write_report(run(args.quick, shared=not args.quiet_machine), args.out, render, plot, "results.png")


if __name__ == "__main__":
    main()
