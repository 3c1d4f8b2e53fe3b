import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from evalkit import suite as suite_mod
from evalkit.errors import EvalkitError

KO_TAGS = ["liaison", "nasalization", "lateralization", "tensification", "aspiration", "palatalization",
           "h_deletion", "n_insertion", "complex_coda", "numbers_native", "numbers_sino", "dates_times",
           "symbols_units", "latin", "loanword", "question", "exclamation", "long", "short", "context_reading"]


def _hangul(text: str) -> int:
    return sum("\uac00" <= c <= "\ud7a3" for c in text)


def test_builtin_suites_listed():
    assert {"ko-base", "en-base"} <= set(suite_mod.builtin_names())


def test_ko_base_coverage():
    s = suite_mod.load("ko-base")
    assert s.language == "ko"
    assert len(s.utterances) >= 100
    counts = Counter(t for u in s.utterances for t in u.tags)
    thin = {t: counts[t] for t in KO_TAGS if counts[t] < 5}
    assert not thin, f"tags on fewer than 5 sentences: {thin}"
    for u in s.utterances:
        if "short" in u.tags:
            assert len(u.text.split()) <= 2, u
        if "long" in u.tags:
            assert _hangul(u.text) >= 40, u
        if "question" in u.tags:
            assert "?" in u.text, u
    assert any(c.isdigit() for u in s.utterances for c in u.text)


def test_en_base_coverage():
    s = suite_mod.load("en-base")
    assert s.language == "en"
    assert len(s.utterances) >= 50
    counts = Counter(t for u in s.utterances for t in u.tags)
    assert counts["short"] >= 5 and counts["long"] >= 5 and counts["question"] >= 5


def _copy_suite(tmp_path: Path, name: str = "en-base") -> Path:
    dst = tmp_path / name
    shutil.copytree(suite_mod.resolve(name), dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def _rewrite(folder: Path, edit) -> None:
    path = folder / "utterances.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    edit(rows)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def test_digest_follows_text_not_tags(tmp_path):
    folder = _copy_suite(tmp_path)
    base = suite_mod.load(str(folder)).digest
    assert base == suite_mod.load("en-base").digest  # location does not matter

    _rewrite(folder, lambda rows: rows[0].update(tags=rows[0]["tags"] + ["extra"]))
    assert suite_mod.load(str(folder)).digest == base

    _rewrite(folder, lambda rows: rows[0].update(text=rows[0]["text"] + " Again."))
    assert suite_mod.load(str(folder)).digest != base


def test_digest_follows_reference_audio(tmp_path):
    folder = _copy_suite(tmp_path)
    (folder / "refs").mkdir()
    ref = folder / "refs" / "a.wav"
    ref.write_bytes(b"RIFF-one")
    _rewrite(folder, lambda rows: rows[0].update(reference="refs/a.wav"))
    first = suite_mod.load(str(folder)).digest
    ref.write_bytes(b"RIFF-two")
    assert suite_mod.load(str(folder)).digest != first


def test_limit_keeps_digest():
    s = suite_mod.load("ko-base")
    sub = s.limited(3)
    assert len(sub.utterances) == 3 and sub.digest == s.digest


@pytest.mark.parametrize("edit, message", [
    (lambda rows: rows[1].update(id=rows[0]["id"]), "duplicate utterance id"),
    (lambda rows: rows[0].update(text="   "), "empty text"),
    (lambda rows: rows[0].update(id="../escape"), "id must be"),
    (lambda rows: rows[0].update(tags="short"), "tags must be a list"),
    (lambda rows: rows[0].update(reference="refs/missing.wav"), "not found"),
])
def test_bad_utterances_rejected(tmp_path, edit, message):
    folder = _copy_suite(tmp_path)
    _rewrite(folder, edit)
    with pytest.raises(EvalkitError, match=message):
        suite_mod.load(str(folder))


def test_garbled_files_rejected(tmp_path):
    folder = _copy_suite(tmp_path)
    (folder / "utterances.jsonl").write_text('{"id": "a", "text": "x"}\n{not json\n', encoding="utf-8")
    with pytest.raises(EvalkitError, match="not valid JSON"):
        suite_mod.load(str(folder))
    (folder / "suite.yaml").write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(EvalkitError, match="not valid YAML"):
        suite_mod.load(str(folder))
    (folder / "suite.yaml").write_text("name: x\nlanguage: ko\n", encoding="utf-8")
    with pytest.raises(EvalkitError, match="missing header field"):
        suite_mod.load(str(folder))


def test_unknown_suite():
    with pytest.raises(EvalkitError, match="unknown suite 'nope'.*ko-base"):
        suite_mod.load("nope")


def test_readings_load_and_enter_the_digest(tmp_path):
    folder = _copy_suite(tmp_path)
    base = suite_mod.load(str(folder))
    assert all(u.readings == () for u in base.utterances)
    assert base.digest == suite_mod.load("en-base").digest

    def add(rows):
        rows[0]["readings"] = ["  감사합니다  ", "고맙습니다"]  # any language may list them
    _rewrite(folder, add)
    s = suite_mod.load(str(folder))
    assert s.utterances[0].readings == ("감사합니다", "고맙습니다")
    assert s.digest != base.digest

    _rewrite(folder, lambda rows: rows[0].update(readings=["고맙습니다"]))
    assert suite_mod.load(str(folder)).digest not in (base.digest, s.digest)


@pytest.mark.parametrize("value, message", [
    ("세 개", "must be a list of strings"),
    ([1], "must be a list of strings"),
    (["  "], "empty reading"),
    (["사과 3개"], "has digits"),
    (["가" * 1001], "longer than 1000"),
    (["가"] * 17, "at most 16"),
])
def test_bad_readings_rejected(tmp_path, value, message):
    folder = _copy_suite(tmp_path)
    _rewrite(folder, lambda rows: rows[0].update(readings=value))
    with pytest.raises(EvalkitError, match=message):
        suite_mod.load(str(folder))
