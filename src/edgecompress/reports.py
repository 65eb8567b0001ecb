"""Reports people look at: Markdown tables, and HTML pages with inline PNG plots for the KFP UI."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any


def fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return (
            f"{value:.{digits}g}"
            if abs(value) < 1e-3 or abs(value) >= 1e6
            else f"{value:.{digits}f}".rstrip("0").rstrip(".")
        )
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def figure_png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def png_img_tag(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}"/>'


def html_page(title: str, sections: Sequence[tuple[str, str]]) -> str:
    """`sections` are (heading, raw HTML) pairs; tables can come from `html_table`."""
    body = "\n".join(f"<h2>{html.escape(h)}</h2>\n{content}" for h, content in sections)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>\n{body}</body></html>"
    )


def html_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def confusion_matrix_png(cm: list[list[int]], class_names: list[str], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    arr = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    im = ax.imshow(arr, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(arr.shape[0]):
        for j in range(arr.shape[1]):
            if arr[i, j]:
                ax.text(
                    j,
                    i,
                    str(arr[i, j]),
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if arr[i, j] > arr.max() / 2 else "black",
                )
    fig.colorbar(im, ax=ax)
    return figure_png(fig)


def latency_png(samples_by_label: dict[str, list[float]], title: str) -> bytes:
    """Latency distributions (one box/strip per model or device class), log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(samples_by_label)
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.55 * len(labels)))
    ax.boxplot(
        [samples_by_label[k] for k in labels], orientation="horizontal", showfliers=False, whis=(1, 99)
    )
    ax.set_yticks(range(1, len(labels) + 1), labels, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("latency per inference (ms, whiskers p1–p99)")
    ax.set_title(title)
    return figure_png(fig)
