"""CER/WER known answers on given transcripts (the text level, where Korean scoring is proven)."""

import math

import jiwer
import numpy as np
import pytest

from evalkit.textnorm import normalize
from evalkit.types import Audio, ScoringItem, Transcript, Utterance
from evalkit_metrics.intelligibility import Intelligibility

SILENT = Audio(np.zeros(16000, dtype=np.float32), 16000)


def score(ref: str, hyp: str | None, lang: str, readings: tuple[str, ...] = ()):
    item = ScoringItem(
        utterance=Utterance("u1", ref, readings=readings), language=lang, audio=SILENT,
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


# --- Korean: the closest standard reading, unverified readings, jamo error rate ---------------


def test_korean_cer_takes_the_closest_reading():
    s = score("교실에 학생이 25명 있었다.", "교실에 학생이 이십오 명 있었다", "ko")
    assert s.values["cer"] == 0.0 and s.values["wer"] == 0.0
    assert s.texts["reading"] == "교실에 학생이 이십오 명 있었다"
    assert s.texts["cer_alignment"] == "교실에학생이이십오명있었다"
    s = score("교실에 학생이 25명 있었다.", "교실에 학생이 스물다섯 명 있었다", "ko")
    assert s.values["cer"] == 0.0 and s.texts["reading"] == "교실에 학생이 스물다섯 명 있었다"


def test_korean_wrong_reading_is_an_error_against_the_closest_reading():
    s = score("사과 3개 주세요", "사과 삼 개 주세요", "ko")
    assert s.values["cer"] == pytest.approx(1 / 7)
    assert (s.values["char_sub"], s.values["char_del"], s.values["char_ins"], s.values["char_ref_len"]) == (1, 0, 0, 7)
    assert s.texts["cer_alignment"] == "사과[세→삼]개주세요"
    s = score("20살", "이십 살", "ko")
    assert s.values["cer"] == pytest.approx(2 / 3) and s.texts["reading"] == "스무 살"


def test_reading_unverified():
    digits = score("사과 3개 주세요", "사과 3개 주세요", "ko")
    assert digits.values["cer"] == 0.0 and digits.values["reading_unverified"] == 1.0
    assert score("사과 3개 주세요", "사과 세 개 주세요", "ko").values["reading_unverified"] == 0.0
    assert score("사과 세 개 주세요", "사과 3개 주세요", "ko").values["reading_unverified"] == 0.0
    assert score("오늘은 날씨가 좋네요", "오늘은 날씨가 좋네요", "ko").values["reading_unverified"] == 0.0


def test_reading_unverified_rate_per_run_and_tag():
    from evalkit.pipeline import aggregate
    from evalkit.types import Row

    pairs = [("3개", "3개", ("numbers_native",)), ("3개", "세 개", ("numbers_native",)),
             ("좋아요", "좋아요", ("short",))]
    rows = [Row(str(i), r, tags, score(r, h, "ko").values) for i, (r, h, tags) in enumerate(pairs)]
    agg = aggregate(rows, [Intelligibility()])
    assert agg["reading_unverified/mean"] == pytest.approx(1 / 3)
    from evalkit.aggregate import by_tag

    tags = by_tag(rows, [Intelligibility()])
    assert tags["numbers_native"]["reading_unverified/mean"] == pytest.approx(0.5)
    assert tags["short"]["reading_unverified/mean"] == 0.0


def test_suite_readings_count_as_correct():
    plain = score("3~5일 걸려요", "사나흘 걸려요", "ko")
    assert plain.values["cer"] > 0
    listed = score("3~5일 걸려요", "사나흘 걸려요", "ko", readings=("사나흘 걸려요",))
    assert listed.values["cer"] == 0.0 and listed.texts["reading"] == "사나흘 걸려요"


def test_jamo_error_rate_against_the_chosen_reading():
    s = score("꽃이 피었다", "꼳이 피었다", "ko")  # 12 jamo, the batchim of 꽃 wrong
    assert s.values["cer"] == pytest.approx(1 / 5)
    assert s.values["jer"] == pytest.approx(1 / 12)
    assert (s.values["jamo_edits"], s.values["jamo_ref_len"]) == (1, 12)
    s = score("20살", "스물 살", "ko")  # 스무 살: ㅅㅡㅁㅜㅅㅏㄹ; 스물 adds one final ㄹ
    assert s.values["jer"] == pytest.approx(1 / 7) and s.values["cer"] == pytest.approx(1 / 3)
    assert score("25명", "이십오 명", "ko").values["jer"] == 0.0


def test_jer_corpus_weights_by_jamo():
    from evalkit.pipeline import aggregate
    from evalkit.types import Row

    rows = [Row("a", "x", (), score("꽃", "꼳", "ko").values),
            Row("b", "y", (), score("가나다라", "가나다라", "ko").values)]
    agg = aggregate(rows, [Intelligibility()])
    assert agg["jer/corpus"] == pytest.approx(1 / 11)  # 1 edit over 3 + 8 jamo
    assert agg["jamo_edits/sum"] == 1 and agg["jamo_ref_len/sum"] == 11


def test_other_languages_unchanged():
    s = score("It costs $5.", "it costs five dollars", "en")
    assert s.values["cer"] == 0.0
    for key in ("reading_unverified", "jer", "jamo_edits", "jamo_ref_len"):
        assert math.isnan(s.values[key])
    assert "reading" not in s.texts
    assert set(s.values) == set(Intelligibility.higher_is_better)
    assert set(score("감사합니다", "감사합니다", "ko").values) == set(Intelligibility.higher_is_better)


def test_capped_lattice_is_noted(monkeypatch):
    from evalkit import korean_readings

    monkeypatch.setattr(korean_readings, "MAX_CELLS", 10)
    s = score("25명이 왔다", "이십오 명이 왔다", "ko")
    assert s.values["cer"] > 0 and "readings capped" in s.note


def test_korean_counts_are_the_lattice_distance():
    """jiwer's counts on the chosen pair equal the lattice DP's distance on every table row."""
    from test_korean_readings import TABLE

    from evalkit.korean_readings import best

    for ref, hyp, _, _ in TABLE:
        s = score(ref, hyp, "ko")
        edits = s.values["char_sub"] + s.values["char_del"] + s.values["char_ins"]
        assert edits == best(ref, hyp).edits, (ref, hyp)
