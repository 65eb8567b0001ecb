"""Two-objective Pareto tools on (accuracy ↑, latency ↓) points: the front, ranks (non-dominated
layers, what successive halving ranks trials by) and the hypervolume (how benchmarks compare searches).
Pure functions on lists of (accuracy, latency_ms) tuples; no torch, no optuna."""

from __future__ import annotations


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points, maximizing the first value and minimizing the second."""
    front = []
    for i, (a, lat) in enumerate(points):
        dominated = any(
            (b >= a and m <= lat) and (b > a or m < lat) for j, (b, m) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return front


def pareto_ranks(points: list[tuple[float, float]]) -> list[int]:
    """Per point, its non-dominated layer: 0 for the front, 1 for the front of the rest, and so on."""
    remaining, ranks, rank = list(range(len(points))), [0] * len(points), 0
    while remaining:
        sub = [points[i] for i in remaining]
        layer = {remaining[i] for i in pareto_front(sub)}
        for i in layer:
            ranks[i] = rank
        remaining = [i for i in remaining if i not in layer]
        rank += 1
    return ranks


def hypervolume(points: list[tuple[float, float]], ref_accuracy: float, ref_latency_ms: float) -> float:
    """Area dominated by (accuracy ↑, latency ↓) points and bounded by the reference point, in
    accuracy × milliseconds; points worse than the reference in either objective add nothing."""
    pts = sorted({(a, m) for a, m in points if a > ref_accuracy and m < ref_latency_ms}, key=lambda p: p[1])
    area, best_acc = 0.0, ref_accuracy
    for i, (acc, lat) in enumerate(pts):
        best_acc = max(best_acc, acc)
        next_lat = pts[i + 1][1] if i + 1 < len(pts) else ref_latency_ms
        area += (best_acc - ref_accuracy) * (next_lat - lat)
    return area
