"""The ko-numbers suite (and the `readings` of ko-base): it loads as a built-in suite, covers what
its README says with every tag on at least five sentences, every sentence has a number to read,
every listed reading is the whole sentence spoken in Hangul, the digest is stable and follows the
readings, and every listed reading scores 0 edits against its sentence while wrong readings
still cost."""

from __future__ import annotations

import json
import re
import shutil
import unicodedata
from collections import Counter
from pathlib import Path

import pytest

from evalkit import suite as suite_mod

SUITES = Path(__file__).resolve().parents[1] / "suites"
NAME = "ko-numbers"
# KOREAN.md's tag names plus ko-base's sentence types.
KNOWN_TAGS = {
    "liaison", "nasalization", "lateralization", "tensification", "aspiration", "palatalization", "h_deletion",
    "n_insertion", "complex_coda", "batchim", "numbers_native", "numbers_sino", "dates_times", "symbols_units",
    "latin", "loanword", "context_reading", "statement", "question", "exclamation", "short", "long",
}
# What a reading may hold: Hangul syllables, spaces and the sentence's own punctuation.
SPOKEN = re.compile(r"^[\uac00-\ud7a3 ,.?!]+$")
# Unit symbols written in Latin letters after a number (tagged symbols_units, not latin).
UNITS = re.compile(r"(?<=\d)(km|kg|cm|mm|ml|GB|L|g|m²)|°C")


def has_latin(text: str) -> bool:
    """Latin letters other than unit symbols: an acronym or an English word to read."""
    return bool(re.search(r"[A-Za-z]", UNITS.sub("", text)))


def rows(name: str) -> list[dict]:
    """The suite's lines as written (read directly, not through evalkit.suite)."""
    path = SUITES / name / "utterances.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def hangul(text: str) -> int:
    return sum("\uac00" <= c <= "\ud7a3" for c in text)


def readme_counts(name: str) -> dict[str, int]:
    """The tag table of a suite README: | `tag` | meaning | count |."""
    text = (SUITES / name / "README.md").read_text(encoding="utf-8")
    return {m[1]: int(m[2]) for m in re.finditer(r"^\| `([a-z_]+)` \|.*\| (\d+) \|$", text, re.M)}


def test_ko_numbers_is_a_built_in_suite_and_loads():
    assert NAME in suite_mod.builtin_names()
    s = suite_mod.load(NAME)
    assert (s.name, s.language) == (NAME, "ko")
    assert len(s.utterances) >= 60
    ids = [u.id for u in s.utterances]
    assert len(set(ids)) == len(ids)
    assert ids == [f"{NAME}-{i:03d}" for i in range(1, len(ids) + 1)]  # assigned in order, none skipped
    assert [u.text for u in s.utterances] == [r["text"] for r in rows(NAME)]
    header = (SUITES / NAME / "suite.yaml").read_text(encoding="utf-8")
    assert "gates:" in header and "cer: {max_abs: 0.01, max_rel: 0.10}" in header  # gates like ko-base's


def test_every_sentence_has_a_number_to_read():
    for r in rows(NAME):
        assert re.search(r"\d", r["text"]), r["id"]
        assert r["text"] == unicodedata.normalize("NFC", r["text"]).strip(), r["id"]


def test_every_tag_is_known_and_on_at_least_five_sentences():
    counts = Counter(t for r in rows(NAME) for t in r["tags"])
    assert set(counts) <= KNOWN_TAGS, set(counts) - KNOWN_TAGS
    thin = {t: n for t, n in counts.items() if n < 5}
    assert not thin, f"tags on fewer than 5 sentences: {thin}"
    for t in ("numbers_native", "numbers_sino", "dates_times", "symbols_units", "latin", "context_reading",
              "question", "exclamation", "short", "long"):
        assert counts[t] >= 5, t
    for r in rows(NAME):
        assert r["tags"] and len(set(r["tags"])) == len(r["tags"]), r["id"]


def test_sentence_shape_tags_hold():
    for r in rows(NAME):
        text, tags = r["text"], set(r["tags"])
        assert ("short" in tags) == (len(text.split()) <= 2), r["id"]
        assert ("long" in tags) == (hangul(text) >= 40), r["id"]
        assert ("question" in tags) == text.endswith("?"), r["id"]
        assert ("exclamation" in tags) == text.endswith("!"), r["id"]
        if "statement" in tags:
            assert text.endswith("."), r["id"]
        assert ("latin" in tags) == has_latin(text), r["id"]


def test_readme_tag_counts_and_size_are_the_files():
    counts = Counter(t for r in rows(NAME) for t in r["tags"])
    assert readme_counts(NAME) == dict(counts)
    readme = (SUITES / NAME / "README.md").read_text(encoding="utf-8")
    assert f"{len(rows(NAME))} original sentences" in readme
    single = sum(len(r["readings"]) == 1 for r in rows(NAME))
    assert f"the {single} with only one" in readme


