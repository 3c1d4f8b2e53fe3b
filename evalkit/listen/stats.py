"""The numbers of a listening test: rater screening, MOS/MUSHRA means with a bootstrap CI over
raters and utterances, A/B preference with a Wilson CI, per-utterance ratings.

MOS CI (`bootstrap_ci`). Ratings are crossed: every rater rates many utterances and every
utterance is rated by many raters, and both are samples (other raters, other sentences would give
other numbers). A bootstrap that resamples ratings alone treats 300 ratings by 3 people as 300
independent opinions and gives an interval far too narrow. So each resample draws the raters with
replacement, then, independently, the utterances with replacement, and takes the mean of every
rating of a drawn rater on a drawn utterance, counted as often as both were drawn (the two-way
"crossed" bootstrap). A resample whose raters rated none of its utterances (possible when raters
saw different subsets) is skipped. The 95% CI is the 2.5th and 97.5th percentile of RESAMPLES
resample means (seeded: the same ratings give the same interval). With one rater it reflects the
utterances only, and says nothing about other listeners.

A/B CI (`wilson`). Each judgment is a win, a loss or "no preference" for a run. The preference rate
is wins / (wins + losses), ties left out (they carry no direction), with the Wilson score interval,
which unlike the normal approximation stays inside [0, 1] and keeps its coverage near 0 and 1 and
for small n. It treats judgments as independent: several raters on the same sentences make it
optimistic, so read it with `raters`.

Screening (`screen`): the attention repeats (evalkit.listen.plan) must agree with the first rating
of the same item: MOS within MOS_TOLERANCE points, A/B with the preference not reversed (a clear
choice against "no preference" still agrees), MUSHRA within MUSHRA_TOLERANCE points on average over
the systems. A rater with any disagreeing repeat fails and is left out of the results (`usable`);
one who has not reached a repeat yet is pending and counted.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np

from .store import Rating

CONFIDENCE = 0.95
RESAMPLES = 10_000
SEED = 0
MOS_TOLERANCE = 1.0
AB_TOLERANCE = 0.5
MUSHRA_TOLERANCE = 20.0
_BLOCK = 1_000  # resamples per block, so memory stays flat for large tests


def wilson(wins: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of the proportion wins/n; (nan, nan) for n = 0."""
    if n <= 0:
        return math.nan, math.nan
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = wins / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_ci(cells: Sequence[tuple[str, str, float]], resamples: int = RESAMPLES, seed: int = SEED,
                 confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, low, high) of (rater, utterance, score) ratings: the crossed rater x utterance bootstrap
    described above. (nan, nan, nan) without ratings."""
    if not cells:
        return math.nan, math.nan, math.nan
    raters = sorted({c[0] for c in cells})
    utterances = sorted({c[1] for c in cells})
    r_index = {r: i for i, r in enumerate(raters)}
    u_index = {u: i for i, u in enumerate(utterances)}
    sums = np.zeros((len(raters), len(utterances)))
    counts = np.zeros_like(sums)
    for rater, utterance, score in cells:
        sums[r_index[rater], u_index[utterance]] += score
        counts[r_index[rater], u_index[utterance]] += 1
    mean = float(sums.sum() / counts.sum())
    rng = np.random.default_rng(seed)
    means = []
    for start in range(0, resamples, _BLOCK):
        b = min(_BLOCK, resamples - start)
        # How often each rater and each utterance was drawn in each resample.
        w_r = rng.multinomial(len(raters), np.full(len(raters), 1 / len(raters)), size=b).astype(float)
        w_u = rng.multinomial(len(utterances), np.full(len(utterances), 1 / len(utterances)), size=b).astype(float)
        numerator = ((w_r @ sums) * w_u).sum(axis=1)
        denominator = ((w_r @ counts) * w_u).sum(axis=1)
        drawn = denominator > 0
        means.append(numerator[drawn] / denominator[drawn])
    values = np.concatenate(means)
    alpha = (1 - confidence) / 2
    low, high = np.percentile(values, [100 * alpha, 100 * (1 - alpha)])
    return mean, float(low), float(high)


# --- screening ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RaterCheck:
    rater: str
    status: Literal["pass", "fail", "pending"]
    compared: int  # attention repeats compared with their first rating
    disagreed: int

    @property
    def detail(self) -> str:
        if self.status == "pending":
            return "no attention repeat rated yet"
        return f"{self.compared - self.disagreed} of {self.compared} attention repeats agree"


def _agree(test: str, first: dict[str, float], again: dict[str, float]) -> bool:
    runs = sorted(first.keys() & again.keys())
    if not runs:
        return True
    diffs = [abs(first[r] - again[r]) for r in runs]
    if test == "mos":
        return max(diffs) <= MOS_TOLERANCE
    if test == "ab":
        return max(diffs) <= AB_TOLERANCE  # a share of 1 vs 0 is a reversed preference
    return sum(diffs) / len(diffs) <= MUSHRA_TOLERANCE


def screen(ratings: Sequence[Rating]) -> dict[str, RaterCheck]:
    """Every rater's attention check (see the module docstring)."""
    first: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    again: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    tests: dict[tuple[str, str], str] = {}
    raters: list[str] = []
    for r in ratings:
        if r.rater not in raters:
            raters.append(r.rater)
        if r.repeat_of is None:
            first[(r.rater, r.item)][r.run] = r.score
        else:
            again[(r.rater, r.repeat_of)][r.run] = r.score
            tests[(r.rater, r.repeat_of)] = r.test
    out = {}
    for rater in raters:
        pairs = [(k, v) for k, v in again.items() if k[0] == rater and k in first]
        disagreed = sum(not _agree(tests[k], first[k], v) for k, v in pairs)
        status: Literal["pass", "fail", "pending"] = "fail" if disagreed else "pass" if pairs else "pending"
        out[rater] = RaterCheck(rater, status, len(pairs), disagreed)
    return out


