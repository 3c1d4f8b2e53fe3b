"""Correlation coefficients with bootstrap intervals: pure numbers in, numbers out (no runs, no files).

Point estimates are scipy's (`pearsonr`, `spearmanr`, `kendalltau` with its default tau-b), so they
are exactly what anyone recomputing them with scipy gets. The intervals are 95% percentile
bootstrap intervals from numpy's Generator seeded with compare.SEED over compare.RESAMPLES
resamples: the same input always gives the same interval.

Two resampling schemes, both over utterances, the unit that was sampled when the suite was written:

- `paired` (utterance level): each pair belongs to a cluster, its utterance id; a resample draws
  utterance ids with replacement and takes every pair of each drawn id (an utterance rated in three
  systems brings its three pairs: they share the sentence, so they are not independent). A resample
  is represented by weights, how often each pair was drawn, and each coefficient is computed on the
  weighted pairs exactly as on the repeated pairs written out (ties counted as scipy counts them),
  so all resamples are computed at once instead of thousands of scipy calls.
- `grouped` (system level): the same draw of utterance ids; each system's mean rating and mean
  metric value are recomputed over its drawn utterances, and the coefficients are taken across the
  systems. A resample in which some system drew none of its utterances is left out; when more than
  half are, there is no interval.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .compare import CONFIDENCE, RESAMPLES, SEED

MIN_PAIRS = 3  # fewer points give no meaningful rank correlation
_BLOCK = 2_000_000  # elements of one block of Kendall's sign matrix: memory stays flat for large n
METHODS = ("pearson", "spearman", "kendall")


@dataclass(frozen=True)
class Estimate:
    value: float
    ci_low: float
    ci_high: float

    @property
    def excludes_zero(self) -> bool:
        return self.ci_low > 0 or self.ci_high < 0


NAN = Estimate(math.nan, math.nan, math.nan)


@dataclass(frozen=True)
class Coefficients:
    """Pearson, Spearman and Kendall (tau-b) of one set of pairs, each with its interval."""

    n: int  # pairs (utterance level) or systems (system level)
    pearson: Estimate
    spearman: Estimate
    kendall: Estimate
    note: str | None = None  # why the coefficients are NaN, when they are

    def get(self, method: str) -> Estimate:
        return {"pearson": self.pearson, "spearman": self.spearman, "kendall": self.kendall}[method]


def point(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> tuple[float, float, float]:
    """scipy's Pearson r, Spearman rho and Kendall tau-b; NaN where undefined (a constant side)."""
    from scipy import stats

    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xs.size < 2 or np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return math.nan, math.nan, math.nan
    with warnings.catch_warnings():  # tiny samples warn; the caller decides what is too few
        warnings.simplefilter("ignore")
        return (float(stats.pearsonr(xs, ys).statistic), float(stats.spearmanr(xs, ys).statistic),
                float(stats.kendalltau(xs, ys).statistic))


def _why_not(x: np.ndarray, y: np.ndarray, what: str) -> str | None:
    if x.size < MIN_PAIRS:
        return f"{x.size} {what}: at least {MIN_PAIRS} needed"
    if np.ptp(x) == 0:
        return "the metric is constant here"
    if np.ptp(y) == 0:
        return "the ratings are constant here"
    return None


