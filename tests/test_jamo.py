"""Jamo error rate: known answers written by hand from the Unicode Hangul tables, not from the code."""

import math
import random
import unicodedata

import jiwer
import pytest

from evalkit_metrics import jamo
from evalkit_metrics.jamo import decompose, jamo_edits, jer

# (text, its jamo) - each syllable split by hand: initial, medial, optional final.
DECOMPOSITIONS = [
    ("한", ("ㅎ", "ㅏ", "ㄴ")),
    ("과", ("ㄱ", "ㅘ")),  # compound vowel: one jamo
    ("닭", ("ㄷ", "ㅏ", "ㄺ")),  # complex final: one jamo
    ("가", ("ㄱ", "ㅏ")),  # U+AC00, the first syllable
    ("힣", ("ㅎ", "ㅣ", "ㅎ")),  # U+D7A3, the last syllable
    ("값", ("ㄱ", "ㅏ", "ㅄ")),
    ("의", ("ㅇ", "ㅢ")),
    ("꽃", ("ㄲ", "ㅗ", "ㅊ")),  # tense initial: one jamo
    ("뷁", ("ㅂ", "ㅞ", "ㄺ")),
    ("앉", ("ㅇ", "ㅏ", "ㄵ")),
    ("국물", ("ㄱ", "ㅜ", "ㄱ", "ㅁ", "ㅜ", "ㄹ")),
    ("학교", ("ㅎ", "ㅏ", "ㄱ", "ㄱ", "ㅛ")),
    ("한 국", ("ㅎ", "ㅏ", "ㄴ", "ㄱ", "ㅜ", "ㄱ")),  # spaces removed
    ("A1", ("A", "1")),  # Latin and digits: one unit each
    ("KTX 3대", ("K", "T", "X", "3", "ㄷ", "ㅐ")),
    ("ㅋㅋ", ("ㅋ", "ㅋ")),  # standalone compatibility jamo: one unit each
    ("\u110f\u110f", ("ㅋ", "ㅋ")),  # the conjoining ㅋ that NFKC makes of it: folded to the same letter
    ("\u1112\u1161\u11ab", ("ㅎ", "ㅏ", "ㄴ")),  # 한 written as conjoining jamo (NFD): composed first
    ("", ()),
    (" \t ", ()),
]


@pytest.mark.parametrize(("text", "expected"), DECOMPOSITIONS)
def test_decompose_known_answers(text, expected):
    assert decompose(text) == expected


# (reference, hypothesis, edits, reference jamo)
EDITS = [
    ("꽃", "꼳", 1, 3),  # ㅊ -> ㄷ, the batchim
    ("국물", "궁물", 1, 6),  # nasalization spelled out: ㄱ -> ㅇ
    ("학교", "학꾜", 1, 5),  # ㄱ -> ㄲ, ㅛ unchanged: 학 = 3 jamo, 교 = 2
    ("가", "나", 1, 2),  # a whole syllable substituted: only its initial differs
    ("각", "가", 1, 3),  # final deleted
    ("가", "각", 1, 2),  # final inserted
    ("닭", "닥", 1, 3),  # complex final -> simple: one substitution, not two
    ("닭", "달", 1, 3),
    ("값", "갑", 1, 3),
    ("과", "가", 1, 2),  # compound vowel -> simple: one substitution
    ("의", "이", 1, 2),
    ("가", "까", 1, 2),
    ("밥맛", "밤맏", 2, 6),
    ("좋다", "조타", 2, 5),  # ㅎ ㄷ -> ㅌ: a substitution and a deletion
    ("옷이", "오시", 1, 5),  # compatibility letters: final ㅅ matches initial ㅅ, the ㅇ is deleted
    ("신라", "실라", 1, 5),
    ("같이", "가치", 2, 5),
    ("읽다", "익따", 2, 5),
    ("대통령", "대통녕", 1, 8),
    ("가나", "나가", 2, 4),
    ("가", "눅", 3, 2),  # two substitutions and an insertion: JER 1.5
    ("한국어", "한국어", 0, 8),
    ("오늘 날씨", "오늘날씨", 0, 10),  # spacing is not an error
    ("오늘날씨", "오 늘 날 씨", 0, 10),
    ("KBS", "KBC", 1, 3),
    ("3개", "삼개", 3, 3),  # 3 -> ㅅ, then ㅏ and ㅁ inserted
    ("가", "", 2, 2),  # empty transcript: every jamo deleted
    ("", "가", 2, 0),
    ("", "", 0, 0),
]


@pytest.mark.parametrize(("ref", "hyp", "edits", "n"), EDITS)
def test_jamo_edits_known_answers(ref, hyp, edits, n):
    assert jamo_edits(ref, hyp) == (edits, n)
    assert jamo._distance_py(decompose(ref), decompose(hyp)) == edits  # the fallback agrees


def test_at_least_25_known_answers():
    assert len(DECOMPOSITIONS) + len(EDITS) >= 25


