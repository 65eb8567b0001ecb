"""The two-sample statistics behind the drift tests: plain numpy/scipy functions of arrays.

Every p-value here is for "both samples come from one distribution"; `bonferroni` combines several
into one that keeps the false-positive rate at most alpha. Nothing here knows about models or data.
"""

from __future__ import annotations

import numpy as np


def bonferroni(p_values: list[float] | np.ndarray) -> float:
    p = np.asarray(p_values, dtype=float)
    return float(min(1.0, p.min() * len(p))) if len(p) else 1.0


def psi(reference: np.ndarray, new: np.ndarray, bins: int = 10, categorical: bool = False) -> float:
    """Population stability index over reference-quantile bins (or categories)."""
    eps = 1e-4
    if categorical:
        cats = np.union1d(np.unique(reference), np.unique(new))
        r = np.array([(reference == c).mean() for c in cats])
        q = np.array([(new == c).mean() for c in cats])
    else:
        edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
        if len(edges) < 2:
            edges = np.array([reference.min() - 0.5, reference.min() + 0.5])
        inner = edges[1:-1]
        r = np.bincount(np.searchsorted(inner, reference, side="right"), minlength=len(edges) - 1) / len(
            reference
        )
        q = np.bincount(np.searchsorted(inner, new, side="right"), minlength=len(edges) - 1) / len(new)
    r, q = np.clip(r, eps, None), np.clip(q, eps, None)
    return float(np.sum((q - r) * np.log(q / r)))


def chi2_test(reference: np.ndarray, new: np.ndarray) -> tuple[float, float]:
    """Chi-squared test of independence on the category counts: (statistic, p-value)."""
    from scipy.stats import chi2_contingency

    cats = np.union1d(np.unique(reference), np.unique(new))
    table = np.array([[(reference == c).sum() for c in cats], [(new == c).sum() for c in cats]])
    if table.shape[1] < 2:
        return 0.0, 1.0
    stat, p, _, _ = chi2_contingency(table)
    return float(stat), float(p)


def median_bandwidth(x: np.ndarray, max_samples: int = 1000, seed: int = 0) -> float:
    """The median heuristic: the median pairwise squared distance (1.0 if that is 0)."""
    if len(x) > max_samples:
        x = x[np.random.default_rng(seed).choice(len(x), max_samples, replace=False)]
    d2 = _sq_dists(x, x)
    med = float(np.median(d2[np.triu_indices(len(x), 1)]))
    return med if med > 0 else 1.0


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T, 0.0)


def mmd_permutation_test(
    x: np.ndarray, y: np.ndarray, permutations: int = 200, seed: int = 0, bandwidth: float | None = None
) -> tuple[float, float]:
    """Gaussian-kernel MMD² (biased V-statistic) with a permutation p-value."""
    z = np.concatenate([x, y])
    bw = bandwidth or median_bandwidth(x, seed=seed)
    k = np.exp(-_sq_dists(z, z) / bw)
    n, m = len(x), len(y)
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.ones(n), np.zeros(m)])
    w = np.empty((len(z), permutations + 1))
    w[:, 0] = labels
    for i in range(1, permutations + 1):
        w[:, i] = rng.permutation(labels)
    w = w / n - (1 - w) / m
    stats = np.einsum("ip,ip->p", w, k @ w)
    observed = float(stats[0])
    p = float((1 + np.sum(stats[1:] >= observed - 1e-12)) / (1 + permutations))
    return observed, p
