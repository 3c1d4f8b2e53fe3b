"""Paired comparison of two runs over the utterances both scored.

Statistics, per metric value key (the keys each metric declares with a direction in the run
record, RunRecord.metrics[name].higher_is_better: True (higher is better), False (lower is better) or
None (no direction: e.g. duration_ratio, where 1.0 is ideal and both ways are wrong); per-utterance
counts such as char_sub are left out: they are the ingredients of rates, not qualities):
- delta = mean(candidate - baseline) over utterances where both values are finite;
- a 95% percentile bootstrap CI of that mean: RESAMPLES resamples of the utterances with
  replacement, from numpy's Generator seeded with SEED, so the same runs always give the same CI;
- the paired Wilcoxon signed-rank p-value (scipy; p = 1 when no utterance changed);
- direction: "worse" or "better" when the CI excludes zero on that side, else "same"; for a key
  without a direction, "changed" when the CI excludes zero (either side), else "same": such a key is
  compared and shown, but never worse, so gates never count it as a regression.
The direction of a key is the one both runs recorded; when they disagree (an older run recorded
duration_ratio as lower-is-better, a newer one records no direction), the key has no direction: a
direction the two runs do not agree on decides nothing. Two older runs compare as they always did.
The CI, not the p-value, decides: with five utterances the smallest possible Wilcoxon p is 0.0625,
while a CI still shows a shift every utterance agrees on.

Per suite tag (the phenomenon tags on Row.tags): the same statistics over the paired utterances
that carry the tag in both runs (an utterance with two tags counts in both), for every key compared
suite-wide, kept as TagDelta on Comparison.tags. Looking at m tags at once, one of them would cross
zero by chance far more often than 5% of the time, so the intervals are Bonferroni-widened: for a key
compared on m tags, each tag's interval is a 1 - 0.05/m percentile bootstrap interval (`tag_confidence`,
the one place the correction is made), so the chance that any of the m intervals misses its true mean
stays at most 5%. m counts the tags with at least one paired finite value of that key. A tag's
direction is worse or better only when its corrected interval excludes zero. Each tag's interval uses
RESAMPLES * m resamples (same SEED), so its tails rest on as many resamples as a 95% interval's do
rather than on the two or three most extreme means; the keys of a tag share the resampled indices
(`bootstrap_cis`). A tag gets no Wilcoxon p (NaN): uncorrected, it would contradict the corrected
interval beside it.

Two runs are comparable only when the suite digest, the ASR settings digest (engine, model
weights, decoding), the text-normalizer version, each shared metric's version and the reference
audio match; otherwise compare() returns Incomparable with the reasons, or, with force=True, the
numbers with the reasons attached.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .record import RunRecord
from .types import Row

RESAMPLES = 2000
SEED = 0
CONFIDENCE = 0.95
_INDEX_BUDGET = 2_000_000  # bootstrap indices drawn per block, so memory stays flat for large suites


class RunLike(Protocol):
    summary: RunRecord
    rows: list[Row]
    source: str


@dataclass(frozen=True)
class MetricDelta:
    key: str
    metric: str  # the metric plug-in that produced the key
    higher_is_better: bool | None  # None: no direction (neither way is better)
    n: int  # utterances with a finite value in both runs
    baseline_mean: float
    candidate_mean: float
    delta: float  # candidate - baseline
    ci_low: float
    ci_high: float
    p_value: float
    direction: str  # worse | better | same; changed | same for a key without a direction
    pairs: tuple[tuple[str, float, float], ...]  # (utterance id, candidate, baseline)

    @property
    def worsening(self) -> float:
        """The delta signed so that positive is worse, whatever the metric's direction; NaN for a
        key without a direction (nothing is worse, so no comparison with a gate holds)."""
        if self.higher_is_better is None:
            return math.nan
        return -self.delta if self.higher_is_better else self.delta

    @property
    def scale(self) -> float:
        """The spread of the metric on this comparison: the standard deviation of all 2n
        per-utterance values, baseline and candidate together."""
        values = [v for _, c, b in self.pairs for v in (c, b)]
        return float(np.std(values)) if values else math.nan

    @property
    def rel_delta(self) -> float:
        """delta / |baseline mean|, or NaN when the baseline mean is too near zero for a percentage
        to mean anything (see relative_change)."""
        return relative_change(self.baseline_mean, self.delta, self.scale)


def relative_change(baseline_mean: float, delta: float, scale: float) -> float:
    """delta / |baseline_mean| when the baseline mean is not 0 and |baseline_mean| >= scale; else NaN
    (the report shows "–", comparison.json null).

    Why: a percentage is of the baseline mean, and it means something only when that mean is well
    away from zero on the metric's own scale, here the standard deviation of the per-utterance
    values of both runs. A baseline mean within one such spread of zero (CER 0.005 when some
    utterances score 0.02-0.05) turns noise into +320 %; CER 0.2 -> 0.22 on values spread by 0.05
    stays +10 %. The spread includes the shift between the runs (at least |delta|/2), so a shown
    percentage never exceeds 200 %.
    """
    values = (baseline_mean, delta, scale)
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values) or baseline_mean == 0:
        return math.nan
    if abs(baseline_mean) < scale:
        return math.nan
    return delta / abs(baseline_mean)


@dataclass(frozen=True)
class NewFailure:
    utterance_id: str
    reason: str


@dataclass(frozen=True)
class TagDelta:
    """One metric value key over the utterances of one suite tag; `stats` is computed as for the
    whole suite except that its CI (and so its direction) is at the Bonferroni level `confidence`."""

    tag: str
    tags_compared: int  # m: the tags this key was compared on, the divisor of the correction
    confidence: float  # tag_confidence(m)
    resamples: int
    stats: MetricDelta

    @property
    def key(self) -> str:
        return self.stats.key


@dataclass(frozen=True)
class Comparison:
    candidate: str
    baseline: str
    paired: int
    only_candidate: int
    only_baseline: int
    metrics: tuple[MetricDelta, ...]
    new_failures: tuple[NewFailure, ...]
    reasons: tuple[str, ...]  # incomparability reasons overridden by force; empty when comparable
    notes: tuple[str, ...]
    resamples: int
    seed: int
    tags: tuple[TagDelta, ...] = ()  # key by key (in `metrics` order), each key's tags in suite order
    run_tags: tuple[str, ...] = ()  # every tag on a row of either run, compared or not


@dataclass(frozen=True)
class Incomparable:
    candidate: str
    baseline: str
    reasons: tuple[str, ...]


def tag_confidence(tags: int, confidence: float = CONFIDENCE) -> float:
    """The Bonferroni level of each of `tags` intervals: the family's error rate 1 - confidence split
    evenly over them (95% over 20 tags: each a 99.75% interval)."""
    return 1.0 - (1.0 - confidence) / max(1, tags)


def bootstrap_ci(deltas, resamples: int = RESAMPLES, seed: int = SEED,
                 confidence: float = CONFIDENCE) -> tuple[float, float]:
    return bootstrap_cis([deltas], resamples, seed, confidence)[0]


def bootstrap_cis(vectors, resamples: int = RESAMPLES, seed: int = SEED,
                  confidence: float = CONFIDENCE) -> list[tuple[float, float]]:
    """bootstrap_ci of each of several equally long vectors, each interval exactly what bootstrap_ci
    gives for its vector alone: the resampled indices are drawn once for all of them, since drawing
    is most of the cost and every key of a tag is resampled over the same utterances."""
    ds = [np.asarray(v, dtype=float) for v in vectors]
    n = ds[0].size if ds else 0
    if any(d.size != n for d in ds):
        raise ValueError("bootstrap_cis: the vectors differ in length")
    if n == 0:
        return [(math.nan, math.nan)] * len(ds)
    rng = np.random.default_rng(seed)
    means = np.empty((len(ds), resamples))
    block = max(1, _INDEX_BUDGET // n)
    for start in range(0, resamples, block):
        m = min(block, resamples - start)
        index = rng.integers(0, n, size=(m, n))
        for row, d in zip(means, ds, strict=True):
            row[start:start + m] = d[index].mean(axis=1)
    alpha = (1.0 - confidence) / 2
    return [(float(low), float(high)) for low, high in (np.quantile(row, [alpha, 1.0 - alpha]) for row in means)]


def wilcoxon_p(candidate, baseline) -> float:
    c, b = np.asarray(candidate, dtype=float), np.asarray(baseline, dtype=float)
    if c.size == 0:
        return math.nan
    if not np.any(c != b):
        return 1.0  # scipy refuses all-zero differences; nothing changed is the least evidence
    from scipy.stats import wilcoxon

    with warnings.catch_warnings():  # tiny samples warn about the normal approximation
        warnings.simplefilter("ignore")
        return float(wilcoxon(c, b).pvalue)


def incomparability(candidate: RunRecord, baseline: RunRecord) -> list[str]:
    """Why the numbers of two runs (their summaries) cannot be set side by side; empty if they can."""
    reasons = []
    cs, bs = candidate.suite, baseline.suite
    if cs.digest != bs.digest:
        reasons.append(f"suite digests differ ({cs.name} {cs.digest[:12]} vs {bs.name} {bs.digest[:12]}): "
                       "not the same sentences")
    ct, bt = candidate.tags, baseline.tags
    ca, ba = ct.get("evalkit.asr_settings_digest", ""), bt.get("evalkit.asr_settings_digest", "")
    if ca and ba and ca != ba:
        reasons.append(f"ASR settings differ ({ct.get('evalkit.asr_model')} {ca} vs {bt.get('evalkit.asr_model')} "
                       f"{ba}): a different ASR model or decoding changes CER on every utterance")
    cn, bn = ct.get("evalkit.textnorm_version"), bt.get("evalkit.textnorm_version")
    if cn != bn:
        reasons.append(f"text normalizer versions differ ({cn} vs {bn})")
    cm, bm = candidate.metrics, baseline.metrics
    for name in sorted(set(cm) & set(bm)):
        if cm[name].version != bm[name].version:
            reasons.append(f"metric {name} versions differ ({cm[name].version} vs {bm[name].version})")
    cr, br = candidate.reference.digest, baseline.reference.digest
    if cr and br and cr != br:
        reasons.append("reference audio differs: reference-based scores measure different targets")
    return reasons


def compare(candidate: RunLike, baseline: RunLike, force: bool = False,
            resamples: int = RESAMPLES, seed: int = SEED) -> Comparison | Incomparable:
    reasons = incomparability(candidate.summary, baseline.summary)
    cand_rows = {r.utterance_id: r for r in candidate.rows}
    base_rows = {r.utterance_id: r for r in baseline.rows}
    ids = [uid for uid in base_rows if uid in cand_rows]  # baseline order: the suite's order
    if not ids:
        reasons.append("no utterance id is in both runs")
    ck, bk = candidate.summary.value_keys(), baseline.summary.value_keys()
    if not set(ck) & set(bk):  # "pass" on nothing measured would be a lie
        reasons.append("no metric value key is in both runs")
    if reasons and not force:
        return Incomparable(candidate.source, baseline.source, tuple(reasons))

    notes = [f"{k}: only in the {which} run, not compared"
             for which, mine, other in (("candidate", ck, bk), ("baseline", bk, ck))
             for k in mine if k not in other]
    if len(ids) < len(base_rows) or len(ids) < len(cand_rows):
        notes.append(f"{len(ids)} paired utterances ({len(cand_rows) - len(ids)} only in the candidate, "
                     f"{len(base_rows) - len(ids)} only in the baseline)")
    deltas = [_metric_delta(key, ck[key][0], _direction(ck[key][1], bk[key][1]), ids, cand_rows, base_rows,
                            resamples, seed) for key in ck if key in bk]
    metrics = tuple(d for d in deltas if d is not None)
    members, run_tags = _tag_members(ids, candidate.rows, baseline.rows, cand_rows, base_rows)
    notes += [f"tag {t}: only on utterances of the {which} run, not compared" for t, which in
              _one_sided_tags(candidate.rows, baseline.rows)]
    tags = _tag_deltas(metrics, members, cand_rows, base_rows, resamples, seed)
    return Comparison(candidate.source, baseline.source, len(ids), len(cand_rows) - len(ids),
                      len(base_rows) - len(ids), metrics,
                      tuple(_new_failures(ids, cand_rows, base_rows, [k for k in ck if k in bk])),
                      tuple(reasons), tuple(notes), resamples, seed, tags, run_tags)


def _tag_members(ids, cand, base, cand_rows, base_rows) -> tuple[dict[str, list[str]], tuple[str, ...]]:
    """The paired utterances of each tag, in suite order, and every tag either run knows. An
    utterance counts for a tag only when both runs' rows carry it: editing tags does not change the
    suite digest, so two comparable runs may tag an utterance differently."""
    members: dict[str, list[str]] = {}
    for uid in ids:
        theirs = set(cand_rows[uid].tags)
        for t in dict.fromkeys(base_rows[uid].tags):
            if t in theirs:
                members.setdefault(t, []).append(uid)
    return members, tuple(dict.fromkeys(t for rows in (base, cand) for r in rows for t in r.tags))


def _one_sided_tags(cand, base) -> list[tuple[str, str]]:
    c = dict.fromkeys(t for r in cand for t in r.tags)
    b = dict.fromkeys(t for r in base for t in r.tags)
    return [(t, "candidate") for t in c if t not in b] + [(t, "baseline") for t in b if t not in c]


def _tag_deltas(metrics: tuple[MetricDelta, ...], members, cand_rows, base_rows, resamples,
                seed) -> tuple[TagDelta, ...]:
    """Every key's deltas per tag, key by key. A tag's Wilcoxon p is not computed (NaN): uncorrected,
    it would contradict the corrected interval beside it, and it decides nothing."""
    pairs = {(m.key, t): _finite_pairs(m.key, uids, cand_rows, base_rows) for m in metrics
             for t, uids in members.items()}
    # m must be known before any interval is drawn: count each key's tags with a pair first.
    tags_of = {m.key: sum(bool(pairs[(m.key, t)]) for t in members) for m in metrics}
    # Keys paired on the same utterances of a tag and corrected alike share their resampled indices.
    groups: dict[tuple, list[MetricDelta]] = {}
    for m in metrics:
        for t in members:
            if pairs[(m.key, t)]:
                groups.setdefault((t, tuple(uid for uid, _, _ in pairs[(m.key, t)]), tags_of[m.key]), []).append(m)
    found = {}
    for (tag, _, count), keys in groups.items():
        diffs = [[c - b for _, c, b in pairs[(m.key, tag)]] for m in keys]
        for m, ci in zip(keys, bootstrap_cis(diffs, resamples * count, seed, tag_confidence(count)), strict=True):
            found[(m.key, tag)] = TagDelta(tag, count, tag_confidence(count), resamples * count,
                                           _delta(m.key, m.metric, m.higher_is_better, pairs[(m.key, tag)], ci,
                                                  math.nan))
    return tuple(found[(m.key, t)] for m in metrics for t in members if (m.key, t) in found)


def _direction(candidate: bool | None, baseline: bool | None) -> bool | None:
    """The direction both runs recorded; None (no direction) when they disagree."""
    return candidate if candidate == baseline else None


def _finite_pairs(key, ids, cand_rows, base_rows) -> list[tuple[str, float, float]]:
    pairs = [(uid, cand_rows[uid].value(key), base_rows[uid].value(key)) for uid in ids]
    return [p for p in pairs if math.isfinite(p[1]) and math.isfinite(p[2])]


def _metric_delta(key, metric, higher, ids, cand_rows, base_rows, resamples, seed) -> MetricDelta | None:
    pairs = _finite_pairs(key, ids, cand_rows, base_rows)
    if not pairs:
        return None
    c = np.array([p[1] for p in pairs])
    b = np.array([p[2] for p in pairs])
    # The same seed per key: order-independent.
    return _delta(key, metric, higher, pairs, bootstrap_ci(c - b, resamples, seed), wilcoxon_p(c, b))


def _delta(key, metric, higher, pairs, ci: tuple[float, float], p_value: float) -> MetricDelta:
    c = np.array([p[1] for p in pairs])
    b = np.array([p[2] for p in pairs])
    low, high = ci
    if higher is None:  # no direction: a sure change is only a change
        direction = "changed" if low > 0 or high < 0 else "same"
    else:
        worse_side = high < 0 if higher else low > 0
        better_side = low > 0 if higher else high < 0
        direction = "worse" if worse_side else "better" if better_side else "same"
    return MetricDelta(key, metric, higher, len(pairs), float(b.mean()), float(c.mean()),
                       float((c - b).mean()), low, high, p_value, direction, tuple(pairs))


def _new_failures(ids, cand_rows, base_rows, keys) -> list[NewFailure]:
    """Utterances the baseline got through and the candidate did not: a recorded failure, or a
    value the baseline had that the candidate could not compute (NaN means fail loud)."""
    out = []
    for uid in ids:
        c, b = cand_rows[uid], base_rows[uid]
        if c.failure and not b.failure:
            out.append(NewFailure(uid, c.failure))
            continue
        lost = [k for k in keys if math.isfinite(b.value(k)) and not math.isfinite(c.value(k))]
        if lost:
            note = f" ({'; '.join(c.notes)})" if c.notes else ""
            out.append(NewFailure(uid, f"no value for {', '.join(lost)}{note}"))
    return out
