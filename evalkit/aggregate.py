"""Whole-run numbers from per-utterance rows: the one place values are aggregated, for the
whole suite and for each phenomenon tag of its utterances."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .protocols import Metric, declared
from .types import Row


def aggregate(rows: Sequence[Row], metrics: Sequence[Metric] = ()) -> dict[str, float]:
    """Aggregates over the finite values of every per-utterance key: `key/mean`, `key/median`,
    `key/p90`; for keys a metric declares in `counts`, `key/sum`; for its `corpus` rates,
    `name/corpus` = sum of edits / sum of lengths. Plus `failures/count` and `utterances/count`."""
    metrics = [declared(m) for m in metrics]
    counts = {k for m in metrics for k in m.counts}
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r.values if k not in keys)
    out: dict[str, float] = {}
    for k in keys:
        vals = np.array([r.values.get(k, math.nan) for r in rows], dtype=float)
        vals = vals[np.isfinite(vals)]
        if vals.size == 0:
            continue
        if k in counts:
            out[f"{k}/sum"] = float(vals.sum())
            continue
        out[f"{k}/mean"] = float(vals.mean())
        out[f"{k}/median"] = float(np.median(vals))
        out[f"{k}/p90"] = float(np.percentile(vals, 90))
    for metric in metrics:
        for name, (numerators, denominator) in metric.corpus.items():
            total = out.get(f"{denominator}/sum", 0.0)
            if total > 0:
                out[f"{name}/corpus"] = sum(out.get(f"{k}/sum", 0.0) for k in numerators) / total
    out["failures/count"] = float(sum(r.failure is not None for r in rows))
    out["utterances/count"] = float(len(rows))
    return out


def by_tag(rows: Sequence[Row], metrics: Sequence[Metric] = ()) -> dict[str, dict[str, float]]:
    """The same aggregates over the utterances of each suite tag (in the order tags first
    appear): an utterance with two tags counts in both, and a tag's corpus rate is its own
    edits over its own lengths, so a phenomenon that got worse shows even when the suite's mean
    hides it."""
    tags: dict[str, list[Row]] = {}
    for r in rows:
        for t in dict.fromkeys(r.tags):
            tags.setdefault(t, []).append(r)
    return {t: aggregate(tagged, metrics) for t, tagged in tags.items()}


def tag_key(key: str, tag: str) -> str:
    """The MLflow metric name of a per-tag aggregate: `cer/mean/tag/liaison` (valid in MLflow,
    and grouped under the whole-suite `cer/mean` in its UI)."""
    return f"{key}/tag/{tag}"
