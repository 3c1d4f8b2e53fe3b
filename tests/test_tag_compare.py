"""Per-tag comparison: paired deltas per suite tag with Bonferroni-corrected bootstrap intervals, tag
gates (KEY@TAG) in the verdict, and the per-tag section of `evalkit compare` and `evalkit report`.

Known answers on made-up runs (no model): one tag is clearly degraded, the others are untouched or
move both ways by the same amount, so which tag is worse is known before anything is computed.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from evalkit import compare as cmp
from evalkit import gates as gates_mod
from evalkit import record
from evalkit import report as report_mod
from evalkit.errors import EvalkitError
from evalkit.record import RunRecord
from evalkit.runs import LoadedRun
from evalkit.types import Row

DEGRADED = [0.15, 0.25, 0.18, 0.30, 0.12, 0.22, 0.20, 0.28, 0.16, 0.24]  # CER added on numbers_native
BASE_CER = [round(0.01 * i, 2) for i in range(30)]
# u00-u09 numbers_native, u10-u19 liaison (each moves by ±0.02, the mean by 0), u20-u29 question
# (unchanged); every liaison and question utterance is also a statement: one utterance, two tags.
TAGS = [("numbers_native",)] * 10 + [("liaison", "statement")] * 10 + [("question", "statement")] * 10
CAND_CER = ([b + d for b, d in zip(BASE_CER[:10], DEGRADED, strict=True)]
            + [b + (0.02 if i % 2 else -0.02) for i, b in enumerate(BASE_CER[10:20])] + BASE_CER[20:])
METRICS = {"intelligibility": {"version": "2", "higher_is_better": {"cer": False}, "headline": "cer",
                               "alignments": ["cer_alignment"]},
           "dnsmos": {"version": "1", "higher_is_better": {"dnsmos_ovrl": True}}}


def tagged_run(cer, tags, source, *, texts=None, transcripts=None, suite="tagged") -> LoadedRun:
    """A run as load_run returns it: rows carrying suite tags, the summary fields compare reads."""
    rows = [Row(f"u{i:02d}", (texts or [f"text {i}" for i in range(len(cer))])[i], tuple(t),
                {"cer": float(c), "dnsmos_ovrl": 3.0},
                {"transcript": (transcripts or [f"heard {i}" for i in range(len(cer))])[i]})
            for i, (c, t) in enumerate(zip(cer, tags, strict=True))]
    summary = RunRecord.from_json({
        "run_id": (source * 32)[:32], "params": {"model": f"model-{source}"},
        "suite": {"name": suite, "digest": "digest-1", "language": "ko", "version": "1"},
        "tags": {"evalkit.asr_settings_digest": "asr", "evalkit.textnorm_version": "2"},
        "metrics": METRICS, "aggregates": {"cer/mean": float(np.mean(cer))}})
    return LoadedRun(summary, rows, None, None, f"test:{source}")


def pair(**kw) -> tuple[LoadedRun, LoadedRun]:
    return tagged_run(CAND_CER, TAGS, "c", **kw), tagged_run(BASE_CER, TAGS, "b", **kw)


def compared(cand: LoadedRun, base: LoadedRun) -> cmp.Comparison:
    result = cmp.compare(cand, base)
    assert isinstance(result, cmp.Comparison)
    return result


def tag_map(result: cmp.Comparison) -> dict[tuple[str, str], cmp.TagDelta]:
    return {(t.tag, t.key): t for t in result.tags}


def test_the_degraded_tag_is_worse_and_the_others_same():
    result = compared(*pair())
    tags = tag_map(result)
    assert [t.tag for t in result.tags if t.key == "cer"] == ["numbers_native", "liaison", "statement", "question"]
    nn = tags[("numbers_native", "cer")]
    assert nn.stats.direction == "worse" and nn.stats.n == 10
    assert nn.stats.delta == pytest.approx(np.mean(DEGRADED)) and nn.stats.ci_low > 0.1
    for tag in ("liaison", "statement", "question"):
        t = tags[(tag, "cer")]
        assert t.stats.direction == "same" and t.stats.delta == pytest.approx(0, abs=1e-12), tag
        assert t.stats.ci_low <= 0 <= t.stats.ci_high
    assert tags[("statement", "cer")].stats.n == 20  # counted under both of its tags
    assert all(t.stats.direction == "same" for t in result.tags if t.key == "dnsmos_ovrl")
    # Four tags compared for each key: each interval at 1 - 0.05/4, from 4 x 2000 resamples.
    assert {(t.tags_compared, t.resamples) for t in result.tags} == {(4, 8000)}
    assert all(t.confidence == pytest.approx(0.9875) for t in result.tags)
    # The suite-wide numbers are untouched by the per-tag ones.
    suite_cer = next(m for m in result.metrics if m.key == "cer")
    assert suite_cer.n == 30 and suite_cer.delta == pytest.approx(np.mean(DEGRADED) / 3)


def test_same_runs_same_intervals():
    first, second = compared(*pair()), compared(*pair())

    def seen(result):
        return [(t.tag, t.key, t.stats.ci_low, t.stats.ci_high, t.stats.direction, t.stats.pairs) for t in result.tags]

    assert seen(first) == seen(second)  # seeded: every interval identical, not merely close
    # No uncorrected Wilcoxon p beside a corrected interval.
    assert all(np.isnan(t.stats.p_value) for t in first.tags)


def test_keys_sharing_resamples_get_what_each_would_alone():
    rng = np.random.default_rng(7)
    vectors = [rng.normal(size=23) for _ in range(3)]
    for resamples, level in ((2000, 0.95), (8000, cmp.tag_confidence(4))):
        assert cmp.bootstrap_cis(vectors, resamples, confidence=level) == [
            cmp.bootstrap_ci(v, resamples, confidence=level) for v in vectors]
    with pytest.raises(ValueError):
        cmp.bootstrap_cis([np.zeros(3), np.zeros(4)])


def degraded_with(extra_tags: int) -> cmp.TagDelta:
    """numbers_native (always the same ten deltas) beside `extra_tags` unchanged tags of five
    utterances each: only m, the number of tags compared, differs."""
    n = 10 + 5 * extra_tags
    base = [0.05] * n
    cand = [0.05 + d for d in DEGRADED] + [0.05] * (n - 10)
    tags = [("numbers_native",)] * 10 + [(f"other{i // 5}",) for i in range(n - 10)]
    return tag_map(compared(tagged_run(cand, tags, "c"), tagged_run(base, tags, "b")))[("numbers_native", "cer")]


def test_the_correction_widens_each_interval_monotonically_in_the_number_of_tags():
    deltas = np.array(DEGRADED)
    alone = degraded_with(0)
    # One tag: no correction, exactly the suite-wide 95% interval of the same deltas.
    assert alone.tags_compared == 1 and alone.confidence == pytest.approx(cmp.CONFIDENCE)
    assert (alone.stats.ci_low, alone.stats.ci_high) == cmp.bootstrap_ci(deltas)
    previous = alone
    for extra in (1, 3, 7):
        t = degraded_with(extra)
        m = extra + 1
        assert t.tags_compared == m and t.confidence == pytest.approx(1 - 0.05 / m) == cmp.tag_confidence(m)
        assert t.stats.ci_low <= previous.stats.ci_low and t.stats.ci_high >= previous.stats.ci_high, m
        assert t.stats.direction == "worse"  # every utterance agrees: still sure at 1 - 0.05/8
        previous = t
    width = previous.stats.ci_high - previous.stats.ci_low
    assert width > 1.2 * (alone.stats.ci_high - alone.stats.ci_low)
    uncorrected = cmp.bootstrap_ci(deltas, resamples=previous.resamples)
    assert previous.stats.ci_low < uncorrected[0] and previous.stats.ci_high > uncorrected[1]


def test_a_tag_that_one_interval_calls_worse_is_same_once_corrected():
    # Eight tags; on one, a shift whose 95% interval just excludes zero but whose 1 - 0.05/8 one does not.
    shift = [0.06, -0.02, 0.05, 0.04, -0.01, 0.03, 0.05, -0.03, 0.04, 0.02]
    assert cmp.bootstrap_ci(shift)[0] > 0
    n = 10 + 35
    base = [0.1] * n
    cand = [0.1 + d for d in shift] + [0.1] * 35
    tags = [("liaison",)] * 10 + [(f"other{i // 5}",) for i in range(35)]
    t = tag_map(compared(tagged_run(cand, tags, "c"), tagged_run(base, tags, "b")))[("liaison", "cer")]
    assert t.tags_compared == 8 and t.stats.ci_low <= 0 and t.stats.direction == "same"


def test_tags_only_one_run_carries_are_noted_not_compared():
    cand, base = pair()
    retagged = [Row(r.utterance_id, r.text, (*r.tags, "new_tag") if r.utterance_id == "u00" else r.tags,
                    r.values, r.texts) for r in cand.rows]
    result = compared(LoadedRun(cand.summary, retagged, None, None, cand.source), base)
    assert "new_tag" not in {t.tag for t in result.tags} and "new_tag" in result.run_tags
    assert "tag new_tag: only on utterances of the candidate run, not compared" in result.notes


TAG_GATES = {"cer": {"max_abs": 0.1}, "cer@numbers_native": {"max_abs": 0.05}}


def test_a_tag_gate_fails_the_verdict_while_the_suite_wide_gate_passes():
    result = compared(*pair())
    suite_only = gates_mod.judge(result, gates_mod.parse({"cer": {"max_abs": 0.1}}, "t"))
    assert suite_only.status == "pass"  # the suite-wide mean rose by 0.07: tolerated
    assert suite_only.metrics["cer"].significant and not suite_only.metrics["cer"].regressed
    # default gates the whole suite only: numbers_native, sure and far past it, is not judged by it.
    assert not any(v.regressed for v in suite_only.tags.values())

    v = gates_mod.judge(result, gates_mod.parse(TAG_GATES, "t"))
    assert v.status == "regressed" and not v.metrics["cer"].regressed
    (line,) = v.reasons
    assert line.startswith("cer@numbers_native: ") and "98.75% CI" in line and "max_abs 0.05" in line
    tv = v.tags[("numbers_native", "cer")]
    assert tv.regressed and tv.name == "cer@numbers_native" and tv.allowed == pytest.approx(0.05)
    assert not v.tags[("liaison", "cer")].regressed and v.tags[("liaison", "cer")].gate is None

    # The same rule as suite-wide: a tolerated worsening passes, and relative limits are of the tag's mean.
    loose = gates_mod.parse({"cer@numbers_native": {"max_abs": 0.5}, "default": "none"}, "t")
    assert gates_mod.judge(result, loose).status == "pass"
    rel = gates_mod.parse({"cer@numbers_native": {"max_rel": 0.5}, "default": "none"}, "t")
    allowed = gates_mod.judge(result, rel).tags[("numbers_native", "cer")].allowed
    assert allowed == pytest.approx(0.5 * np.mean(BASE_CER[:10]))


def test_tag_gates_on_untouched_tags_and_unmeasured_keys():
    result = compared(*pair())
    v = gates_mod.judge(result, gates_mod.parse({"cer@liaison": {"max_abs": 0.0}, "wer@question": {"max_abs": 0.1},
                                                 "default": "none"}, "t"))
    assert v.status == "pass"  # liaison moves both ways: its interval holds zero
    assert "gate for wer@question not applied: wer was not measured in both runs on utterances tagged question" \
        in v.notes
    # A tag the suite has but no compared utterance carries (a --limit run) is not a typo.
    v = gates_mod.judge(result, gates_mod.parse({"cer@dates": {"max_abs": 0.1}}, "t"), suite_tags={"dates"})
    assert v.status == "pass" and any("gate for cer@dates not applied" in n for n in v.notes)


def test_an_unknown_tag_in_a_gate_is_one_clear_error():
    result = compared(*pair())
    with pytest.raises(EvalkitError) as caught:
        gates_mod.judge(result, gates_mod.parse({"cer@numbres_native": {"max_abs": 0.05}}, "gates.yaml"))
    message = str(caught.value)
    assert "\n" not in message and "numbres_native" in message and "numbers_native" in message  # the tags it has
    # An incomparable pair is judged incomparable, whatever the gates name.
    other = tagged_run(CAND_CER, TAGS, "c")
    other = LoadedRun(RunRecord.from_json({**other.summary.to_json(), "suite": {"name": "x", "digest": "digest-2"}}),
                      other.rows, None, None, "test:x")
    assert gates_mod.judge(cmp.compare(other, pair()[1]), gates_mod.parse(TAG_GATES, "t")).status == "incomparable"


def test_tag_gate_syntax_in_yaml_and_toml(tmp_path):
    (tmp_path / "g.yaml").write_text("gates:\n  cer: {max_abs: 0.1}\n  cer@numbers_native: {max_abs: 0.05}\n")
    (tmp_path / "g.toml").write_text('[gates]\ncer = { max_abs = 0.1 }\n"cer@numbers_native" = { max_abs = 0.05 }\n')
    for name in ("g.yaml", "g.toml"):
        g = gates_mod.from_file(tmp_path / name)
        assert g.per_key == {"cer": gates_mod.Gate(max_abs=0.1)}
        assert g.per_tag == {("numbers_native", "cer"): gates_mod.Gate(max_abs=0.05)}
        assert g.for_tag("numbers_native", "cer") == gates_mod.Gate(max_abs=0.05)
        assert g.for_tag("liaison", "cer") is None
    assert gates_mod.parse({"cer@liaison": "none"}, "t").per_tag == {}  # report only, as for a key


@pytest.mark.parametrize("key, message", [
    ("@numbers_native", "write KEY@TAG"),
    ("cer@", "write KEY@TAG"),
    ("default@liaison", "a tag gate names a metric key"),
])
def test_malformed_tag_gates_fail_loud(key, message):
    with pytest.raises(EvalkitError, match=message):
        gates_mod.parse({key: {"max_abs": 0.1}}, "t")


def test_correction_sentence():
    result = compared(*pair())
    assert report_mod.correction_text(result.tags) == (
        "Per-tag intervals are Bonferroni-corrected across the 4 tags: each is a 1-0.05/4 interval (98.75%). "
        "A tag's direction is decided by that interval alone.")
    assert report_mod.correction_text(()) == ""
    # Keys compared on different numbers of tags: each says its own.
    mixed = [result.tags[0], cmp.TagDelta("x", 2, cmp.tag_confidence(2), 4000, result.tags[-1].stats)]
    text = report_mod.correction_text(mixed)
    assert "cer: across 4 tags, each a 1-0.05/4 interval (98.75%)" in text
    assert "dnsmos_ovrl: across 2 tags, each a 1-0.05/2 interval (97.5%)" in text


KOREAN_TEXTS = [f"숫자 {i}개를 읽어요" for i in range(30)]
KOREAN_TAG = "받침_연음"


def korean_pair() -> tuple[LoadedRun, LoadedRun]:
    """The known pair, with Korean sentences, transcripts and (as a run folder may carry) a Korean tag."""
    tags = [(*t, KOREAN_TAG) if 10 <= i < 20 else t for i, t in enumerate(TAGS)]
    kw = dict(texts=KOREAN_TEXTS, transcripts=[f"{t} 들림" for t in KOREAN_TEXTS])
    return tagged_run(CAND_CER, tags, "c", **kw), tagged_run(BASE_CER, tags, "b", **kw)


def write_report(out: Path, cand: LoadedRun, base: LoadedRun, gates=TAG_GATES) -> tuple[str, str, dict]:
    result = compared(cand, base)
    report_mod.write(out, cand, base, result, gates_mod.judge(result, gates_mod.parse(gates, "gates.yaml")))
    return ((out / "index.html").read_text(encoding="utf-8"), (out / "summary.md").read_text(encoding="utf-8"),
            json.loads((out / "comparison.json").read_text(encoding="utf-8")))


def test_report_has_a_by_tag_section_in_html_markdown_and_json(tmp_path):
    from markdown_it import MarkdownIt
    from test_report_templates import ATTRIBUTES, ELEMENTS, Page

    page, md, doc = write_report(tmp_path / "r", *korean_pair())
    sentence = ("Per-tag intervals are Bonferroni-corrected across the 5 tags: each is a 1-0.05/5 interval (99%). "
                "A tag's direction is decided by that interval alone.")
    parsed = Page(page)
    assert parsed.stack == [] and {t for t, _ in parsed.elements} <= ELEMENTS
    assert {a for _, attrs in parsed.elements for a in attrs} <= ATTRIBUTES
    assert "By tag" in parsed.text["h2"] and sentence in parsed.text["p"]
    assert doc["verdict"] == "regressed" and doc["reasons"][0].startswith("cer@numbers_native: ")
    # cer is the headline: every tag, the degraded one regressed (its gate), the rest same; dnsmos_ovrl moved
    # nowhere and is not gated, so it is left to comparison.json.
    assert any(t.startswith("numbers_native") and "≤ 0.05 worse" in t for t in parsed.text["tr.regressed"])
    rows = [r.replace("\\_", "_") for r in md.splitlines() if r.startswith("| ") and " | cer ↓ | " in r]
    assert [r.split(" | ")[0][2:] for r in rows] == ["numbers_native", "liaison", "statement", KOREAN_TAG, "question"]
    assert rows[0].endswith("| regressed |") and all(r.endswith("| same |") for r in rows[1:])
    assert "### By tag" in md and sentence in md
    assert "Not shown: 5 other (tag, metric) deltas" in md
    html = MarkdownIt("commonmark").enable("table").render(md)
    assert html.count("<table>") == 3  # metrics, by tag, worst utterances
    by_tag = doc["by_tag"]
    assert by_tag["correction"] == "bonferroni" and by_tag["statement"] == sentence
    assert len(by_tag["deltas"]) == 10  # every (tag, key), shown or not
    nn = next(d for d in by_tag["deltas"] if (d["tag"], d["key"]) == ("numbers_native", "cer"))
    assert nn["status"] == "regressed" and nn["confidence"] == pytest.approx(0.99) and nn["tags_compared"] == 5
    assert nn["ci"][0] > 0 and nn["n"] == 10
    assert f"<td>{KOREAN_TAG}</td>" in page and KOREAN_TEXTS[0] in page


def test_a_tag_moved_on_a_key_that_is_not_a_headline_is_shown(tmp_path):
    cand, base = pair()
    worse = [Row(r.utterance_id, r.text, r.tags, {**r.values, "dnsmos_ovrl": 2.0 if "question" in r.tags else 3.0},
                 r.texts) for r in cand.rows]
    cand = LoadedRun(cand.summary, worse, None, None, cand.source)
    _, md, _ = write_report(tmp_path / "r", cand, base, gates={"default": "none"})
    md = md.replace("\\_", "_")  # Markdown escapes of the run-provided names
    rows = [r for r in md.splitlines() if " | dnsmos_ovrl ↑ | " in r and not r.startswith("| dnsmos_ovrl")]
    assert [r.split(" | ")[0][2:] for r in rows] == ["statement", "question"]  # only the tags that moved
    assert all(r.endswith("| worse |") for r in rows)


def test_a_hostile_tag_is_text(tmp_path):
    from test_report_templates import HOSTILE, Page

    tags = [(HOSTILE,) if i < 10 else t for i, t in enumerate(TAGS)]
    page, md, _ = write_report(tmp_path / "r", tagged_run(CAND_CER, tags, "c"), tagged_run(BASE_CER, tags, "b"),
                               gates={"default": "none"})
    parsed = Page(page)
    assert parsed.stack == [] and "script" not in {t for t, _ in parsed.elements}
    assert HOSTILE in parsed.text["td"]
    assert "<script>" not in md


def write_folder(folder: Path, run: LoadedRun) -> Path:
    folder.mkdir(parents=True)
    record.write(folder, run.summary, run.rows)
    return folder


@pytest.fixture
def folders(tmp_path) -> tuple[Path, Path]:
    cand, base = korean_pair()
    return write_folder(tmp_path / "cand", cand), write_folder(tmp_path / "base", base)


def test_compare_prints_a_table_per_headline_key_by_tag(folders):
    cand, base = folders
    proc = run_cli_env("compare", str(base), str(cand))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Per-tag intervals are Bonferroni-corrected across the 5 tags: each is a 1-0.05/5 interval (99%)." in out
    assert "cer ↓ by tag · 99% CIs" in out and "dnsmos_ovrl ↑ by tag" not in out  # nothing moved there
    assert re.search(r"numbers_native\s+10\s.*worse", out) and re.search(rf"{KOREAN_TAG}\s+10\s.*same", out)
    assert re.search(r"statement\s+20\s.*same", out)
    # After the suite-wide table, as an addition to it.
    assert out.index("paired utterances") < out.index("by tag")


def test_report_tag_gate_exits_1_and_unknown_tag_exits_2_in_one_line(folders, tmp_path):
    cand, base = folders
    gates = tmp_path / "gates.yaml"
    gates.write_text("cer: {max_abs: 0.1}\ncer@numbers_native: {max_abs: 0.05}\n", encoding="utf-8")
    out = tmp_path / "report"
    proc = run_cli_env("report", "--candidate", str(cand), "--baseline", str(base), "--gates", str(gates),
                       "--out", str(out), "--fail-on-regression")
    assert proc.returncode == 1, proc.stderr
    assert "verdict: regressed" in proc.stdout and "cer@numbers_native: " in proc.stdout
    assert re.search(r"numbers_native\s+10\s.*regressed", proc.stdout)
    assert "### By tag" in (out / "summary.md").read_text(encoding="utf-8")

    gates.write_text("cer: {max_abs: 0.1}\ncer@numbres_native: {max_abs: 0.05}\n", encoding="utf-8")
    proc = run_cli_env("report", "--candidate", str(cand), "--baseline", str(base), "--gates", str(gates),
                       "--out", str(tmp_path / "never"), "--fail-on-regression")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "numbres_native" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "never").exists()  # nothing written


def run_cli_env(*args: str):
    # Wide enough that no table cell wraps: the assertions read whole rows.
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "200"
    try:
        return run_cli(*args)
    finally:
        if old is None:
            os.environ.pop("COLUMNS")
        else:
            os.environ["COLUMNS"] = old


BY_TAG_PROBE = """JSON.stringify({
  lang: document.documentElement.lang,
  heading: [...document.querySelectorAll('h2')].map(h => h.textContent),
  rows: (() => { const h = [...document.querySelectorAll('h2')].find(e => e.textContent === 'By tag');
                 let t = h && h.nextElementSibling; while (t && t.tagName !== 'TABLE') t = t.nextElementSibling;
                 return t ? [...t.rows].map(r => [...r.cells].map(c => c.innerText)) : []; })(),
  hangul: (() => { const c = document.createElement('canvas').getContext('2d');
                   c.font = '16px system-ui, "Noto Sans", NanumGothic, sans-serif';
                   const w = s => c.measureText(s).width;
                   return w('받침') !== w('\\uFFFF\\uFFFF'); })(),
  title: document.title})"""


@pytest.mark.slow
def test_by_tag_section_renders_korean_in_headless_chromium(tmp_path, monkeypatch):
    import test_report

    write_report(tmp_path / "report", *korean_pair())
    monkeypatch.setattr(test_report, "PROBE", BY_TAG_PROBE)
    shot = tmp_path / "report.png"
    seen = test_report.open_in_chromium(tmp_path / "report" / "index.html", shot)
    print(f"\nscreenshot: {shot}")
    assert seen["problems"] == [], seen["problems"]
    assert seen["lang"] == "ko" and "By tag" in seen["heading"]
    header, *rows = seen["rows"]
    assert header[:3] == ["tag", "metric", "n"] and header[-1] == "status"
    by_tag = {r[0]: r for r in rows}
    assert by_tag["numbers_native"][-1] == "regressed" and by_tag[KOREAN_TAG][-1] == "same"
    assert by_tag[KOREAN_TAG][2] == "10"
    assert seen["hangul"], "Hangul draws as missing glyphs: install fonts-nanum"
    assert seen["title"].startswith("evalkit report: regressed")
