import unicodedata

import pytest

from evalkit.textnorm import cer_form, normalize


@pytest.mark.parametrize("text, expected", [
    ("Hello, World!", "hello world"),
    ("Don't stop—now.", "dont stop now"),
    ("It costs 1,500 dollars.", "it costs 1500 dollars"),
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
    ("1,500원", "1500원"),
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
