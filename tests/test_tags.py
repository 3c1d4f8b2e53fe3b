"""Per-tag aggregates (which phenomenon moved) and the training step: known answers on rows, then
a real run through the command into a real MLflow store."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from evalkit.aggregate import aggregate, by_tag, tag_key
from evalkit.errors import EvalkitError
from evalkit.suite import load as load_suite
from evalkit.types import Row
from evalkit_metrics.intelligibility import Intelligibility


def _row(uid, tags, sub, ref_len, cer=None, failure=None):
    values = {} if failure else {"cer": sub / ref_len if cer is None else cer, "char_sub": float(sub), "char_del": 0.0,
                                 "char_ins": 0.0, "char_ref_len": float(ref_len)}
    return Row(uid, "x", tuple(tags), values, failure=failure)


def test_each_tag_gets_the_suite_aggregates_over_its_own_utterances():
    rows = [_row("a", ["numbers", "short"], 1, 4), _row("b", ["numbers"], 3, 6), _row("c", ["short"], 0, 10),
            _row("d", ["numbers", "numbers"], 0, 0, failure="synthesis failed: x")]
    tagged = by_tag(rows, [Intelligibility()])
    assert list(tagged) == ["numbers", "short"]  # the order tags first appear
    numbers, short = tagged["numbers"], tagged["short"]
    # Corpus CER from the tag's own counts: (1 + 3) / (4 + 6); a tag listed twice counts the row once.
    assert numbers["cer/corpus"] == pytest.approx(4 / 10) and numbers["utterances/count"] == 3
    assert numbers["failures/count"] == 1 and numbers["char_sub/sum"] == 4
    assert numbers["cer/mean"] == pytest.approx((1 / 4 + 3 / 6) / 2)
    assert short["cer/corpus"] == pytest.approx(1 / 14) and short["failures/count"] == 0
    # The whole suite is not the mean of the tags: each tag stands on its own utterances.
    whole = aggregate(rows, [Intelligibility()])
    assert whole["cer/corpus"] == pytest.approx(4 / 20) and whole["utterances/count"] == 4


def test_untagged_rows_make_no_tag_and_the_mlflow_key_is_valid():
    assert by_tag([_row("a", [], 1, 2)]) == {}
    key = tag_key("cer/mean", "numbers_native")
    assert key == "cer/mean/tag/numbers_native"
    from mlflow.utils.validation import _validate_metric_name

    _validate_metric_name(key)  # raises on a name MLflow refuses


@pytest.mark.parametrize("tag", ["has space", "a/b", "", "..", "x" * 200, "<b>", "numbers_native"])
def test_a_suite_tag_must_be_a_plain_name(tmp_path, tag):
    header = "name: t\nversion: 1\nlanguage: en\ndescription: d\nutterances: utterances.jsonl\n"
    (tmp_path / "suite.yaml").write_text(header, encoding="utf-8")
    (tmp_path / "utterances.jsonl").write_text(json.dumps({"id": "u1", "text": "Hi.", "tags": [tag]}) + "\n",
                                               encoding="utf-8")
    if tag == "numbers_native":  # a plain name loads
        assert load_suite(str(tmp_path)).utterances[0].tags == (tag,)
        return
    with pytest.raises(EvalkitError, match=r"tag .* must be letters, digits"):
        load_suite(str(tmp_path))


@pytest.mark.slow
def test_a_run_records_tags_and_its_step_and_mlflow_shows_them_over_the_step(tmp_path):
    from mlflow.tracking import MlflowClient

    out, uri = tmp_path / "run", f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.run([sys.executable, "-m", "evalkit", "run", "--suite", "en-base", "espeak:en-us", "--limit", "5",
                           "--metrics", "intelligibility", "--step", "1200", "--out", str(out), "--tracking-uri", uri],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    rows = [json.loads(line) for line in (out / "utterances.jsonl").read_text(encoding="utf-8").splitlines()]
    assert summary["step"] == 1200 and summary["params"]["step"] == 1200
    # Every tag of the five utterances, with its corpus CER recomputed here from the rows' counts.
    tags = {t for r in rows for t in r["tags"]}
    assert set(summary["by_tag"]) == tags and {"statement", "short"} <= tags
    for tag in tags:
        mine = [r for r in rows if tag in r["tags"] and r["failure"] is None]
        edits = sum(r["char_sub"] + r["char_del"] + r["char_ins"] for r in mine)
        assert summary["by_tag"][tag]["cer/corpus"] == pytest.approx(edits / sum(r["char_ref_len"] for r in mine))
        assert summary["by_tag"][tag]["utterances/count"] == sum(tag in r["tags"] for r in rows)

    client = MlflowClient(uri)
    run = client.get_run(summary["tracking"]["run_id"])
    assert run.data.metrics["cer/corpus/tag/statement"] == pytest.approx(summary["by_tag"]["statement"]["cer/corpus"])
    history = client.get_metric_history(run.info.run_id, "cer/mean")
    assert [(m.step, m.value) for m in history] == [(1200, pytest.approx(summary["aggregates"]["cer/mean"]))]
    assert run.data.tags["evalkit.step"] == "1200"
    # The run's times are the evaluation's, and its description gives the headline numbers.
    assert run.info.start_time == int(summary["started_unix"] * 1000)
    assert run.info.end_time == int(summary["finished_unix"] * 1000)
    assert run.info.end_time - run.info.start_time == pytest.approx(summary["wall_seconds"] * 1000, abs=2)
    # The suite is the run's dataset: MLflow's Dataset column shows it.
    (used,) = run.inputs.dataset_inputs
    assert (used.dataset.name, used.dataset.digest) == ("en-base", summary["suite"]["digest"][:32])
    assert json.loads(used.dataset.source)["digest"] == summary["suite"]["digest"]
    note = run.data.tags["mlflow.note.content"]
    assert note.startswith("en-base · espeak:en-us at step 1200: cer ") and "of 5 utterances" in note

    shown = subprocess.run([sys.executable, "-m", "evalkit", "show", str(out), "--by", "tag"], capture_output=True,
                           text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    for tag in tags:
        row = next(line for line in lines if line.startswith(f"│ {tag} "))
        cells = [c.strip() for c in row.strip("│").split("│")]
        assert int(cells[1]) == summary["by_tag"][tag]["utterances/count"]
        corpus = summary["by_tag"][tag]["cer/corpus"]
        assert math.isclose(float(cells[-1]), corpus, abs_tol=5e-5) or (corpus >= 1 and cells[-1] == f"{corpus:.0f}")


def test_show_refuses_what_is_not_a_run_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "evalkit", "show", str(tmp_path)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "not a finished evalkit run folder" in proc.stderr
    bad = subprocess.run([sys.executable, "-m", "evalkit", "show", str(tmp_path), "--by", "speaker"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert bad.returncode == 2 and "--by takes 'tag'" in bad.stderr


def test_show_says_what_a_run_spec_may_be(tmp_path):
    # A folder that does not exist is neither a run folder nor a run id.
    proc = subprocess.run([sys.executable, "-m", "evalkit", "show", str(Path(tmp_path) / "nowhere")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and "neither a run folder" in proc.stderr


# --- ko-base's tags, as its README defines them -------------------------------------------------

_KO_BASE = Path(__file__).resolve().parents[1] / "suites" / "ko-base"
_FINALS = ["", *"ㄱㄲㄳㄴㄵㄶㄷㄹㄺㄻㄼㄽㄾㄿㅀㅁㅂㅄㅅㅆㅇㅈㅊㅋㅌㅍㅎ"]  # in Unicode's order
_INITIALS = "ㄱㄲㄴㄷㄸㄹㅁㅂㅃㅅㅆㅇㅈㅉㅊㅋㅌㅍㅎ"
_DOUBLE = set("ㄳㄵㄶㄺㄻㄼㄽㄾㄿㅀㅄ")
_OBSTRUENT = set("ㄱㄲㅋㄳㄺㄷㅅㅆㅈㅊㅌㅂㅍㅄㄿ")


def _ko_base_rows() -> list[dict]:
    lines = (_KO_BASE / "utterances.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _jamo(c: str) -> tuple[str, str, str] | None:
    """(initial, vowel index as a string, final) of a Hangul syllable, None for anything else."""
    o = ord(c) - 0xAC00
    return (_INITIALS[o // 588], str(o % 588 // 28), _FINALS[o % 28]) if 0 <= o < 11172 else None


def _pairs(text: str):
    """Adjacent syllables inside one written word: (final of the first, the second syllable)."""
    for a, b in zip(text, text[1:], strict=False):
        ja, jb = _jamo(a), _jamo(b)
        if ja and jb:
            yield ja[2], b, jb[0]


def test_ko_base_readme_counts_every_tag():
    counts = Counter(t for r in _ko_base_rows() for t in r["tags"])
    text = (_KO_BASE / "README.md").read_text(encoding="utf-8")
    table = {m[1]: int(m[2]) for m in re.finditer(r"^\| `([a-z_]+)` \|.*\| (\d+) \|$", text, re.M)}
    assert table == dict(counts)
    assert f"{len(_ko_base_rows())} original sentences" in text
    assert f"{sum('readings' in r for r in _ko_base_rows())} sentences carry `readings`" in text
    assert "version: 2" in (_KO_BASE / "suite.yaml").read_text(encoding="utf-8")


def test_ko_base_batchim_is_the_readme_criterion():
    """Set exactly on sentences with at least 5 Hangul syllables with a final, at least 55% of them."""
    for r in _ko_base_rows():
        syllables = [_jamo(c) for c in r["text"] if _jamo(c)]
        finals = sum(1 for j in syllables if j[2])
        assert ("batchim" in r["tags"]) == (finals >= 5 and finals / len(syllables) >= 0.55), r["id"]


def test_ko_base_sound_changes_inside_a_word_carry_their_tag():
    """Where the spelling alone shows a sound change inside a written word, the sentence has its tag
    (the other direction needs a speaker: a tag may come from digits, compounds or a word pair)."""
    for r in _ko_base_rows():
        tags, uid = set(r["tags"]), r["id"]
        for final, second, initial in _pairs(r["text"]):
            if final in _DOUBLE:
                assert "complex_coda" in tags, (uid, second)
            if final in _OBSTRUENT and initial in "ㄴㅁ" or final in ("ㅁ", "ㅇ", "ㄱ", "ㅂ") and initial == "ㄹ":
                assert "nasalization" in tags, (uid, second)  # 18항, and ㄹ -> ㄴ (19항)
            if final == "ㄴ" and initial == "ㄹ" or final in ("ㄹ", "ㅀ", "ㄾ") and initial == "ㄴ":
                assert "lateralization" in tags, (uid, second)
            if final in ("ㅎ", "ㄶ", "ㅀ") and initial in "ㄱㄷㅈ" or final in _OBSTRUENT and initial == "ㅎ":
                assert "aspiration" in tags, (uid, second)
            if final in ("ㅎ", "ㄶ", "ㅀ") and initial == "ㅇ":
                assert "h_deletion" in tags, (uid, second)
            if final in ("ㄷ", "ㅌ", "ㄾ") and second == "이":
                assert "palatalization" in tags, (uid, second)
            elif final and final not in ("ㅇ", "ㅎ", "ㄶ", "ㅀ") and initial == "ㅇ":
                assert "liaison" in tags, (uid, second)
        if "complex_coda" in tags:
            assert any(_jamo(c) and _jamo(c)[2] in _DOUBLE for c in r["text"]), uid


def test_ko_base_reading_tags_need_something_to_read():
    for r in _ko_base_rows():
        text, tags = r["text"], set(r["tags"])
        if tags & {"numbers_native", "numbers_sino", "dates_times"}:
            assert re.search(r"\d", text), r["id"]
        if "symbols_units" in tags:
            assert re.search(r"[%~°²]|\d(km|kg|mm|L|g|m)", text), r["id"]
        assert ("latin" in tags) == bool(re.search(r"[A-Za-z]", re.sub(r"(?<=\d)(km|kg|mm|L|g|m²)|°C", "", text)))
        assert ("question" in tags) == text.endswith("?") and ("exclamation" in tags) == text.endswith("!"), r["id"]
        assert "statement" not in tags or text.endswith("."), r["id"]


@pytest.mark.parametrize("uid, absent, present", [
    # Version 2's audit: 네 잔과, 두 조각, 주문하신 분 have no tense consonant; 꼭 정확히 is across a space.
    ("ko-base-096", "tensification", None),
    ("ko-base-062", "tensification", None),
    # Tense and nasal consonants the spoken digits carry.
    ("ko-base-097", None, "tensification"),   # 9살 [아홉쌀]
    ("ko-base-110", None, "tensification"),   # 40분 [사십뿐]
    ("ko-base-153", None, "tensification"),   # 6시 [여섣씨]
    ("ko-base-108", None, "nasalization"),    # 70년 [칠씸년]
    ("ko-base-148", None, "nasalization"),    # 100명 [뱅명]
    # ㄹ -> ㄴ is nasalization (19항), not lateralization.
    ("ko-base-028", "lateralization", "nasalization"),  # 정류장 [정뉴장]
    ("ko-base-134", "lateralization", "nasalization"),  # 협력 [혐녁]
])
def test_ko_base_audited_tags(uid, absent, present):
    tags = next(r["tags"] for r in _ko_base_rows() if r["id"] == uid)
    assert absent is None or absent not in tags
    assert present is None or present in tags
