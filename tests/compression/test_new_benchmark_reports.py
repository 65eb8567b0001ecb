"""The reports committed this round (profile, latency-aware vs uniform pruning, per-op precision and
int4) are rendered from their results.json, and their verdicts follow the rule from the recorded
numbers — never that a target was met."""

from __future__ import annotations

import importlib
import json
import statistics
from pathlib import Path

import pytest

from benchmarks.common import mean_interval, verdict

REPO = Path(__file__).resolve().parents[2]
PRUNING_RUNS = sorted(
    str(p.parent.relative_to(REPO)) for p in (REPO / "benchmarks/profile/pruning").glob("**/results.json")
)
PROFILE_RUNS = ["benchmarks/profile"] + sorted(  # the first run, then the dated ones
    str(p.parent.relative_to(REPO)) for p in (REPO / "benchmarks/profile").glob("2026-*/results.json")
)
REPORTS = [
    *(("benchmarks.profile.run", folder) for folder in PROFILE_RUNS),
    *(("benchmarks.profile.prune_vs_uniform", folder) for folder in PRUNING_RUNS),
    ("benchmarks.quantization.per_op_int4", "benchmarks/quantization/2026-12-06-per-op-int4"),
]


@pytest.mark.parametrize("module, folder", REPORTS)
def test_every_number_in_the_report_is_rendered_from_its_json(module, folder):
    results = json.loads((REPO / folder / "results.json").read_text())
    rendered = importlib.import_module(module).render(results)
    assert rendered.strip() == (REPO / folder / "results.md").read_text().strip()


@pytest.mark.parametrize("folder", PRUNING_RUNS)
def test_pruning_verdicts_follow_the_rule_from_the_seeds(folder):
    from benchmarks.profile.prune_vs_uniform import target_verdict

    r = json.loads((REPO / folder / "results.json").read_text())
    diffs = [s["aware"]["test_accuracy"] - s["uniform"]["test_accuracy"] for s in r["seeds"]]
    interval = mean_interval(diffs)
    assert interval["low"] == pytest.approx(r["accuracy_difference"]["low"])
    assert interval["high"] == pytest.approx(r["accuracy_difference"]["high"])
    assert r["verdict"]["aware_beats_uniform"] == verdict(interval, 0.0, True, strict=True)
    equal = all(s["equal_p50"]["ci_low"] >= 0.95 and s["equal_p50"]["ci_high"] <= 1.05 for s in r["seeds"])
    assert r["verdict"]["equal_p50_within_5pct"] == ("met" if equal else "not shown")
    # the target counts the accuracy verdict only where the children ran at equal p50
    expected = r["verdict"]["aware_beats_uniform"] if equal else "not met: equal p50 not shown"
    assert target_verdict(r) == expected


@pytest.mark.parametrize("folder", PROFILE_RUNS)
def test_profile_verdicts_follow_their_stated_tolerance(folder):
    r = json.loads((REPO / folder / "results.json").read_text())
    assert r["models"]
    for name, m in r["models"].items():
        nodes = len(m["nodes"]) if isinstance(m["nodes"], list) else m["nodes"]
        # runs since the calibration take the profiler's measured cost per node off the nodes' sum
        overhead = r.get("profiler_calibration", {}).get("overhead_per_node_ms", 0.0)
        assert m.get("profiler_overhead_per_node_ms", 0.0) == overhead, name
        gap = m["whole_p50_ms"] - (m["sum_node_p50_ms"] - overhead * nodes)
        # the stated rule: |whole − (Σ nodes − nodes × overhead) − floor| ≤ 10 % of the whole + 1 µs per node
        assert m["allowed_ms"] == pytest.approx(0.1 * m["whole_p50_ms"] + 0.001 * nodes, abs=1e-4), name
        if "round_unexplained_ms" in m:  # since the pairing: the median of each round's own difference
            unexplained = statistics.median(m["round_unexplained_ms"])
            assert m["unexplained_ms"] == pytest.approx(unexplained), name
        else:  # before it: the medians of the whole and of the parts, taken apart
            unexplained = gap - m["floor_p50_ms"]
        assert m["parts_add_up"] == (abs(unexplained) <= m["allowed_ms"] + 1e-9), name


@pytest.mark.parametrize("folder", PRUNING_RUNS)
def test_pruning_command_is_the_one_that_gives_its_settings(folder):
    """The recorded command, parsed again, gives the recorded settings, and the settings render that
    command: every flag a run used (--match, --netadapt-finetune-samples, ...) is in both."""
    from benchmarks.profile.prune_vs_uniform import DEFAULTS, command, parse_settings

    r = json.loads((REPO / folder / "results.json").read_text())
    settings = r.get("settings", DEFAULTS)
    assert command(settings) == r["command"]
    assert parse_settings(r["command"].split()[3:])[0] == settings