def _draws(clusters: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """How often each cluster is drawn in each resample (resamples x clusters)."""
    m = int(clusters.max()) + 1
    rng = np.random.default_rng(seed)
    index = rng.integers(0, m, size=(resamples, m)) + m * np.arange(resamples)[:, None]
    return np.bincount(index.ravel(), minlength=resamples * m).reshape(resamples, m).astype(float)


def _interval(samples: np.ndarray, confidence: float, min_share: float = 0.5) -> tuple[float, float]:
    finite = samples[np.isfinite(samples)]
    if finite.size == 0 or finite.size < min_share * samples.size:
        return math.nan, math.nan
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(low), float(high)


def _dense(codes: np.ndarray) -> np.ndarray:
    return np.unique(codes, return_inverse=True)[1].ravel()


# --- utterance level: fixed pairs, resampled as weights ------------------------------------


def paired(x: Sequence[float], y: Sequence[float], clusters: Sequence[object], resamples: int = RESAMPLES,
           seed: int = SEED, confidence: float = CONFIDENCE) -> Coefficients:
    """The coefficients of the pairs (x, y), with intervals from resampling `clusters` (one label
    per pair: its utterance id) with replacement."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    why = _why_not(xs, ys, "pairs")
    if why:
        return Coefficients(int(xs.size), NAN, NAN, NAN, why)
    codes = _dense(np.asarray([str(c) for c in clusters]))
    w = _draws(codes, resamples, seed)[:, codes]
    gx, gy = _groups(xs, w), _groups(ys, w)
    valid = ((gx[1] > 0).sum(axis=1) >= 2) & ((gy[1] > 0).sum(axis=1) >= 2)  # both sides vary
    boot = {"pearson": _weighted_pearson(xs, ys, w),
            "spearman": _weighted_pearson(_midranks(gx), _midranks(gy), w),
            "kendall": _weighted_kendall(xs, ys, w, gx[1], gy[1])}
    return _coefficients(int(xs.size), point(xs, ys), boot, valid, confidence)


def _groups(v: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(group of each pair: the rank of its value among the distinct values, the weight of each
    group in each resample: resamples x groups). Equal values form one group: a tie."""
    _, group = np.unique(v, return_inverse=True)
    group = group.ravel()
    order = np.argsort(group, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(group[order]) != 0])
    return group, np.add.reduceat(w[:, order], starts, axis=1)


def _midranks(groups: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The rank of every pair's value in each resample written out, ties at their mean rank (as
    scipy.stats.rankdata 'average'): a group of weight T after B lighter values holds ranks
    B+1..B+T, whose mean is B + (T+1)/2."""
    group, weight = groups
    below = np.cumsum(weight, axis=1) - weight
    return (below + (weight + 1) / 2)[:, group]


def _weighted_pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pearson r per row of weights; x and y are one vector or one row per resample."""
    total = w.sum(axis=1, keepdims=True)
    dx = x - (w * x).sum(axis=1, keepdims=True) / total
    dy = y - (w * y).sum(axis=1, keepdims=True) / total
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (w * dx * dy).sum(axis=1) / np.sqrt((w * dx * dx).sum(axis=1) * (w * dy * dy).sum(axis=1))
    return np.clip(r, -1.0, 1.0)


