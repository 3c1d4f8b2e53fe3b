"""The report from its Jinja2 templates: run-provided strings are escaped (HTML parsed back, Markdown
rendered by a real CommonMark parser), alignment columns and the ranking key come from what the
metrics declare, the templates consume only the view model, and missing templates are one error line.

No model needed: made-up runs (LoadedRun) through the real compare, gates and report code.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import soundfile

from evalkit import compare as cmp
from evalkit import gates as gates_mod
from evalkit import report as report_mod
from evalkit.errors import EvalkitError
from evalkit.record import RunRecord
from evalkit.runs import LoadedRun
from evalkit.types import Row

HOSTILE = '<script>alert(1)</script>"onload=alert(2) x="</td></tr><img src=x onerror=alert(3)>'
# What the page may contain at all: every element and attribute report.html.j2 writes.
ELEMENTS = {"html", "head", "meta", "title", "style", "body", "header", "h1", "p", "b", "small", "br", "ul", "li",
            "h2", "table", "tr", "th", "td", "section", "h3", "del", "ins", "span", "audio", "img", "footer"}
ATTRIBUTES = {"lang", "charset", "name", "content", "class", "title", "controls", "preload", "src", "alt"}


def make_run(folder: Path | None, source: str, values: dict[str, list[float]], *, model: str = "m",
             suite: str = "s", texts: list[str] | None = None, transcripts: list[str] | None = None,
             columns: dict[str, list[str]] | None = None, metrics: dict | None = None,
             ids: list[str] | None = None) -> LoadedRun:
    """A run as its folder would load: rows, a summary whose metrics declare what `metrics` says
    (default: one metric "m" with every key lower-is-better and no display fields, an older run)."""
    n = len(next(iter(values.values())))
    ids = ids or [f"u{i}" for i in range(n)]
    audio_dir = None
    if folder is not None:
        audio_dir = folder / "audio"
        audio_dir.mkdir(parents=True)
        for uid in ids:
            soundfile.write(audio_dir / f"{uid}.wav", np.zeros(800, dtype=np.float32), 16000)
    rows = []
    for i, uid in enumerate(ids):
        row = {"id": uid, "text": (texts or [f"t{j}" for j in range(n)])[i], "failure": None, "notes": None,
               "transcript": (transcripts or [f"t{j}" for j in range(n)])[i],
               "audio": f"audio/{uid}.wav" if folder is not None else None}
        row.update({k: v[i] for k, v in values.items()})
        row.update({k: v[i] for k, v in (columns or {}).items()})
        rows.append(row)
    if metrics is None:
        metrics = {"m": {"version": "1", "higher_is_better": dict.fromkeys(values, False)}}
    summary = {"run_id": (source * 8)[:32], "params": {"model": model}, "tags": {},
               "suite": {"name": suite, "digest": "d", "language": "en", "version": "1"},
               "metrics": metrics,
               "aggregates": {f"{k}/mean": float(np.mean(v)) for k, v in values.items()}}
    return LoadedRun(RunRecord.from_json(summary), [Row.from_json(r) for r in rows], audio_dir, None, f"test:{source}")


def write(out: Path, cand: LoadedRun, base: LoadedRun, worst_by: str | None = None, **kw) -> tuple[str, str]:
    result = cmp.compare(cand, base)
    assert isinstance(result, cmp.Comparison)
    report_mod.write(out, cand, base, result, gates_mod.judge(result, gates_mod.BUILTIN), worst_by, **kw)
    return (out / "index.html").read_text(encoding="utf-8"), (out / "summary.md").read_text(encoding="utf-8")


class Page(HTMLParser):
    """The parsed page: elements with their attributes, the text of each cell, and the rows of the
    utterance tables."""

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.stack: list[str] = []
        self.classes: list[str | None] = []
        self.text: dict[str, list[str]] = {}  # tag (and tag.class) -> texts of its elements, in order
        self.open_text: list[list[str]] = []
        self.utterance_rows: list[list[str]] = []  # cell tags of each row inside section.utt
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        if tag in ("br", "meta", "img"):  # void elements
            return
        self.stack.append(tag)
        self.classes.append(dict(attrs).get("class"))
        self.open_text.append([])
        if tag == "tr" and self._in_utterance():
            self.utterance_rows.append([])
        if tag in ("td", "th") and self._in_utterance() and self.utterance_rows:
            self.utterance_rows[-1].append(tag)

    def _in_utterance(self) -> bool:
        return any(t == "section" for t in self.stack)

    def handle_endtag(self, tag):
        if tag in ("br", "meta", "img"):
            return
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()
        cls = self.classes.pop()
        text = "".join(self.open_text.pop())
        self.text.setdefault(tag, []).append(text)
        if cls:
            self.text.setdefault(f"{tag}.{cls}", []).append(text)
        if self.open_text:
            self.open_text[-1].append(text)

    def handle_data(self, data):
        if self.open_text:
            self.open_text[-1].append(data)


def hostile_runs(tmp_path: Path) -> tuple[LoadedRun, LoadedRun]:
    metrics = {"intelligibility": {"version": "2", "higher_is_better": {"cer": False},
                                   "alignments": ["cer_alignment"], "headline": "cer"}}
    common = dict(suite=f"suite {HOSTILE}", model=f"model {HOSTILE}", texts=[f"text {HOSTILE}", "plain"],
                  metrics=metrics)
    cand = make_run(tmp_path / "cand", "c", {"cer": [0.5, 0.0]}, transcripts=[f"heard {HOSTILE}", "plain"],
                    columns={"cer_alignment": [f"a[<script>→</td>]b[-\"onload=x]c[+{HOSTILE}]d {HOSTILE}", "plain"]},
                    **common)
    base = make_run(tmp_path / "base", "b", {"cer": [0.0, 0.0]}, transcripts=["heard", "plain"],
                    columns={"cer_alignment": ["ok", "plain"]}, **common)
    return cand, base


def test_run_provided_html_is_escaped(tmp_path):
    cand, base = hostile_runs(tmp_path)
    page, _ = write(tmp_path / "r", cand, base)
    parsed = Page(page)
    assert parsed.stack == []  # every element closed where the template closes it
    tags = {tag for tag, _ in parsed.elements}
    assert tags <= ELEMENTS and "script" not in tags
    attrs = {name for _, a in parsed.elements for name in a}
    assert attrs <= ATTRIBUTES and not any(name.startswith("on") for name in attrs)
    images = [a for tag, a in parsed.elements if tag == "img"]
    assert images and all(a["src"].startswith("data:image/svg+xml;base64,") for a in images)  # plots only
    # Every utterance row keeps its four cells: a "</td>" in a run's text closed nothing.
    assert parsed.utterance_rows and all(row == ["th", "td", "td", "td"] for row in parsed.utterance_rows[1:])
    # The strings arrive as text, whole.
    assert f"suite {HOSTILE}" in parsed.text["title"][0]
    assert f"heard {HOSTILE}" in parsed.text["td"]
    assert f"text {HOSTILE}" in parsed.text["p"]
    assert any(f"model {HOSTILE}" in b for b in parsed.text["b"])
    align = [t for t in parsed.text["td"] if t.startswith("a<script>→</td>b")]
    assert align == [f'a<script>→</td>b"onload=xc{HOSTILE}d {HOSTILE}']
    assert parsed.text["del"] == ['"onload=x'] and parsed.text["ins"] == [HOSTILE]
    assert parsed.text["span.sub"] == ["<script>→</td>"]


def test_templates_never_mark_a_value_safe():
    folder = report_mod.template_dir()
    for name in report_mod.TEMPLATES:
        source = (folder / name).read_text(encoding="utf-8")
        compact = source.replace(" ", "")
        assert "|safe" not in compact and "autoescapefalse" not in compact and "Markup" not in source, name


def test_markdown_escapes_run_provided_text(tmp_path):
    from markdown_it import MarkdownIt

    nasty = "a|b *em* _u_ **bold** [link](http://example.com) `code` <b>x</b> # h ~s~ \\ end\nnext line"
    metrics = {"m": {"version": "1", "higher_is_better": {"cer": False}, "headline": "cer"}}
    cand = make_run(None, "c", {"cer": [0.5, 0.2, 0.1]}, suite=f"s {nasty}", model=f"m {nasty}",
                    texts=[f"text {nasty}"] * 3, transcripts=[f"heard {nasty}"] * 3, metrics=metrics,
                    ids=[f"id|{i}*" for i in range(3)])
    base = make_run(None, "b", {"cer": [0.0, 0.0, 0.0]}, suite=f"s {nasty}", texts=[f"text {nasty}"] * 3,
                    transcripts=["heard"] * 3, metrics=metrics, ids=[f"id|{i}*" for i in range(3)])
    _, md = write(tmp_path / "r", cand, base)
    html = MarkdownIt("commonmark").enable("table").render(md)
    parsed = Page(f"<div>{html}</div>")
    tags = {tag for tag, _ in parsed.elements}
    # Only the summary's own markup: no link, emphasis, code, heading or raw HTML from the runs.
    assert not tags & {"a", "em", "code", "b", "h1"}
    assert parsed.text["strong"] == ["Regressions:"]
    flat = " ".join(nasty.split())
    rows = [r for r in md.splitlines() if r.startswith("| id\\|")]
    assert len(rows) == 3  # every utterance got worse; the newline did not split a row
    cells = parsed.text["td"]
    assert f"text {flat}" in cells and f"heard {flat}" in cells and "id|0*" in cells
    assert html.count("<table>") == 2  # metrics and worst utterances
    header_cells = parsed.text["th"]
    assert header_cells[:8] == ["metric", "baseline", "candidate", "Δ", "95% CI", "p", "gate", "status"]
    # Each worst-utterance row has its five cells, the first the id as written.
    worst_cells = cells[-15:]
    assert worst_cells[0] == "id|0*" and worst_cells[5] == "id|1*"
    assert worst_cells[2] == f"text {flat}" and worst_cells[4] == f"heard {flat}"
    assert f"Candidate m {flat}" in parsed.text["p"][0] and f"suite s {flat}" in parsed.text["p"][0]


def test_alignment_columns_come_from_the_declaration(tmp_path):
    rows = {"cer_alignment": ["x[a→b]y", "z"], "phone_alignment": ["p[-h]o[+n]e", "q"]}

    def pair(metrics):
        return (make_run(None, "c", {"cer": [0.5, 0.0]}, columns=rows, metrics=metrics),
                make_run(None, "b", {"cer": [0.0, 0.0]}, columns=rows, metrics=metrics))

    def declared(alignments):
        return {"g2p": {"version": "1", "higher_is_better": {"cer": False}, "alignments": alignments,
                        "headline": "cer"}}

    page, _ = write(tmp_path / "phone", *pair(declared(["phone_alignment"])))
    parsed = Page(page)
    # u0 (the one that got worse), candidate and baseline: the phone alignment, highlighted; no cer_alignment.
    assert parsed.text["del"] == ["h", "h"] and parsed.text["ins"] == ["n", "n"] and "span.sub" not in parsed.text
    assert "ASR errors vs text" in parsed.text["th"]
    assert all(row == ["th", "td", "td", "td"] for row in parsed.utterance_rows[1:])

    page, _ = write(tmp_path / "none", *pair(declared([])))  # declares none: none shown
    parsed = Page(page)
    assert "ASR errors vs text" not in parsed.text["th"] and 'class="align"' not in page and "class=align" not in page
    assert all(row == ["th", "td", "td"] for row in parsed.utterance_rows[1:])
    assert "span.sub" not in parsed.text and "del" not in parsed.text

    page, _ = write(tmp_path / "old", *pair({"m": {"version": "1", "higher_is_better": {"cer": False}}}))
    assert "class=align" not in page and "ASR errors vs text" not in page  # an older run: none

    page, _ = write(tmp_path / "both", *pair(declared(["cer_alignment", "phone_alignment"])))
    parsed = Page(page)
    assert [t for t in parsed.text["th"] if t.startswith("ASR errors")] == [
        "ASR errors vs text cer_alignment", "ASR errors vs text phone_alignment"]
    assert parsed.text["span.sub"] == ["a→b", "a→b"] and parsed.text["del"] == ["h", "h"]
    assert all(row == ["th", "td", "td", "td", "td"] for row in parsed.utterance_rows[1:])

    # A metric that was not compared (only in one run) shows no column.
    other = {"asr2": {"version": "1", "higher_is_better": {"wer": False}, "alignments": ["phone_alignment"]}}
    cand = make_run(None, "c", {"cer": [0.5, 0.0], "wer": [0.1, 0.2]}, columns=rows,
                    metrics={**declared([]), **other})
    base = make_run(None, "b", {"cer": [0.0, 0.0]}, columns=rows, metrics=declared([]))
    page, _ = write(tmp_path / "uncompared", cand, base)
    assert "class=align" not in page


def listed(md: str) -> list[str]:
    section = md.split("utterances (by ")[1]
    return [line.split(" | ")[0][2:] for line in section.splitlines() if line.startswith("| u")]


def test_worst_utterances_ranked_by_the_declared_headline(tmp_path):
    # cer worsens most on u0, wer most on u2; dnsmos (higher is better) drops on u1.
    values_c = {"cer": [0.5, 0.1, 0.2], "wer": [0.1, 0.0, 0.9], "mos": [3.0, 2.0, 3.0]}
    values_b = {"cer": [0.0, 0.0, 0.0], "wer": [0.0, 0.0, 0.0], "mos": [3.0, 3.0, 3.0]}

    def runs(cand_headlines, base_headlines=(None, None)):
        def declared(h):
            return {"quality": {"version": "1", "higher_is_better": {"mos": True}, "headline": h[0]},
                    "intelligibility": {"version": "1", "higher_is_better": {"cer": False, "wer": False},
                                        "headline": h[1]}}
        return (make_run(None, "c", values_c, metrics=declared(cand_headlines)),
                make_run(None, "b", values_b, metrics=declared(base_headlines)))

    _, md = write(tmp_path / "wer", *runs((None, "wer")))
    assert "utterances (by wer)" in md and listed(md) == ["u2", "u0"]
    page = (tmp_path / "wer" / "index.html").read_text(encoding="utf-8")
    assert "(by wer)</h2>" in page and page.index("<h3>u2 ") < page.index("<h3>u0 ")

    _, md = write(tmp_path / "cer", *runs((None, "cer")))
    assert "utterances (by cer)" in md and listed(md) == ["u0", "u2", "u1"]

    _, md = write(tmp_path / "first", *runs(("mos", "cer")))  # the first declared headline compared
    assert "utterances (by mos)" in md and listed(md) == ["u1"]

    _, md = write(tmp_path / "chosen", *runs(("mos", "cer")), worst_by="wer")  # --worst-by wins
    assert "utterances (by wer)" in md

    _, md = write(tmp_path / "base-declares", *runs((None, None), (None, "wer")))  # the first headline found
    assert "utterances (by wer)" in md

    _, md = write(tmp_path / "uncompared", *runs(("nope", None)))  # not a compared key: first that got worse
    first_worse = next(m.key for m in cmp.compare(*runs((None, None))).metrics if m.direction == "worse")
    assert f"utterances (by {first_worse})" in md


def test_view_model_is_plain_data(tmp_path):
    cand, base = hostile_runs(tmp_path)
    result = cmp.compare(cand, base)
    model = report_mod.view(tmp_path / "out", cand, base, result, gates_mod.judge(result, gates_mod.BUILTIN))

    def walk(v, path="report"):
        if dataclasses.is_dataclass(v):
            assert type(v).__dataclass_params__.frozen, path
            for f in dataclasses.fields(v):
                walk(getattr(v, f.name), f"{path}.{f.name}")
        elif isinstance(v, tuple):
            for i, x in enumerate(v):
                walk(x, f"{path}[{i}]")
        else:
            assert v is None or type(v) in (str, int, float, bool), (path, type(v))

    walk(model)
    assert model.comparison is not None and model.comparison.alignment_columns == ("cer_alignment",)


def test_missing_or_broken_templates_are_one_error_line(tmp_path):
    cand, base = hostile_runs(tmp_path)
    found = report_mod.template_dir()
    assert all((found / name).is_file() for name in report_mod.TEMPLATES)
    for gone in report_mod.TEMPLATES:
        copy = tmp_path / f"templates-{gone}"
        shutil.copytree(found, copy)
        (copy / gone).unlink()
        out = tmp_path / f"out-{gone}"
        with pytest.raises(EvalkitError) as caught:
            write(out, cand, base, templates=copy)
        message = str(caught.value)
        assert "\n" not in message and gone in message and str(copy) in message
        assert not out.exists()  # nothing written

    broken = tmp_path / "templates-broken"
    shutil.copytree(found, broken)
    page = broken / "report.html.j2"
    page.write_text(page.read_text(encoding="utf-8").replace("{{ report.suite.name }}", "{{ report.suite.nmae }}", 1),
                    encoding="utf-8")
    with pytest.raises(EvalkitError) as caught:
        write(tmp_path / "out-broken", cand, base, templates=broken)
    assert "\n" not in str(caught.value) and "report.html.j2" in str(caught.value) and "nmae" in str(caught.value)


def test_comparison_json_carries_the_run_ids(tmp_path):
    cand, base = hostile_runs(tmp_path)
    write(tmp_path / "r", cand, base)
    doc = json.loads((tmp_path / "r" / "comparison.json").read_text(encoding="utf-8"))
    assert doc["candidate"] == {"source": "test:c", "mlflow_run_id": None, "run_id": cand.summary.run_id}
    assert doc["baseline"]["run_id"] == base.summary.run_id
