"""The statistics every decision shares (gate, isa-check, autotune, mixed precision, promotion, NAS,
benchmarks): one interval method for a paired accuracy difference and one for a paired speed-up, so
that "the interval decides" means the same thing everywhere.

- Accuracy: parent and child are scored on the same images, so the difference is a difference of
  paired proportions. Its interval is Tango's score interval (Tango 1998, Stat. Med. 17:891): right at
  small n and with few discordant pairs, where a bootstrap over images collapses (no discordant pair
  gives a bootstrap interval of [0, 0]; Tango gives ±z²/(n+z²), 1.40 points at n = 270).
- Speed: parent and child are timed in alternating rounds on the same device; each round gives a
  ratio, and the speed-up is the geometric mean of the ratios with a Student t interval on their
  logarithms. The t interval holds its level at any number of rounds (a percentile bootstrap over 3
  rounds called two equal models "faster" ~13 % of the time); `MIN_LATENCY_ROUNDS` keeps it usable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# Fewer rounds make the t interval too wide to resolve the small speed-ups users care about; the
# level itself holds at any n (tests/unit/test_stats.py simulates it).
MIN_LATENCY_ROUNDS = 8


def _z(confidence: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(1 - (1 - confidence) / 2))


def _tango_score(delta: float, b: int, c: int, n: int) -> float:
    """Tango's score statistic for H0: p(parent only) − p(child only) = delta; decreasing in delta."""
    numerator = b - c - n * delta
    if numerator == 0:
        return 0.0
    a_ = 2 * n
    b_ = -b - c + (2 * n - b + c) * delta
    c_ = -c * delta * (1 - delta)
    p_child_only = (math.sqrt(max(b_ * b_ - 4 * a_ * c_, 0.0)) - b_) / (2 * a_)
    variance = n * (2 * p_child_only + delta * (1 - delta))
    if variance <= 0:
        return math.inf if numerator > 0 else -math.inf
    return numerator / math.sqrt(variance)


def paired_difference_interval(
    parent_only: int, child_only: int, n: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Tango's score interval for (parent_only − child_only) / n, the paired accuracy drop."""
    if n <= 0 or parent_only < 0 or child_only < 0 or parent_only + child_only > n:
        raise ValueError(f"counts out of range: parent_only={parent_only}, child_only={child_only}, n={n}")
    z = _z(confidence)
    point = (parent_only - child_only) / n

    def solve(target: float, lo: float, hi: float) -> float:
        for _ in range(80):  # bisection: the statistic is monotone in delta
            mid = (lo + hi) / 2
            if _tango_score(mid, parent_only, child_only, n) > target:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    low = -1.0 if point <= -1 else solve(z, -1.0, point)
    high = 1.0 if point >= 1 else solve(-z, point, 1.0)
    return low, high


def min_decision_images(max_drop: float, confidence: float = 0.95) -> int:
    """The fewest images on which a child identical to its parent (no discordant pair) has an upper
    bound within `max_drop`: on fewer, the rule `upper` could never accept, whatever the child."""
    if not 0 < max_drop < 1:
        raise ValueError(f"max_drop must be in (0, 1), got {max_drop}")
    z2 = _z(confidence) ** 2
    return math.ceil(z2 * (1 - max_drop) / max_drop - 1e-9)


def speedup_interval(
    parent_ms: Sequence[float], child_ms: Sequence[float], confidence: float = 0.95
) -> dict[str, float]:
    """Geometric-mean speed-up over paired rounds (parent / child time per round) with a t interval."""
    parent, child = np.asarray(parent_ms, float), np.asarray(child_ms, float)
    if len(parent) != len(child) or len(parent) < 2:
        raise ValueError("paired rounds are needed: as many parent as child rounds, at least two")
    if not (np.all(parent > 0) and np.all(child > 0)):
        raise ValueError("latencies must be positive")
    return ratio_interval(list(parent / child), confidence)


def ratio_interval(ratios: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Geometric mean of per-round speed-ups (parent time / child time) with a t interval on their logs:
    `speedup_interval` for rounds that measured their ratio directly (a paired benchmark)."""
    from scipy.stats import t

    values = np.asarray(ratios, float)
    if len(values) < 2:
        raise ValueError("at least two rounds are needed")
    if not np.all(values > 0):
        raise ValueError("ratios must be positive")
    logs = np.log(values)
    mean, n = float(logs.mean()), len(logs)
    half = float(t.ppf(1 - (1 - confidence) / 2, n - 1) * logs.std(ddof=1) / math.sqrt(n))
    return {
        "speedup": math.exp(mean),
        "ci_low": math.exp(mean - half),
        "ci_high": math.exp(mean + half),
        "rounds": n,
        "method": "geometric mean of per-round ratios, Student t interval on their logs",
    }
