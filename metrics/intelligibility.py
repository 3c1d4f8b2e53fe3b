"""Intelligibility: character and word error rate of the ASR transcript against the suite text.

Metric card
- cer: character error rate, (S + D + I) / N over characters of the normalized reference
  (evalkit.textnorm); for Korean, Japanese, Chinese and Thai both strings lose their spaces
  first. Computed with jiwer. Unbounded above: a runaway transcript can exceed 1.
  Korean: against the closest standard reading of the suite text (evalkit.korean_readings,
  docs/korean.md): 25명 read 이십오 명 or 스물다섯 명 is no error, 3개 read 삼 개 is one; the
  suite's per-utterance `readings` count too; N is the chosen reading's length.
- cer_clipped: min(cer, 1). Aggregate this one when a mean must not be dominated by one
  repetition loop; the raw cer is kept beside it.
- char_sub, char_del, char_ins, char_ref_len: the edit counts behind cer and the reference
  length; the core sums them into the corpus-level `cer/corpus` (total edits / total characters).
- wer (+ word_sub, word_del, word_ins, word_ref_len, `wer/corpus`): the same over the
  space-separated normalized strings (secondary for Korean, whose spacing is unreliable; Korean
  WER compares the chosen reading with the transcript's reading).
- runaway: 1.0 when the transcript is more than twice as long as the reference (in CER
  characters), else 0.0: a repetition loop or babbling.
- failed_to_speak: 1.0 when cer > 0.5, else 0.0; its mean is the share of utterances the model
  did not get across at all (attention failures, babbling, early stops).
- reading_unverified (Korean; NaN elsewhere): 1.0 when the transcript writes digits where the
  suite text has digits, else 0.0. Whisper writing 3개 hides whether the model said 세 개 or
  삼 개: the digits are read back by the same rules and match, so such an utterance's CER
  cannot catch a misread number. Its mean is the unverified rate, per run and per tag: read a
  low number-tag CER beside it.
- jer (Korean; NaN elsewhere): jamo error rate against the chosen reading (evalkit_metrics.jamo:
  syllables split into initial, medial and final jamo, so a wrong batchim costs one jamo, not a
  syllable), with its counts jamo_edits, jamo_ref_len and the corpus rate `jer/corpus`.
- Text columns: `cer_alignment`, the reference with the edits inline, `[a→b]` a substitution,
  `[-a]` a deletion, `[+b]` an insertion, so a reader sees where the model went wrong; Korean
  also `reading`, the reading of the suite text CER was taken against.
Direction: lower is better for all. Needs: the transcript. Known answers: identical text -> 0;
an empty transcript -> 1 (every character deleted); one substituted syllable of N -> 1/N.
A Korean sentence whose reading lattice is too large to align whole (evalkit.korean_readings.
MAX_CELLS) is scored against its first readings only, with a note saying so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jiwer

from evalkit import korean_readings
from evalkit.protocols import Metric
from evalkit.textnorm import cer_form
from evalkit.types import Score, ScoringItem

from .jamo import jamo_edits

FAILED_TO_SPEAK_CER = 0.5


class Intelligibility(Metric):
    name = "intelligibility"
    # The reading rules change scores: their version is part of this one.
    version = f"3+readings{korean_readings.VERSION}"
    sample_rate = 16000  # unused: the metric reads text only
    needs_transcript = True
    higher_is_better = {
        "cer": False, "cer_clipped": False, "wer": False, "runaway": False, "failed_to_speak": False,
        "char_sub": False, "char_del": False, "char_ins": False, "char_ref_len": True,
        "word_sub": False, "word_del": False, "word_ins": False, "word_ref_len": True,
        "reading_unverified": False, "jer": False, "jamo_edits": False, "jamo_ref_len": True,
    }
    # Per-utterance counts: the core sums them (`char_sub/sum`) instead of taking percentiles.
    counts = ("char_sub", "char_del", "char_ins", "char_ref_len", "word_sub", "word_del", "word_ins", "word_ref_len",
              "jamo_edits", "jamo_ref_len")
    # Corpus-level rates the core computes as sum(edits) / sum(reference length).
    corpus = {
        "cer": (("char_sub", "char_del", "char_ins"), "char_ref_len"),
        "wer": (("word_sub", "word_del", "word_ins"), "word_ref_len"),
        "jer": (("jamo_edits",), "jamo_ref_len"),
    }
    alignments = ("cer_alignment",)  # the reference with the edits inline (see the card)
    headline = "cer"

    def score(self, items: Sequence[ScoringItem]) -> list[Score]:
        return [self._one(item) for item in items]

    def _one(self, item: ScoringItem) -> Score:
        ref, hyp = item.reference_text_norm, item.transcript_norm
        if ref is None or hyp is None:
            return Score(dict.fromkeys(self.higher_is_better, math.nan), "no transcript")
        choice = None
        if item.language == "ko":  # the raw texts: their digits and symbols hold the readings
            said = item.transcript.text if item.transcript is not None else hyp
            choice = korean_readings.best(item.utterance.text, said, item.utterance.readings)
            ref, hyp = choice.reading, choice.hypothesis
        ref_c, hyp_c = cer_form(ref, item.language), cer_form(hyp, item.language)
        if not ref_c:
            return Score(dict.fromkeys(self.higher_is_better, math.nan), "reference text is empty after normalization")
        chars = edits(ref_c, hyp_c, chars=True)
        words = edits(ref, hyp, chars=False)
        cer = (chars["sub"] + chars["del"] + chars["ins"]) / chars["ref_len"]
        wer = (words["sub"] + words["del"] + words["ins"]) / words["ref_len"]
        values = {
            "cer": cer,
            "cer_clipped": min(cer, 1.0),
            "wer": wer,
            "runaway": float(len(hyp_c) > 2 * len(ref_c)),
            "failed_to_speak": float(cer > FAILED_TO_SPEAK_CER),
            **{f"char_{k}": float(v) for k, v in chars.items() if k != "alignment"},
            **{f"word_{k}": float(v) for k, v in words.items() if k != "alignment"},
            **dict.fromkeys(("reading_unverified", "jer", "jamo_edits", "jamo_ref_len"), math.nan),
        }
        texts = {"cer_alignment": chars["alignment"]}
        note = None
        if choice is not None:
            jamo, jamo_len = jamo_edits(ref_c, hyp_c)
            values.update(reading_unverified=float(choice.unverified), jamo_edits=float(jamo),
                          jamo_ref_len=float(jamo_len), jer=jamo / jamo_len if jamo_len else math.nan)
            texts["reading"] = choice.reading
            if choice.capped:
                note = "readings capped: the sentence is too long to align every reading; scored against the first"
        return Score(values, note, texts)


def edits(reference: str, hypothesis: str, *, chars: bool) -> dict:
    """Substitutions, deletions, insertions, reference length and an inline alignment (jiwer)."""
    ref_units = list(reference) if chars else reference.split()
    if not hypothesis.strip():  # jiwer refuses an empty hypothesis; every unit is deleted
        joiner = "" if chars else " "
        return {"sub": 0, "del": len(ref_units), "ins": 0, "ref_len": len(ref_units),
                "alignment": joiner.join(f"[-{u}]" for u in ref_units)}
    out = jiwer.process_characters(reference, hypothesis) if chars else jiwer.process_words(reference, hypothesis)
    ref_seq = out.references[0]
    hyp_seq = out.hypotheses[0]
    return {"sub": out.substitutions, "del": out.deletions, "ins": out.insertions, "ref_len": len(ref_seq),
            "alignment": _inline(out.alignments[0], ref_seq, hyp_seq, "" if chars else " ")}


def _inline(chunks, ref: list[str], hyp: list[str], joiner: str) -> str:
    parts = []
    for c in chunks:
        r, h = joiner.join(ref[c.ref_start_idx:c.ref_end_idx]), joiner.join(hyp[c.hyp_start_idx:c.hyp_end_idx])
        if c.type == "equal":
            parts.append(r)
        elif c.type == "substitute":
            parts.append(f"[{r}→{h}]")
        elif c.type == "delete":
            parts.append(f"[-{r}]")
        else:
            parts.append(f"[+{h}]")
    return joiner.join(parts)
