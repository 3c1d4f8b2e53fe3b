"""CER/WER known answers on given transcripts (the text level, where Korean scoring is proven)."""

import math

import jiwer
import numpy as np
import pytest

from evalkit.textnorm import normalize
from evalkit.types import Audio, ScoringItem, Transcript, Utterance
from evalkit_metrics.intelligibility import Intelligibility

SILENT = Audio(np.zeros(16000, dtype=np.float32), 16000)


def score(ref: str, hyp: str | None, lang: str):
    item = ScoringItem(
        utterance=Utterance("u1", ref), language=lang, audio=SILENT,
        transcript=Transcript(hyp, lang) if hyp is not None else None,
        reference_text_norm=normalize(ref, lang),
        transcript_norm=normalize(hyp, lang) if hyp is not None else None,
    )
    return Intelligibility().score([item])[0]


def test_identical_is_zero():
    assert score("The cat sat.", "the cat sat", "en").values["cer"] == 0.0
    assert score("오늘은 날씨가 좋네요.", "오늘은 날씨가 좋네요", "ko").values["cer"] == 0.0


def test_korean_spacing_is_not_an_error():
    s = score("오늘은 날씨가 좋네요.", "오늘은날씨가 좋네 요", "ko")
    assert s.values["cer"] == 0.0
    assert s.values["wer"] > 0.0  # WER still sees the spacing: it is the secondary number


def test_one_substituted_syllable():
    ref = "국물이 너무 짜요"  # 7 syllables without spaces
    s = score(ref, "국물이 너무 자요", "ko")
    assert s.values["cer"] == pytest.approx(1 / 7)


def test_deleted_word_counts():
    s = score("the quick brown fox", "the quick fox", "en")
    assert s.values["wer"] == pytest.approx(1 / 4)
    assert s.values["cer"] == pytest.approx(6 / 19)  # "brown " deleted from 19 characters


def test_matches_jiwer_directly():
    ref, hyp = "she sells sea shells by the sea shore", "she sell see shells by sea shore"
    s = score(ref, hyp, "en")
    assert s.values["cer"] == pytest.approx(jiwer.cer(ref, hyp))
    assert s.values["wer"] == pytest.approx(jiwer.wer(ref, hyp))


def test_empty_transcript_is_total_failure():
    s = score("안녕하세요", "", "ko")
    assert s.values["cer"] == 1.0 and s.values["wer"] == 1.0


def test_runaway_transcript_flagged_and_clipped():
    s = score("4호", "4호, 4호, 4호, 4호, 4호", "ko")
    assert s.values["cer"] > 1.0
    assert s.values["cer_clipped"] == 1.0
    assert s.values["runaway"] == 1.0
    assert score("4호", "4호", "ko").values["runaway"] == 0.0


def test_missing_transcript_is_nan_with_note():
    s = score("hello", None, "en")
    assert math.isnan(s.values["cer"]) and s.note