@pytest.mark.parametrize(("ref", "hyp", "expected"), [
    ("꽃", "꼳", 1 / 3),
    ("국물", "궁물", 1 / 6),
    ("학교", "학꾜", 1 / 5),
    ("가", "나", 1 / 2),
    ("각", "가", 1 / 3),
    ("가", "눅", 3 / 2),
    ("한국어", "한국어", 0.0),
    ("가", "", 1.0),
])
def test_jer_known_answers(ref, hyp, expected):
    assert jer(ref, hyp) == pytest.approx(expected)


@pytest.mark.parametrize("ref", ["", "   ", "\n"])
def test_empty_reference_is_nan(ref):
    assert math.isnan(jer(ref, "가"))
    assert math.isnan(jer(ref, ""))


def test_batchim_error_costs_a_third_of_what_cer_charges():
    assert jiwer.cer("꽃", "꼳") == 1.0
    assert jer("꽃", "꼳") == pytest.approx(1 / 3)


def test_decomposition_matches_the_unicode_character_database():
    # Every one of the 11,172 syllables: NFD gives the conjoining jamo, whose names
    # (HANGUL CHOSEONG KIYEOK ...) name the compatibility letter (HANGUL LETTER KIYEOK ...).
    for code in range(0xAC00, 0xD7A4):
        syllable = chr(code)
        expected = tuple(
            unicodedata.lookup(unicodedata.name(c).replace("CHOSEONG", "LETTER")
                               .replace("JUNGSEONG", "LETTER").replace("JONGSEONG", "LETTER"))
            for c in unicodedata.normalize("NFD", syllable))
        assert decompose(syllable) == expected, syllable
        assert len(expected) == (2 if (code - 0xAC00) % 28 == 0 else 3)
        assert all(0x3131 <= ord(j) <= 0x3163 for j in expected)


def _random_hangul(rng: random.Random, max_len: int) -> str:
    return "".join(chr(rng.randint(0xAC00, 0xD7A3)) for _ in range(rng.randint(0, max_len)))


def _near(rng: random.Random, text: str) -> str:
    """`text` with a few syllables replaced, dropped or added (so distances are not all maximal)."""
    chars = list(text)
    for _ in range(rng.randint(0, 3)):
        op = rng.choice("sdi")
        pos = rng.randint(0, len(chars))
        if op == "i" or not chars:
            chars.insert(pos, chr(rng.randint(0xAC00, 0xD7A3)))
        elif op == "d":
            del chars[min(pos, len(chars) - 1)]
        else:
            chars[min(pos, len(chars) - 1)] = chr(rng.randint(0xAC00, 0xD7A3))
    return "".join(chars)


def test_metric_invariants_on_random_hangul():
    rng = random.Random(15)
    for _ in range(200):
        a = _random_hangul(rng, 12)
        b, c = _near(rng, a), _near(rng, a)
        n = len(decompose(a))
        assert jamo_edits(a, a) == (0, n)
        d_ab, d_ba = jamo_edits(a, b)[0], jamo_edits(b, a)[0]
        assert d_ab == d_ba  # symmetry
        assert jamo_edits(a, c)[0] <= d_ab + jamo_edits(b, c)[0]  # triangle inequality
        assert abs(n - len(decompose(b))) <= d_ab <= max(n, len(decompose(b)))
        assert d_ab == jamo._distance_py(decompose(a), decompose(b))  # rapidfuzz and the DP agree
        assert (d_ab == 0) == (a == b)  # decomposition is lossless for syllables


def test_single_syllable_substitution_cer_one_jer_bounded():
    rng = random.Random(4)
    for _ in range(2000):
        r, h = chr(rng.randint(0xAC00, 0xD7A3)), chr(rng.randint(0xAC00, 0xD7A3))
        if r == h:
            continue
        assert jiwer.cer(r, h) == 1.0
        value = jer(r, h)
        assert 0 < value <= 1.5
        if len(decompose(h)) <= len(decompose(r)):
            assert value <= 1.0  # no jamo inserted: at most every reference jamo substituted


def test_two_hundred_syllables_is_fast():
    import time

    rng = random.Random(200)
    a = "".join(chr(rng.randint(0xAC00, 0xD7A3)) for _ in range(200))
    b = "".join(chr(rng.randint(0xAC00, 0xD7A3)) for _ in range(200))
    start = time.perf_counter()
    edits, n = jamo_edits(a, b)
    assert 400 <= n <= 600 and 0 < edits <= max(n, len(decompose(b)))
    assert time.perf_counter() - start < 1.0
    assert jamo._distance_py(decompose(a), decompose(b)) == edits


def test_without_rapidfuzz_the_same_answers(monkeypatch):
    monkeypatch.setattr(jamo, "_fast_distance", None)
    for ref, hyp, edits, n in EDITS:
        assert jamo_edits(ref, hyp) == (edits, n)
