"""`edgecompress profile MODEL --device-class C`: where a model's time goes on a device class."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgecompress.entry import add_command
from edgecompress.params import add_options, from_args
from edgecompress.profile import ProfileConfig


def register(sub: argparse._SubParsersAction) -> None:
    from edgecompress.cli.steps import _common

    p = add_command(sub, cmd_profile)
    p.add_argument("model", type=Path, help="Model artifact directory or .onnx file")
    p.add_argument("--compare", type=Path, help="a second model (e.g. its INT8 child), profiled interleaved")
    p.add_argument(
        "--output", type=Path, default=Path("profile.json"), help="result JSON (default profile.json)"
    )
    p.add_argument("--report", type=Path, help="HTML report (table and bar chart of shares)")
    p.add_argument("--markdown", type=Path, help="Markdown report (tables; the plot goes beside it as .png)")
    add_options(p, ProfileConfig)
    _common(p)


def cmd_profile(a: argparse.Namespace) -> int:
    """per-layer latency of a model on a device class (ONNX Runtime's profiler)

    Profile a Model artifact (or a bare .onnx file) on an emulated device class: per-node p50 from ONNX
    Runtime's profiler over rounds, each node's share of the end-to-end p50 (the same model unprofiled,
    called in turn with the profiled one in the same process), and whether the parts add up to the whole once the profiler's own cost per node (measured
    on a calibration chain in the same rounds) is taken off. With --compare, a second model (e.g. the INT8
    child) is profiled in alternating rounds and compared per op family."""
    from edgecompress.cli.steps import _lineage
    from edgecompress.profile import profile_step, write_markdown

    result = profile_step(a.model, from_args(ProfileConfig, a), a.output, a.report, a.compare, _lineage(a))
    if a.markdown:
        write_markdown(result, a.markdown)
    summary = {
        label: {
            k: m[k]
            for k in (
                "whole_p50_ms",
                "sum_node_p50_ms",
                "profiler_overhead_per_node_ms",
                "sum_node_cost_ms",
                "floor_p50_ms",
                "gap_ms",
                "parts_add_up",
            )
        }
        | {"top": [(n["node"], n["op"], round(n["share"], 4)) for n in m["nodes"][:3]]}
        for label, m in result["models"].items()
    }
    print(json.dumps({"device_class": result["device_class"], "emulated": True, **summary}, indent=2))
    return 0
