"""The human-readable side of a drift result: an HTML page with tables and plots, and the
result.json + report.html pair written together (atomically) by `edgecompress drift`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def report_html(result: dict[str, Any]) -> str:
    """A page for a result from `detectors.detect`: verdict, per-test p-values, and per-feature
    (tabular) or per-class (image) tables and plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgecompress.reports import figure_png, html_page, html_table, png_img_tag

    verdict = "DRIFTED" if result["drifted"] else "no drift"
    summary = html_table(
        ["verdict", "score", "p-value", "alpha", "new samples", "reference samples", "model", "dataset"],
        [
            [
                verdict,
                result["score"],
                result["p_value"],
                result["alpha"],
                result["batch_size"],
                result["reference_size"],
                result["model_id"],
                result["dataset"]["name"],
            ]
        ],
    )
    tests = html_table(
        ["test", "p-value", "drifted"], [[k, v["p_value"], v["drifted"]] for k, v in result["tests"].items()]
    )
    sections = [("Summary", summary), ("Tests", tests)]
    if result["kind"] == "tabular":
        rows = result["features"]
        table = html_table(
            ["feature", "test", "statistic", "p-value", "PSI", "drifted"],
            [[n, f["test"], f["statistic"], f["p_value"], f["psi"], f["drifted"]] for n, f in rows.items()],
        )
        fig, axes = plt.subplots(1, 2, figsize=(10, max(3, 0.25 * len(rows))))
        names = list(rows)
        axes[0].barh(names, [-np.log10(max(f["p_value"], 1e-300)) for f in rows.values()])
        axes[0].axvline(
            -np.log10(result["alpha"] / len(rows)), color="r", ls="--", label="Bonferroni threshold"
        )
        axes[0].set_xlabel("-log10 p-value")
        axes[0].legend()
        axes[1].barh(names, [f["psi"] for f in rows.values()])
        axes[1].axvline(0.2, color="r", ls="--", label="PSI 0.2")
        axes[1].set_xlabel("PSI")
        axes[1].legend()
        sections += [("Per feature", table + png_img_tag(figure_png(fig), "per-feature tests"))]
    else:
        rows = result["classes"]
        table = html_table(
            ["class", "KS statistic", "p-value", "mean p (reference)", "mean p (new)", "drifted"],
            [
                [
                    n,
                    c["ks_statistic"],
                    c["p_value"],
                    c["mean_prob_reference"],
                    c["mean_prob_new"],
                    c["drifted"],
                ]
                for n, c in rows.items()
            ],
        )
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
        names = list(rows)
        idx = np.arange(len(names))
        axes[0].bar(idx, [c["ks_statistic"] for c in rows.values()])
        axes[0].set_xticks(idx, names, rotation=45, ha="right")
        axes[0].set_ylabel("KS statistic (softmax prob.)")
        share = result["predicted_class_share"]
        ref = np.array(share["reference"], float) / max(1, sum(share["reference"]))
        new = np.array(share["new"], float) / max(1, sum(share["new"]))
        axes[1].bar(idx - 0.2, ref, 0.4, label="reference")
        axes[1].bar(idx + 0.2, new, 0.4, label="new batch")
        axes[1].set_xticks(idx, names, rotation=45, ha="right")
        axes[1].set_ylabel("predicted class share")
        axes[1].legend()
        sections += [("Per class (softmax outputs)", table + png_img_tag(figure_png(fig), "per-class tests"))]
    return html_page(f"Drift check: {verdict}", sections)


def write_outputs(result: dict[str, Any], output_dir: Path) -> dict[str, Path]:
    """result.json and report.html, written together atomically."""
    from edgecompress.io import atomic_path

    output_dir = Path(output_dir)
    html = report_html(result)
    with atomic_path(output_dir, directory=True) as tmp:
        (tmp / "result.json").write_text(json.dumps(result, indent=2, default=float))
        (tmp / "report.html").write_text(html)
    return {"result": output_dir / "result.json", "report": output_dir / "report.html"}