def _weighted_kendall(x: np.ndarray, y: np.ndarray, w: np.ndarray, tx: np.ndarray, ty: np.ndarray) -> np.ndarray:
    """Kendall tau-b per row of weights: (concordant - discordant) / sqrt((n0 - ties in x) (n0 - ties
    in y)) over all pairs of the repeated sample. Copies of one pair tie on both sides and count in
    neither; `tx`, `ty` are the group weights (_groups), whose T (T - 1) / 2 are the tied pairs."""
    n = x.size
    signed = np.zeros(w.shape[0])
    block = max(1, _BLOCK // max(1, n))
    for start in range(0, n, block):
        rows = slice(start, start + block)
        s = np.sign(x[rows, None] - x[None, :]) * np.sign(y[rows, None] - y[None, :])
        signed += (w[:, rows] * (w @ s.T)).sum(axis=1)
    total = w.sum(axis=1)
    n0 = total * (total - 1) / 2
    n1 = (tx * (tx - 1) / 2).sum(axis=1)
    n2 = (ty * (ty - 1) / 2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(signed / 2 / np.sqrt((n0 - n1) * (n0 - n2)), -1.0, 1.0)


# --- system level: a mean per system, recomputed per resample ------------------------------


def grouped(x: Sequence[float], y: Sequence[float], systems: Sequence[object], clusters: Sequence[object],
            resamples: int = RESAMPLES, seed: int = SEED, confidence: float = CONFIDENCE) -> Coefficients:
    """The coefficients across systems of (mean x, mean y) per system, where pair i belongs to
    system `systems[i]` and utterance `clusters[i]`; intervals from resampling utterances."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    sys_codes = _dense(np.asarray([str(s) for s in systems]))
    k = int(sys_codes.max()) + 1 if xs.size else 0
    member = np.zeros((xs.size, k))
    member[np.arange(xs.size), sys_codes] = 1.0
    counts = member.sum(axis=0)
    mx, my = (member.T @ xs) / counts, (member.T @ ys) / counts
    why = _why_not(mx, my, "systems")
    if why:
        return Coefficients(k, NAN, NAN, NAN, why)
    codes = _dense(np.asarray([str(c) for c in clusters]))
    w = _draws(codes, resamples, seed)[:, codes]
    held = w @ member  # resamples x systems: how many of each system's pairs were drawn
    with np.errstate(invalid="ignore", divide="ignore"):
        bx, by = (w * xs) @ member / held, (w * ys) @ member / held
    keep = np.asarray((held > 0).all(axis=1))
    boot = {"pearson": _row_pearson(bx, by), "spearman": _row_spearman(bx, by), "kendall": _row_kendall(bx, by)}
    return _coefficients(k, point(mx, my), boot, keep, confidence)


def _coefficients(n: int, values: tuple[float, float, float], boot: dict[str, np.ndarray], keep: np.ndarray,
                  confidence: float) -> Coefficients:
    """The point estimates with the intervals of the resamples `keep` marks."""
    p, s, k = (Estimate(v, *_interval(np.where(keep, boot[m], np.nan), confidence))
               for v, m in zip(values, METHODS, strict=True))
    return Coefficients(n, p, s, k)


def _row_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    r = _weighted_pearson(x, y, np.ones_like(x))
    return np.where((np.ptp(x, axis=1) > 0) & (np.ptp(y, axis=1) > 0), r, np.nan)


def _row_spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    rx = rankdata(np.nan_to_num(x), axis=1)
    ry = rankdata(np.nan_to_num(y), axis=1)
    return np.where((np.ptp(x, axis=1) > 0) & (np.ptp(y, axis=1) > 0), _weighted_pearson(rx, ry, np.ones_like(rx)),
                    np.nan)


def _row_kendall(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    k = x.shape[1]
    sx = np.sign(x[:, :, None] - x[:, None, :])
    sy = np.sign(y[:, :, None] - y[:, None, :])
    n0 = k * (k - 1) / 2
    n1 = ((sx == 0).sum(axis=(1, 2)) - k) / 2
    n2 = ((sy == 0).sum(axis=(1, 2)) - k) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip((sx * sy).sum(axis=(1, 2)) / 2 / np.sqrt((n0 - n1) * (n0 - n2)), -1.0, 1.0)


def spearman_matrix(columns: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """(Spearman rho of every pair of columns over the rows where both are finite, how many such
    rows): symmetric, ones on the diagonal; NaN for a pair with fewer than MIN_PAIRS rows or a
    constant side."""
    cols = [np.asarray(c, dtype=float) for c in columns]
    k = len(cols)
    rho, n = np.eye(k), np.zeros((k, k), dtype=int)
    for i in range(k):
        n[i, i] = int(np.isfinite(cols[i]).sum())
        for j in range(i + 1, k):
            both = np.isfinite(cols[i]) & np.isfinite(cols[j])
            a, b = cols[i][both], cols[j][both]
            value = point(a, b)[1] if a.size >= MIN_PAIRS else math.nan
            rho[i, j] = rho[j, i] = value
            n[i, j] = n[j, i] = int(both.sum())
    return rho, n