@pytest.mark.parametrize("name", ["ko-base", NAME])
def test_readings_are_the_sentence_spoken_in_hangul(name):
    listed = [r for r in rows(name) if "readings" in r]
    assert listed
    for r in listed:
        readings = r["readings"]
        assert isinstance(readings, list) and 1 <= len(readings) <= 16, r["id"]
        assert len(set(readings)) == len(readings), r["id"]
        for reading in readings:
            assert isinstance(reading, str) and reading == unicodedata.normalize("NFC", reading).strip(), r["id"]
            assert not re.search(r"\d", reading), (r["id"], reading)  # numbers spelled out
            assert SPOKEN.match(reading), (r["id"], reading)  # no Latin letters or symbols left
            assert "  " not in reading, (r["id"], reading)
            # The sentence's final punctuation is kept: the reading is the whole sentence.
            assert reading[-1] == r["text"][-1], (r["id"], reading)


def test_every_ko_numbers_sentence_lists_its_readings_and_latin_is_spelled_in_ko_base():
    assert all(r.get("readings") for r in rows(NAME))
    for r in rows("ko-base"):
        if has_latin(r["text"]):
            assert r.get("readings"), r["id"]


def test_loaded_utterances_carry_the_readings():
    for name in ("ko-base", NAME):
        loaded = {u.id: u for u in suite_mod.load(name).utterances}
        for r in rows(name):
            assert getattr(loaded[r["id"]], "readings", ()) == tuple(r.get("readings", ())), r["id"]


def test_digest_is_stable_and_follows_the_readings(tmp_path):
    first, second = suite_mod.load(NAME), suite_mod.load(NAME)
    assert first.digest == second.digest and len(first.digest) == 64
    copy = tmp_path / NAME
    shutil.copytree(suite_mod.resolve(NAME), copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert suite_mod.load(str(copy)).digest == first.digest  # where the folder lies does not matter

    path = copy / "utterances.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    row = json.loads(lines[1])
    row["readings"] = row["readings"] + ["우리 반 학생은 모두 서른둘이에요."]
    path.write_text("\n".join([lines[0], json.dumps(row, ensure_ascii=False), *lines[2:]]) + "\n", encoding="utf-8")
    assert suite_mod.load(str(copy)).digest != first.digest  # a reading changes scores: it is content


def test_every_listed_reading_scores_zero_edits_against_its_sentence():
    korean_readings = pytest.importorskip("evalkit.korean_readings")
    for name in ("ko-base", NAME):
        for r in rows(name):
            for reading in r.get("readings", []):
                choice = korean_readings.best(r["text"], reading, r["readings"])
                assert choice.edits == 0, (r["id"], reading, choice)


@pytest.mark.parametrize("uid, wrong", [
    ("ko-numbers-001", "사과 삼 개랑 배 이 개만 주세요."),                      # native counter read Sino
    ("ko-numbers-008", "한 번째 문제부터 열한 번째 문제까지 다시 풀어 보세요."),  # 1번째 is 첫 번째
    ("ko-numbers-010", "여기서 두에서 세 명만 더 오면 출발할게요."),            # not Korean
    ("ko-numbers-012", "회의실에 의자가 세네 개 더 필요해요."),                 # 세네 is not standard: 서너
    ("ko-numbers-025", "세 개월 할부로 하시겠어요, 일시불로 하시겠어요?"),      # 개월 is Sino
    ("ko-numbers-039", "우리 결혼기념일은 십월 구 일 한글날이에요."),           # 10월 is 시월
    ("ko-numbers-059", "육월 육 일 현충일 오전 열 시에는 일 분간 묵념 사이렌이 울린다."),  # 6월 is 유월
    ("ko-numbers-065", "커피 한 잔에 사천오백 원인데 쿠폰을 쓰면 일천 원 할인돼요."),    # 천 원 in speech
    ("ko-numbers-099", "강남역 세 번 출구 앞에서 만나!"),                       # a label is Sino
    ("ko-numbers-106", "요즘 스무 대 사이에서 필름 카메라가 다시 유행이래."),   # an age group is Sino
    ("ko-numbers-109", "우리 딸은 올해 이십 살이 됐어요."),                     # 살 is native
    ("ko-numbers-109", "우리 딸은 올해 스물 살이 됐어요."),                     # attributive 스무
    ("ko-numbers-110", "저희 할아버지는 아흔한 세이신데 아직도 정정하세요."),   # 세 is Sino
])
def test_wrong_readings_still_cost_with_the_listed_readings(uid, wrong):
    korean_readings = pytest.importorskip("evalkit.korean_readings")
    row = next(r for r in rows(NAME) if r["id"] == uid)
    assert wrong not in row["readings"]
    assert korean_readings.best(row["text"], wrong, row["readings"]).edits > 0
