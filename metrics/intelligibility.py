"""Intelligibility: character and word error rate of the ASR transcript against the suite text.

Metric card
- cer: character error rate, (S + D + I) / N over characters of the normalized reference
  (evalkit.textnorm); for Korean, Japanese, Chinese and Thai both strings lose their spaces
  first. Computed with jiwer. Unbounded above: a runaway transcript can exceed 1.
- cer_clipped: min(cer, 1). Aggregate this one when a mean must not be dominated by one
  repetition loop; the raw cer is kept beside it.
- wer: word error rate over the space-separated normalized strings (secondary for Korean).
- runaway: 1.0 when the transcript is more than twice as long as the reference (in CER
  characters), else 0.0: a repetition loop or babbling.
Direction: lower is better for all. Needs: the transcript. Known answers: identical text -> 0;
an empty transcript -> 1; a reference of N characters with one substituted -> 1/N.
"""

from __future__ import annotations

import math
from typing import Sequence

import jiwer

from evalkit.textnorm import cer_form
from evalkit.types import Score, ScoringItem


class Intelligibility:
    name = "intelligibility"
    version = "1"
    sample_rate = 16000  # unused: the metric reads text only
    needs_transcript = True
    needs_reference = False
    higher_is_better = {"cer": False, "cer_clipped": False, "wer": False, "runaway": False}

    def score(self, items: Sequence[ScoringItem]) -> list[Score]:
        return [self._one(item) for item in items]

    def _one(self, item: ScoringItem) -> Score:
        ref, hyp = item.reference_text_norm, item.transcript_norm
        if ref is None or hyp is None:
            return Score(dict.fromkeys(self.higher_is_better, math.nan), "no transcript")
        ref_c, hyp_c = cer_form(ref, item.language), cer_form(hyp, item.language)
        if not ref_c:
            return Score(dict.fromkeys(self.higher_is_better, math.nan), "reference text is empty after normalization")
        cer = error_rate(ref_c, hyp_c, chars=True)
        wer = error_rate(ref, hyp, chars=False)
        return Score({
            "cer": cer,
            "cer_clipped": min(cer, 1.0),
            "wer": wer,
            "runaway": float(len(hyp_c) > 2 * len(ref_c)),
        })


def error_rate(reference: str, hypothesis: str, *, chars: bool) -> float:
    """jiwer's CER/WER, defined for an empty hypothesis (every reference unit deleted)."""
    if not hypothesis.strip():
        return 1.0
    return float(jiwer.cer(reference, hypothesis) if chars else jiwer.wer(reference, hypothesis))
