import unicodedata

import pytest

from evalkit.textnorm import cer_form, normalize


@pytest.mark.parametrize("text, expected", [
    ("Hello, World!", "hello world"),
    ("Don't stop—now.", "dont stop now"),
    ("It costs 1,500 dollars.", "it costs one thousand five hundred dollars"),
    ("  many   spaces\there ", "many spaces here"),
    ("ＡＢＣ　ｄｅｆ", "abc def"),  # full-width letters and the ideographic space
    ("Café au lait?", "cafe au lait"),
    ("Crème brûlée in Wrocław.", "creme brulee in wrocław"),  # ł is a letter, not a diacritic
])
def test_english(text, expected):
    assert normalize(text, "en") == expected


@pytest.mark.parametrize("text, expected", [
    ("안녕하세요.", "안녕하세요"),
    ("정말요?! 네, 좋아요…", "정말요 네 좋아요"),
    ("1,500원", "천오백 원"),
    ("「서울」·부산", "서울 부산"),
    ("ＫＴＸ를 타요", "ktx를 타요"),
])
def test_korean(text, expected):
    assert normalize(text, "ko") == expected


def test_diacritics_kept_outside_english():
    assert normalize("Café", "fr") == "café"


def test_korean_decomposed_jamo_compose():
    composed = "한국어"
    decomposed = unicodedata.normalize("NFD", composed)
    assert decomposed != composed
    assert normalize(decomposed, "ko") == composed


def test_cer_form_drops_spaces_for_korean_only():
    assert cer_form("오늘 날씨 좋네", "ko") == "오늘날씨좋네"
    assert cer_form("good day", "en") == "good day"


def test_idempotent():
    for text, lang in [("Hello, World!", "en"), ("정말요?! 네, 좋아요…", "ko")]:
        once = normalize(text, lang)
        assert normalize(once, lang) == once


@pytest.mark.parametrize("written, spoken", [
    ("사과 3개 주세요.", "사과 세 개 주세요"),
    ("2024년 3월 15일", "이천이십사 년 삼월 십오 일"),
    ("오후 3시 30분에 만나요", "오후 세 시 삼십 분에 만나요"),
    ("기온이 25°C까지 올랐다", "기온이 이십오 도까지 올랐다"),
])
def test_korean_number_readings_written_either_way_score_equal(written, spoken):
    assert cer_form(normalize(written, "ko"), "ko") == cer_form(normalize(spoken, "ko"), "ko")


def test_korean_wrong_reading_stays_an_error():
    assert cer_form(normalize("3개", "ko"), "ko") != cer_form(normalize("삼 개", "ko"), "ko")


def test_each_language_gets_its_own_number_reader():
    assert normalize("3 apples", "en") == "three apples"
    assert normalize("3개", "ko") == "세 개"
    assert normalize("3 pommes", "fr") == "3 pommes"  # no reader: digits stay digits on both sides


def test_korean_normal_form_is_the_first_reading():
    """text_norm / transcript_norm show the usual reading; CER takes every standard one (korean_readings)."""
    from evalkit.korean_readings import readings

    for text in ("25명", "-18°C", "30%", "10,320원", "KBS 뉴스", "2~3명"):
        assert readings(text).forms[0] == cer_form(normalize(text, "ko"), "ko")
    assert normalize("교실에 25명", "ko") == "교실에 스물다섯 명"
    assert normalize("20대 여성", "ko") == "이십 대 여성"


def test_korean_apostrophes_go_before_numbers_are_read():
    assert normalize("KBS's 3개", "ko") == "kbss 세 개"
    assert normalize("don't", "en") == "dont"
