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


def test_edit_counts_and_inline_alignment():
    s = score("국물이 너무 짜요", "국물이 너무 자요요", "ko")
    assert (s.values["char_sub"], s.values["char_del"], s.values["char_ins"]) == (1, 0, 1)
    assert s.values["char_ref_len"] == 7
    assert _sides(s.texts["cer_alignment"]) == ("국물이너무짜요", "국물이너무자요요")
    assert score("가나다", "가다", "ko").texts["cer_alignment"] == "가[-나]다"
    assert score("가나다", "가마다", "ko").texts["cer_alignment"] == "가[나→마]다"
    w = score("the quick brown fox", "the quick fox", "en")
    assert (w.values["word_sub"], w.values["word_del"], w.values["word_ins"]) == (0, 1, 0)
    assert score("안녕", "", "ko").texts["cer_alignment"] == "[-안][-녕]"


def _sides(inline: str) -> tuple[str, str]:
    """Undo the inline alignment: (reference, hypothesis)."""
    import re

    ref = re.sub(r"\[\+[^\]]*\]", "", inline)
    ref = re.sub(r"\[-([^\]]*)\]", r"\1", ref)
    ref = re.sub(r"\[([^\]→]*)→[^\]]*\]", r"\1", ref)
    hyp = re.sub(r"\[-[^\]]*\]", "", inline)
    hyp = re.sub(r"\[\+([^\]]*)\]", r"\1", hyp)
    hyp = re.sub(r"\[[^\]→]*→([^\]]*)\]", r"\1", hyp)
    return ref, hyp


def test_failed_to_speak_threshold():
    assert score("오늘은 날씨가 좋네요", "오늘", "ko").values["failed_to_speak"] == 1.0
    assert score("오늘은 날씨가 좋네요", "오늘은 날씨가 좋아요", "ko").values["failed_to_speak"] == 0.0


def test_corpus_cer_weights_by_length():
    from evalkit.pipeline import aggregate
    from evalkit.types import Row

    long_ok = score("가" * 9 + "나", "가" * 9 + "나", "ko")  # 0 edits / 10
    short_bad = score("다라", "마라", "ko")  # 1 edit / 2
    rows = [Row("a", "x", (), long_ok.values), Row("b", "y", (), short_bad.values)]
    agg = aggregate(rows, [Intelligibility()])
    assert agg["cer/mean"] == pytest.approx(0.25)
    assert agg["cer/corpus"] == pytest.approx(1 / 12)
    assert agg["failed_to_speak/mean"] == pytest.approx(0.0)