def usable(ratings: Sequence[Rating], checks: dict[str, RaterCheck], keep_failed: bool = False) -> list[Rating]:
    """The ratings results are made of: first ratings only (repeats only check), without raters
    who failed the attention check unless `keep_failed`."""
    return [r for r in ratings if r.repeat_of is None
            and (keep_failed or checks.get(r.rater) is None or checks[r.rater].status != "fail")]


# --- results per system -------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreSummary:
    """MOS or MUSHRA of one system."""

    system: str
    ratings: int
    raters: int
    utterances: int
    mean: float
    low: float
    high: float


@dataclass(frozen=True)
class Preference:
    """A/B result of one run against the other."""

    system: str
    opponent: str
    wins: int
    losses: int
    ties: int
    raters: int
    rate: float  # wins / (wins + losses)
    low: float
    high: float

    @property
    def judgments(self) -> int:
        return self.wins + self.losses + self.ties


def score_summaries(ratings: Sequence[Rating], resamples: int = RESAMPLES) -> dict[str, ScoreSummary]:
    """Per system (run key or anchor), from `usable` MOS or MUSHRA ratings."""
    by_system: dict[str, list[Rating]] = defaultdict(list)
    for r in ratings:
        by_system[r.run].append(r)
    out = {}
    for system, rows in by_system.items():
        mean, low, high = bootstrap_ci([(r.rater, r.utterance_id, r.score) for r in rows], resamples)
        out[system] = ScoreSummary(system, len(rows), len({r.rater for r in rows}),
                                   len({r.utterance_id for r in rows}), mean, low, high)
    return out


def preferences(ratings: Sequence[Rating]) -> dict[str, Preference]:
    """Per run of an A/B test, from `usable` ratings: each judgment stored a share per run (1 the
    run was preferred, 0 the other one, 0.5 no preference)."""
    by_token: dict[str, list[Rating]] = defaultdict(list)
    for r in ratings:
        by_token[r.token].append(r)
    runs = sorted({r.run for r in ratings})
    out = {}
    for run in runs:
        shares = [(rows[0].rater, next(x.score for x in rows if x.run == run)) for rows in by_token.values()
                  if any(x.run == run for x in rows)]
        wins = sum(s == 1 for _, s in shares)
        losses = sum(s == 0 for _, s in shares)
        low, high = wilson(wins, wins + losses)
        opponent = next((r for r in runs if r != run), "")
        out[run] = Preference(run, opponent, wins, losses, len(shares) - wins - losses, len({q for q, _ in shares}),
                              wins / (wins + losses) if wins + losses else math.nan, low, high)
    return out


@dataclass(frozen=True)
class UtteranceScores:
    utterance_id: str
    scores: tuple[float, ...]

    @property
    def mean(self) -> float:
        return sum(self.scores) / len(self.scores) if self.scores else math.nan


def per_utterance(ratings: Sequence[Rating], system: str) -> list[UtteranceScores]:
    """One system's `usable` ratings grouped by utterance, in the order utterances were first rated."""
    grouped: dict[str, list[float]] = {}
    for r in ratings:
        if r.run == system:
            grouped.setdefault(r.utterance_id, []).append(r.score)
    return [UtteranceScores(u, tuple(s)) for u, s in grouped.items()]
