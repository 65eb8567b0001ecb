"""benchmarks/isa/check: the renderer and target on hand-made results, and every committed dated run
is what the renderer makes of its results.json."""

from __future__ import annotations

import json

from benchmarks.isa.check import HERE, PLOT, plot, render
from benchmarks.isa.run import targets
from tests.committed_runs import each_run, rendered_results

RUNS = sorted(HERE.glob("check-*/results.json"))


def _runs(walls: tuple[float, ...], parent_samples: int) -> list[dict]:
    return [{"wall_s": w, "samples": 5000, "split_size": 5000, "subsample_step": 1, "parent_samples": parent_samples,
             "model_seconds": {"child": w * 0.6, "parent": w * 0.2}, "verdict": "accepted",
             "agreement_with_host": 1.0, "parent_agreement_with_host": 1.0} for w in walls]  # fmt: skip


def _results(*walls: float) -> dict:
    runs = _runs(walls, 200)
    return {
        "machine": {"cpu_model": "x", "machine": "x86_64", "cpu_count": 2, "git_commit": "abc", "date": "2026-12-01"},
        "qemu_version": "7.2", "image": "img", "network": "net", "child": "static QDQ", "device_class": "rpi4-qemu",
        "emulated": "qemu", "settings": {"isa_max_samples": 0, "isa_parent_max_samples": 200},
        "check_timing": {"runs": runs}, "parent_on_all": {"runs": _runs(tuple(4 * w for w in walls), 5000)}, "seconds": sum(walls), "finished": "2026-12-01T03:00:00+00:00",
        "command": "python -m benchmarks.isa.check",
    }  # fmt: skip


def test_the_target_names_the_parents_subsample_and_the_report_labels_qemu():
    results = _results(300.0, 310.0, 305.0)
    (t,) = targets(results)
    assert (
        t["target"]
        == "isa-check wall time ≤ 600 s (5000 of 5000 validation images, child; float parent on 200 of them on rpi4-qemu)"
    )
    assert t["verdict"] == "met"
    md = render(results)
    assert (
        "**emulated (QEMU user mode)**" in md
        and "| 1 | 5,000 | 200 | 300 | 180 | 60 | 100.00 | 100.00 | accepted |" in md
    )
    assert "| missed |" in render(_results(900.0, 910.0, 905.0))
    assert "| parent on every image | 1220 [1170, 1270] (n=3) | 244 |" in md
    assert "Per round, before / now: 4.00× (identical values, n=3) faster." in md  # no zero-width interval
    assert plot(results)[:4] == b"\x89PNG"


def test_there_is_a_committed_run():
    assert RUNS


@each_run(RUNS)
def test_committed_run_is_rendered_from_its_json_and_checks_the_whole_split(path):
    results = rendered_results(path, render)
    assert (path.parent / PLOT).read_bytes()[:4] == b"\x89PNG"
    assert results["emulated"] == "qemu" and len(results["check_timing"]["runs"]) >= 3
    for r in results["check_timing"]["runs"]:
        assert r["samples"] == r["split_size"] and r["subsample_step"] == 1  # the whole split
        assert r["parent_samples"] == results["settings"]["isa_parent_max_samples"] < r["samples"]
        assert r["wall_s"] > r["model_seconds"]["child"] + r["model_seconds"]["parent"]
    before = results["parent_on_all"]["runs"]
    assert len(before) == len(results["check_timing"]["runs"])
    assert all(r["parent_samples"] == r["samples"] == r["split_size"] for r in before)


def test_the_docstring_cites_the_measured_whole_split_cost():
    """check.py said the parent on every image took ~1,200-1,500 s; the committed run measured it."""
    from benchmarks.common import format_interval, mean_interval
    from benchmarks.isa import check

    results = json.loads(RUNS[0].read_text())
    before = mean_interval([r["wall_s"] for r in results["parent_on_all"]["runs"]])
    cited = format_interval(before, digits=0).replace(" (n=", " s, n=").rstrip(")")
    assert f"{RUNS[0].parent.name} measured" in check.__doc__ and f"{cited}" in " ".join(
        check.__doc__.split()
    )
