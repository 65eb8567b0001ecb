"""What a finished search shows: `summarize` turns the study into (trials, front, pick) with the
front re-measured at full benchmark settings, `front_png` plots it, and `nas_report` renders the
HTML report (the KFP UI's Markdown/HTML artifact)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from edgecompress.errors import ConfigError
from edgecompress.nas.pareto import pareto_front
from edgecompress.nas.search import SURPLUS_ATTR, Constraints, LatencyMeter, NasConfig, spec_key, trial_record
from edgecompress.reports import figure_png, fmt, html_page, html_table, png_img_tag


def summarize(
    study: Any,
    meter: LatencyMeter,
    constraints: Constraints,
    config: NasConfig,
    remeasure: bool = True,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(trials, front, pick): the front re-measured with the final benchmark settings and
    the pick chosen on the re-measured latency. Raises ConfigError when no candidate was feasible."""
    trials = [
        trial_record(t)
        for t in study.get_trials(deepcopy=False)
        if t.state.is_finished() and not t.user_attrs.get(SURPLUS_ATTR)
    ]
    complete = [t for t in trials if t["state"] == "complete"]
    if not complete:
        reasons = sorted({t["reason"] for t in trials if t["reason"]})[:5]
        raise ConfigError(
            f"NAS: none of the {len(trials)} trials met the constraints {asdict(constraints)}; "
            f"reasons: {reasons or ['(all pruned or failed)']}. Relax the constraints or widen the search space."
        )
    unique: dict[str, dict[str, Any]] = {}
    for t in complete:
        unique.setdefault(spec_key(t["spec"]), t)
    pool = list(unique.values())
    idx = pareto_front([(t["accuracy"], t["p50_ms"]) for t in pool])
    front = sorted((dict(pool[i], search_p50_ms=pool[i]["p50_ms"]) for i in idx), key=lambda t: t["p50_ms"])
    if remeasure:
        for member in front:
            member["p50_ms"] = meter.measure_spec(member["spec"], config.final_bench)["p50_ms"]
    feasible = [
        m for m in front if not constraints.max_latency_ms or m["p50_ms"] <= constraints.max_latency_ms
    ]
    if not feasible:
        raise ConfigError(
            f"NAS: re-measured, every Pareto-front member is over max_latency_ms {constraints.max_latency_ms} "
            f"(fastest {min(m['p50_ms'] for m in front):.3f} ms): the search-time measurement was too optimistic"
        )
    best = max(m["accuracy"] for m in feasible)
    pick = min(
        (m for m in feasible if m["accuracy"] >= best - config.accuracy_tolerance), key=lambda m: m["p50_ms"]
    )
    return trials, front, pick


def mark_pick(ax: Any, p50_ms: float, accuracy: float, label: str, size: float = 120) -> None:
    """Ring the picked model (latency, accuracy as a fraction) on a latency-vs-accuracy % plot."""
    ax.scatter([p50_ms], [100 * accuracy], s=size, facecolors="none", edgecolors="C3", lw=2, label=label)


def front_png(
    trials: list[dict[str, Any]],
    front: list[dict[str, Any]],
    pick: dict[str, Any],
    reference: dict[str, Any] | None,
    title: str,
) -> bytes:
    """Every trained trial (low fidelity), the re-measured front, the pick and the reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    done = [t for t in trials if t["state"] == "complete"]
    pruned = [t for t in trials if t["state"] == "pruned" and t["accuracy"] is not None and t["p50_ms"]]
    ax.scatter(
        [t["p50_ms"] for t in done], [100 * t["accuracy"] for t in done], s=18, c="#999", label="trials"
    )
    if pruned:
        ax.scatter(
            [t["p50_ms"] for t in pruned],
            [100 * t["accuracy"] for t in pruned],
            s=12,
            marker="x",
            c="#bbb",
            label="stopped early (halving)",
        )
    ax.plot(
        [m["p50_ms"] for m in front],
        [100 * m["accuracy"] for m in front],
        "o-",
        c="C0",
        label="Pareto front (re-measured)",
    )
    mark_pick(ax, pick["p50_ms"], pick["accuracy"], "pick")
    if reference:
        ax.axvline(reference["p50_ms"], ls="--", c="C1", label="reference model p50")
    ax.set_xlabel("p50 latency, ms (batch 1)")
    ax.set_ylabel("search accuracy, % (hold-out, low fidelity)")
    ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return figure_png(fig)


def nas_report(summary: dict[str, Any], png: bytes) -> str:
    """The HTML report of `nas_step`'s summary: the search, the retrained pick, the front."""
    pick, ref = summary["pick"], summary.get("reference")
    final = pick["final"]
    label = "emulated" if summary["emulated"] else "device"
    overview = html_table(
        ["", "value"],
        [
            ["device class", f"{summary['device_class']} ({label})"],
            ["study", summary["study_name"]],
            [
                "trials finished / budget",
                f"{summary['budget']['trials_finished']} / {summary['budget']['n_trials']}",
            ],
            [
                "complete / stopped early / infeasible / failed",
                " / ".join(str(summary["counts"][k]) for k in ("complete", "pruned", "infeasible", "fail")),
            ],
            ["search time", f"{summary['budget']['search_seconds']:.0f} s"],
            ["constraints", json.dumps({k: v for k, v in summary["constraints"].items() if v})],
        ],
    )
    pick_rows = [
        [
            "NAS pick (retrained)",
            fmt(final["val_accuracy"]),
            fmt(final["test_accuracy"]),
            fmt(final["p50_ms"], 3),
            json.dumps(pick["spec"]["kwargs"]),
        ],
    ]
    if ref:
        pick_rows.append(
            [
                "reference model",
                "",
                "",
                fmt(ref["p50_ms"], 3),
                json.dumps((ref.get("spec") or {}).get("kwargs")),
            ]
        )
    front_rows = [
        [
            m["number"],
            fmt(m["accuracy"]),
            fmt(m["p50_ms"], 3),
            fmt(m["search_p50_ms"], 3),
            m["params"],
            m["macs"],
            json.dumps(m["spec"]["kwargs"]),
        ]
        for m in summary["front"]
    ]
    return html_page(
        "Neural architecture search",
        [
            ("Search", overview),
            (
                "Pick",
                html_table(["model", "val accuracy", "test accuracy", "p50 ms", "architecture"], pick_rows),
            ),
            (
                "Pareto front",
                png_img_tag(png, "Pareto front")
                + html_table(
                    [
                        "trial",
                        "search accuracy",
                        "p50 ms (re-measured)",
                        "p50 ms (search)",
                        "params",
                        "MACs",
                        "architecture",
                    ],
                    front_rows,
                ),
            ),
        ],
    )
