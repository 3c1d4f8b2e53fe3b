"""The sweep report (evalkit.sweep_report) over real run folders written by evalkit.record: four
checkpoints of a Korean suite whose CER rises with the training step, a failed and a skipped
checkpoint, evaluated out of step order. The numbers in the page are checked against the rows
(best checkpoint per direction, tag means, CIs around the means, one chart point per checkpoint in
step order), untrusted sweep files are refused in one line, and the page is opened in headless
Chromium (Korean rendered with real glyphs, every player loads its clip)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import soundfile

from evalkit import aggregate, record, sweep_report
from evalkit.errors import EvalkitError
from evalkit.record import MetricInfo, RunRecord, SuiteInfo
from evalkit.types import Row

STEPS = (1000, 2000, 3000, 4000)
EVALUATION_ORDER = (3000, 1000, 4000, 2000)  # as a --watch sweep meets checkpoints: not step order
# id, text, tags, CER at step 1000, CER added per later checkpoint.
UTTERANCES = (
    ("ko-1", "사과 3개 주세요.", ("numbers_native",), 0.0, 0.02),
    ("ko-2", "같이 갈래요?", ("liaison", "question"), 0.05, 0.10),
    ("ko-3", "오늘 날씨가 좋네요.", (), 0.0, 0.0),
    ("ko-4", "2024년 5월 1일에 만나요.", ("numbers_sino",), 0.1, 0.05),
    ("ko-5", "국물이 맛있어요.", ("liaison",), 0.02, 0.03),
    ("ko-6", "어디 가세요?", ("question",), 0.0, 0.01),
)
# Per checkpoint: DNSMOS (higher is better) peaks at step 2000, mel DTW (lower is better) is lowest at 3000.
DNSMOS = {1000: 3.0, 2000: 3.4, 3000: 2.8, 4000: 2.5}
MEL_DTW = {1000: 9.0, 2000: 8.0, 3000: 7.0, 4000: 10.0}
OFFSETS = (-0.1, 0.0, 0.1, 0.05, -0.05, 0.0)
FAILED_AT_LAST = "ko-6"  # synthesis failed on it at step 4000: no values, no clip
METRICS = {
    "intelligibility": MetricInfo("2", 16000, {"cer": False, "wer": False}, alignments=("cer_alignment",),
                                  headline="cer"),
    "dnsmos": MetricInfo("1", 16000, {"dnsmos_ovrl": True, "dnsmos_sig": True}, headline="dnsmos_ovrl"),
    "mel_dtw": MetricInfo("1", 16000, {"mel_dtw": False, "duration_ratio": None}, headline="mel_dtw"),
}


def cer(uid: str, step: int) -> float:
    _, _, _, start, slope = next(u for u in UTTERANCES if u[0] == uid)
    return round(start + slope * STEPS.index(step), 6)


def run_rows(step: int) -> list[Row]:
    rows = []
    for i, (uid, text, tags, _, _) in enumerate(UTTERANCES):
        if step == STEPS[-1] and uid == FAILED_AT_LAST:
            rows.append(Row(uid, text, tags, {k: math.nan for k in ("cer", "wer", "dnsmos_ovrl", "mel_dtw")},
                            failure="synthesis failed: boom"))
            continue
        c = cer(uid, step)
        heard = text if c == 0 else text[:-2] + "어요"
        rows.append(Row(uid, text, tags,
                        {"cer": c, "wer": min(1.0, 2 * c), "dnsmos_ovrl": DNSMOS[step] + OFFSETS[i],
                         "dnsmos_sig": 3.5, "mel_dtw": MEL_DTW[step] + OFFSETS[i], "duration_ratio": 1.0},
                        {"transcript": heard, "cer_alignment": text if c == 0 else f"{text[:-2]}[{text[-2:]}→어요]"},
                        audio_path=f"audio/{uid}.wav"))
    return rows


def write_run(folder: Path, step: int, *, with_by_tag: bool = True) -> None:
    rows = run_rows(step)
    (folder / "audio").mkdir(parents=True)
    for k, r in enumerate(rows):
        if r.audio_path:  # a short tone whose pitch tells the checkpoints apart
            t = np.arange(3200) / 16000
            soundfile.write(folder / r.audio_path, (0.2 * np.sin(2 * np.pi * (200 + step / 10 + k) * t)), 16000,
                            subtype="PCM_16")
    summary = RunRecord(
        run_id=f"{step:032x}", run_name=f"ckpt-{step}", evalkit_version="0.1.0", started_unix=1.7e9 + step,
        finished_unix=1.7e9 + step + 60, suite=SuiteInfo("ko-mini", "1", "ko", "d" * 64, "suites/ko-mini", len(rows)),
        model={"sha256": "0" * 64}, adapter="torch", asr={"engine": "faster-whisper"}, metrics=METRICS,
        params={"model": f"ckpt/step-{step}.pt"}, tags={"evalkit.textnorm_version": "3"},
        aggregates=aggregate.aggregate(rows), by_tag=aggregate.by_tag(rows) if with_by_tag else {}, step=step)
    record.write(folder, summary, rows)


def make_sweep(root: Path, *, extra: list[dict] | None = None) -> Path:
    """A sweep folder as `evalkit sweep` writes it; the last checkpoint's record has no by_tag (an
    older run folder), so its tag means come from its rows."""
    sweep = root / "sweep"
    entries = []
    for step in EVALUATION_ORDER:
        write_run(sweep / "runs" / f"ko-mini-{step}", step, with_by_tag=step != STEPS[-1])
        entries.append({"model": f"ckpt/step-{step}.pt", "step": step, "step_source": "checkpoint key global_step",
                        "suite": "ko-mini", "status": "done", "reason": None, "run_dir": f"runs/ko-mini-{step}",
                        "mlflow_run_id": f"{step:032x}"})
        if step == 1000:
            entries.append({"model": "ckpt/step-5000.pt", "step": 5000, "step_source": "file name",
                            "suite": "ko-mini", "status": "failed", "run_dir": None, "mlflow_run_id": None,
                            "reason": "unloadable checkpoint: RuntimeError: size mismatch <b>conv.weight</b>"})
    entries.append({"model": "ckpt/step-6000.pt", "step": 6000, "step_source": "sidecar", "suite": "ko-mini",
                    "status": "skipped", "run_dir": None, "mlflow_run_id": None,
                    "reason": "already evaluated in experiment nightly"})
    entries += extra or []
    doc = {"format": 1, "sweep_id": "ab12cd34", "started_unix": 1.7e9, "finished_unix": 1.7e9 + 900,
           "suites": ["ko-mini"], "parent_run_id": "f" * 32, "checkpoints": entries}
    (sweep / "sweep.json").write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return sweep


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    return make_sweep(tmp_path_factory.mktemp("sweep"))


@pytest.fixture(scope="module")
def built(sweep_dir) -> tuple[str, str]:
    return sweep_report.build(sweep_dir)


class Page(HTMLParser):
    """The parsed page: every element with its attributes, and the tables as rows of cell texts
    (the table's class, then its rows; a cell's text includes its children's)."""

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.tables: list[tuple[str, list[list[str]]]] = []
        self.cell_styles: list[tuple[str, str]] = []  # (text, style) of every styled cell
        self.texts: dict[str, list[str]] = {}  # tag -> the texts of its elements
        self._open: list[tuple[str, dict, list[str]]] = []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.elements.append((tag, a))
        if tag in ("br", "meta", "line", "polyline", "polygon"):
            return
        self._open.append((tag, a, []))
        if tag == "table":
            self.tables.append((a.get("class") or "", []))
        elif tag == "tr":
            self.tables[-1][1].append([])

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if tag in ("br", "meta", "line", "polyline", "polygon"):
            return
        open_tag, attrs, parts = self._open.pop()
        assert open_tag == tag, f"</{tag}> closes <{open_tag}>"
        text = "".join(parts)
        self.texts.setdefault(tag, []).append(text)
        if self._open:
            self._open[-1][2].append(text)
        if tag in ("td", "th") and any(t == "table" for t, _, _ in self._open):
            self.tables[-1][1][-1].append(text)
            if attrs.get("style"):
                self.cell_styles.append((text, attrs["style"]))

    def handle_data(self, data):
        if self._open:
            self._open[-1][2].append(data)

    def table(self, cls: str) -> list[list[str]]:
        found = [rows for c, rows in self.tables if c == cls]
        assert len(found) == 1, (cls, [c for c, _ in self.tables])
        return found[0]


def md_tables(md: str) -> list[list[list[str]]]:
    """The Markdown's tables as a CommonMark renderer shows them: rows of cell texts."""
    from markdown_it import MarkdownIt

    return [rows for _, rows in Page("<div>" + MarkdownIt("commonmark").enable("table").render(md) + "</div>").tables]


def finite_mean(values) -> float:
    v = [x for x in values if math.isfinite(x)]
    return float(np.mean(v))


def close(text: str, expected: float) -> bool:
    """A number the report printed with 4 significant digits."""
    return math.isclose(float(text), expected, rel_tol=5e-4, abs_tol=1e-9)


def interval(text: str) -> tuple[float, float, float]:
    mean, low, high = re.fullmatch(r"(\S+) \((\S+)–(\S+)\)", text.replace(" ★", "")).groups()
    return float(mean), float(low), float(high)


def test_best_checkpoint_follows_each_metrics_direction(built):
    page, md = built
    best = {row[0]: row for row in Page(page).table("best")[1:]}
    # CER and WER rise with the step (lower is better), DNSMOS peaks at 2000, mel DTW bottoms at 3000.
    assert {k: row[1] for k, row in best.items()} == {"cer ↓": "1000", "dnsmos_ovrl ↑": "2000",
                                                      "mel_dtw ↓": "3000", "wer ↓": "1000"}
    # No key without a direction, and no key that is not a headline or a usual metric (dnsmos_sig).
    assert "duration_ratio ↕" not in best and "dnsmos_sig ↑" not in best
    assert best["dnsmos_ovrl ↑"][3] == "step-2000.pt"  # the file name: a shared report holds no local paths
    mean, low, high = interval(best["dnsmos_ovrl ↑"][2])
    assert close(str(mean), finite_mean(v.value("dnsmos_ovrl") for v in run_rows(2000)))
    # Not clearly worse: exactly the checkpoints whose mean lies inside the best one's CI.
    numbers = Page(page).table("numbers")
    column = numbers[0].index("cer ↓")
    means = {int(r[0]): interval(r[column])[0] for r in numbers[1:]}
    _, cer_low, cer_high = interval(best["cer ↓"][2])
    near = [s for s in STEPS if s != 1000 and cer_low <= means[s] <= cer_high]
    assert best["cer ↓"][4] == (", ".join(map(str, near)) if near else "none")
    assert md_tables(md)[0][1:] == [row[:3] + row[4:] for row in best.values()]


def test_numbers_table_holds_each_checkpoints_mean_inside_its_ci(built):
    page, md = built
    numbers = Page(page).table("numbers")
    header = numbers[0]
    assert header[4:] == ["cer ↓", "dnsmos_ovrl ↑", "mel_dtw ↓", "wer ↓"]  # headlines first, then usual keys
    assert [int(r[0]) for r in numbers[1:]] == list(STEPS)  # step order, not evaluation order
    for r in numbers[1:]:
        step = int(r[0])
        rows = run_rows(step)
        assert r[3] == str(sum(x.failure is not None for x in rows))
        for key in ("cer", "dnsmos_ovrl", "mel_dtw", "wer"):
            mean, low, high = interval(r[header.index(key + (" ↑" if key == "dnsmos_ovrl" else " ↓"))])
            assert close(str(mean), finite_mean(x.value(key) for x in rows))
            assert low <= mean <= high
            if len({x.value(key) for x in rows if math.isfinite(x.value(key))}) > 1:
                assert low < high  # values that differ give an interval, not a point
    # The same numbers in the Markdown, best marked.
    md_numbers = md_tables(md)[1]
    assert md_numbers[0] == ["step", "utterances", "failures", *header[4:]]
    assert [r[0] for r in md_numbers[1:]] == [r[0] for r in numbers[1:]]
    starred = {(r[0], k) for r in md_numbers[1:] for k, c in zip(header[4:], r[3:], strict=True) if c.endswith(" ★")}
    assert starred == {("1000", "cer ↓"), ("2000", "dnsmos_ovrl ↑"), ("3000", "mel_dtw ↓"), ("1000", "wer ↓")}
    assert [[c.removesuffix(" ★") for c in r[3:]] for r in md_numbers[1:]] == [r[4:] for r in numbers[1:]]


def test_chart_has_one_point_per_checkpoint_in_step_order(built):
    page, _ = built
    parsed = Page(page)
    svgs = [a for tag, a in parsed.elements if tag == "svg"]
    assert [a["aria-label"].split()[0] for a in svgs] == ["cer", "dnsmos_ovrl", "mel_dtw", "wer"]
    # Split the elements into charts: the circles and whiskers of each.
    charts: list[list[tuple[str, dict]]] = []
    for tag, a in parsed.elements:
        if tag == "svg":
            charts.append([])
        elif charts and tag in ("circle", "line") and (tag == "circle" or a.get("class") == "ci"):
            charts[-1].append((tag, a))
    for key, chart in zip(("cer", "dnsmos_ovrl", "mel_dtw", "wer"), charts, strict=True):
        points = [a for tag, a in chart if tag == "circle"]
        whiskers = [a for tag, a in chart if tag == "line"]
        assert [int(p["data-step"]) for p in points] == list(STEPS)
        xs = [float(p["cx"]) for p in points]
        assert xs == sorted(xs) and len(set(xs)) == len(xs)
        # Equal step gaps, equal distances: x is proportional to the step.
        assert np.allclose(np.diff(xs), xs[1] - xs[0], atol=0.11)
        means = [finite_mean(r.value(key) for r in run_rows(s)) for s in STEPS]
        ys = [float(p["cy"]) for p in points]
        for i, j in ((0, 1), (1, 2), (2, 3)):  # SVG y grows downwards: a higher mean is drawn higher up
            assert (ys[i] > ys[j]) == (means[i] < means[j]), (key, means, ys)
        for p, w in zip(points, whiskers, strict=True):  # each whisker spans its point: the CI holds the mean
            assert w["x1"] == p["cx"] and float(w["y1"]) >= float(p["cy"]) >= float(w["y2"])
        best = [int(p["data-step"]) for p in points if "best" in p["class"].split()]
        assert best == [{"cer": 1000, "dnsmos_ovrl": 2000, "mel_dtw": 3000, "wer": 1000}[key]]


def test_heatmap_holds_the_mean_cer_of_each_tag(built):
    page, md = built
    parsed = Page(page)
    heat = parsed.table("heat")
    assert heat[0] == ["tag", "utterances", *(f"step {s}" for s in STEPS)]
    by_tag = {r[0]: r[2:] for r in heat[1:]}
    tags = list(dict.fromkeys(t for u in UTTERANCES for t in u[2]))
    assert list(by_tag) == ["all utterances", *tags]
    for tag, cells in by_tag.items():
        for step, cell in zip(STEPS, cells, strict=True):
            rows = [r for r in run_rows(step) if tag == "all utterances" or tag in r.tags]
            assert close(cell, finite_mean(r.value("cer") for r in rows)), (tag, step, cell)
    # Coloured by value: the blue channel falls from green (good) through amber to red (bad).
    styled = sorted((float(text), int(style.removeprefix("background:#")[4:6], 16))
                    for text, style in parsed.cell_styles)
    assert len(styled) == len(by_tag) * len(STEPS)
    blues = [b for _, b in styled]
    assert blues == sorted(blues, reverse=True) and blues[0] > blues[-1]
    # The Markdown has the same table, plain.
    assert md_tables(md)[2] == heat


def test_listening_follows_one_sentence_across_checkpoints(built, sweep_dir):
    page, md = built
    # The utterances whose CER changed most between the first and the last checkpoint, largest first.
    assert re.findall(r'<section class="utt"><h3>(ko-\d)', page) == ["ko-2", "ko-4", "ko-5", "ko-1"]
    sections = page.split('<section class="utt">')[1:]
    for uid, section in zip(("ko-2", "ko-4", "ko-5", "ko-1"), sections, strict=True):
        text = next(u[1] for u in UTTERANCES if u[0] == uid)
        parsed = Page("<div>" + section.split("</section>")[0] + "</div>")
        assert parsed.texts["p"] == [text]  # Korean, as written
        rows = parsed.tables[0][1][1:]
        assert [int(r[0]) for r in rows] == list(STEPS)
        assert [float(r[3]) for r in rows] == [cer(uid, s) for s in STEPS]
        assert [r[1] for r in rows] == [next(x for x in run_rows(s) if x.utterance_id == uid).texts["transcript"]
                                        for s in STEPS]
        srcs = [a["src"] for tag, a in parsed.elements if tag == "audio"]
        assert len(srcs) == len(STEPS)
        for s, src in zip(STEPS, srcs, strict=True):  # each checkpoint's own clip, relative to the sweep folder
            assert not src.startswith(("/", "file:")) and unquote(src) == f"runs/ko-mini-{s}/audio/{uid}.wav"
            assert (sweep_dir / unquote(src)).is_file()
    assert "ko-2: 같이 갈래요?" in md


def test_failed_skipped_and_unreadable_checkpoints_are_listed(tmp_path):
    broken = {"model": "ckpt/step-7000.pt", "step": 7000, "step_source": "--steps", "suite": "ko-mini",
              "status": "done", "reason": None, "run_dir": "runs/half-written", "mlflow_run_id": None}
    sweep = make_sweep(tmp_path, extra=[broken])
    (sweep / "runs" / "half-written").mkdir()
    page, md = sweep_report.build(sweep)
    missed = Page(page).table("missed")[1:]
    assert [(r[0], r[2]) for r in missed] == [("5000", "failed"), ("6000", "skipped"), ("7000", "unreadable")]
    assert missed[0][3] == "unloadable checkpoint: RuntimeError: size mismatch <b>conv.weight</b>"  # as text
    assert "<b>conv.weight</b>" not in page and "&lt;b&gt;conv.weight&lt;/b&gt;" in page
    assert missed[1][3] == "already evaluated in experiment nightly"
    assert "runs/half-written" in missed[2][3] and "not a finished evalkit run folder" in missed[2][3]
    # None of them is drawn or tabled as evaluated.
    assert [int(r[0]) for r in Page(page).table("numbers")[1:]] == list(STEPS)
    assert "- step 5000 (failed): unloadable checkpoint: RuntimeError: size mismatch \\<b\\>conv.weight\\</b\\>" in md
    assert "- step 7000 (unreadable): run folder runs/half-written:" in md


@pytest.mark.parametrize("run_dir", ["../outside", "runs/../../outside", "/etc", "link-out", ""])
def test_a_run_dir_outside_the_sweep_is_refused(tmp_path, run_dir):
    sweep = make_sweep(tmp_path)
    outside = tmp_path / "outside"
    shutil.copytree(sweep / "runs" / "ko-mini-1000", outside)  # a real run folder, just not the sweep's
    os.symlink(outside, sweep / "link-out")
    doc = json.loads((sweep / "sweep.json").read_text(encoding="utf-8"))
    doc["checkpoints"][0]["run_dir"] = run_dir
    (sweep / "sweep.json").write_text(json.dumps(doc), encoding="utf-8")
    for call in (lambda: sweep_report.build(sweep), lambda: sweep_report.write(sweep)):
        with pytest.raises(EvalkitError) as caught:
            call()
        message = str(caught.value)
        assert "\n" not in message and "checkpoints[0]: run_dir" in message and str(sweep) in message
    assert not (sweep / "report.html").exists()


@pytest.mark.parametrize("edit, says", [
    (lambda d: "not json {", "not a readable sweep file"),
    (lambda d: [d], "a JSON object is expected"),
    (lambda d: {**d, "format": 2}, "format 2 is not one"),
    (lambda d: {**d, "checkpoints": {"a": 1}}, "checkpoints must be a list"),
    (lambda d: {**d, "checkpoints": [{**d["checkpoints"][0], "step": "1000"}]}, "step must be an integer"),
    (lambda d: {**d, "checkpoints": [{**d["checkpoints"][0], "status": "ok"}]}, "status must be one of"),
    (lambda d: {**d, "checkpoints": [{**d["checkpoints"][0], "run_dir": None}]}, "status done without a run_dir"),
    (lambda d: {**d, "checkpoints": [{**d["checkpoints"][0], "model": ["x"]}]}, "model must be a string"),
    (lambda d: {**d, "checkpoints": [d["checkpoints"][0], {**d["checkpoints"][1], "step": 3000}]},
     "both evaluated step 3000"),
])
def test_a_bad_sweep_file_is_one_error_line(tmp_path, edit, says):
    sweep = make_sweep(tmp_path)
    doc = edit(json.loads((sweep / "sweep.json").read_text(encoding="utf-8")))
    (sweep / "sweep.json").write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    with pytest.raises(EvalkitError) as caught:
        sweep_report.build(sweep)
    assert "\n" not in str(caught.value) and says in str(caught.value) and "sweep.json" in str(caught.value)


def test_run_provided_text_is_escaped(tmp_path):
    from markdown_it import MarkdownIt

    hostile = '<script>alert(1)</script>"onload=x *em* | [a](http://e.com)'
    extra = [{"model": f"ckpt/{hostile}.pt", "step": 9000, "step_source": "file name", "suite": "ko-mini",
              "status": "failed", "reason": f"boom {hostile}", "run_dir": None, "mlflow_run_id": None}]
    page, md = sweep_report.build(make_sweep(tmp_path, extra=extra))
    parsed = Page(page)
    assert "script" not in {tag for tag, _ in parsed.elements}
    assert not any(name.startswith("on") for _, a in parsed.elements for name in a)
    assert f"boom {hostile}" in parsed.texts["td"]
    assert sweep_report.shown_model(f"ckpt/{hostile}.pt") in parsed.texts["small"]
    rendered = Page("<div>" + MarkdownIt("commonmark").enable("table").render(md) + "</div>")
    assert not {tag for tag, _ in rendered.elements} & {"a", "em", "script"}
    assert f"step 9000 (failed): boom {hostile}" in rendered.texts["li"]


def test_one_checkpoint_a_suite_with_nothing_evaluated_and_an_unfinished_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    write_run(sweep / "only", 2000)
    doc = {"format": 1, "sweep_id": "0f", "started_unix": 1.7e9, "finished_unix": None, "parent_run_id": None,
           "suites": ["ko-mini", "en-base"], "checkpoints": [
               {"model": "a.pt", "step": 2000, "step_source": "--steps", "suite": "ko-mini", "status": "done",
                "reason": None, "run_dir": "only", "mlflow_run_id": None},
               {"model": "a.pt", "step": 2000, "step_source": "--steps", "suite": "en-base", "status": "failed",
                "reason": "ASR model does not know en", "run_dir": None, "mlflow_run_id": None}]}
    (sweep / "sweep.json").write_text(json.dumps(doc), encoding="utf-8")
    page, md = sweep_report.build(sweep)
    parsed = Page(page)
    assert parsed.texts["h2"] == ["Suite ko-mini v1 (ko)", "Suite en-base"]
    points = [a for tag, a in parsed.elements if tag == "circle"]
    assert len(points) == 4 and {p["data-step"] for p in points} == {"2000"}  # one point on each chart
    assert not any(tag == "polygon" for tag, _ in parsed.elements)  # no band between points that do not exist
    # A single checkpoint is the best of every directed key; the listening still plays its clips.
    assert [row[1] for row in parsed.table("best")[1:]] == ["2000"] * 4
    assert len([a for tag, a in parsed.elements if tag == "audio"]) == 4
    assert "0 checkpoints evaluated, 1 not" in md and "- step 2000 (failed): ASR model does not know en" in md
    assert "not finished (still running, or stopped)" in page and "MLflow parent run" not in page


def test_templates_never_mark_a_value_safe():
    folder = sweep_report.template_dir()
    for name in ("sweep.html.j2", "sweep.md.j2"):
        source = (folder / name).read_text(encoding="utf-8")
        compact = source.replace(" ", "")
        assert "|safe" not in compact and "autoescapefalse" not in compact and "Markup" not in source, name


def test_write_into_the_sweep_links_clips_and_elsewhere_copies_them(tmp_path):
    sweep = make_sweep(tmp_path)
    html, markdown = sweep_report.write(sweep)
    assert (html, markdown) == (sweep / "report.html", sweep / "report.md")
    assert (html.read_text(encoding="utf-8"), markdown.read_text(encoding="utf-8")) == sweep_report.build(sweep)

    moved = tmp_path / "moved" / "sweep"
    moved.parent.mkdir()
    shutil.move(sweep, moved)  # the folder is the unit: its report still finds every clip
    linked = re.findall(r'<audio controls preload="metadata" src="([^"]+)"', (moved / "report.html").read_text())
    assert len(linked) == 4 * len(STEPS) and all((moved / unquote(src)).is_file() for src in linked)

    out = tmp_path / "elsewhere"
    sweep_report.write(moved, out)
    page = (out / "report.html").read_text(encoding="utf-8")
    copied = re.findall(r'<audio controls preload="metadata" src="([^"]+)"', page)
    assert len(copied) == len(linked) and all(src.startswith("audio/") for src in copied)
    for src, original in zip(copied, linked, strict=True):  # the same clips, in the same places of the page
        assert (out / unquote(src)).read_bytes() == (moved / unquote(original)).read_bytes()
    sweep_report.write(moved, out)  # an earlier report is replaced
    assert sorted(p.name for p in out.iterdir()) == ["audio", "report.html", "report.md"]
    (out / "notes.txt").write_text("mine")
    with pytest.raises(EvalkitError, match="holds other files"):
        sweep_report.write(moved, out)


# What the browser is asked, on top of tests/test_report.py's PROBE: whether the Hangul of the
# listening texts is drawn with real glyphs. A missing font draws every syllable as the same box
# (tofu), so each distinct syllable is drawn alone on a canvas in the text's own font and the
# pictures are compared: real glyphs differ from each other and from a private-use character's box.
KOREAN_PROBE = """(() => {
  const base = JSON.parse(BASE_PROBE);
  const texts = [...document.querySelectorAll('section.utt p.text')];
  const font = texts.length ? getComputedStyle(texts[0]).font : '';
  const syllables = [...new Set(texts.map(e => e.innerText).join('').match(/[\\uac00-\\ud7a3]/g) || [])];
  const draw = ch => { const c = document.createElement('canvas'); c.width = 64; c.height = 64;
    const x = c.getContext('2d'); x.font = font.replace(/\\d+(\\.\\d+)?px/, '40px'); x.fillText(ch, 4, 48);
    return c.toDataURL(); };
  const tofu = draw('\\ue000');
  const pictures = syllables.map(draw);
  base.korean = {texts: texts.map(e => e.innerText), font, syllables: syllables.length,
                 distinct: new Set(pictures).size, like_tofu: pictures.filter(p => p === tofu).length,
                 width: texts.length ? texts[0].getBoundingClientRect().width : 0};
  base.charts = document.querySelectorAll('svg.chart circle.pt').length;
  return JSON.stringify(base);
})()"""


@pytest.mark.slow
def test_sweep_report_renders_in_headless_chromium(tmp_path, monkeypatch):
    import test_report

    sweep = make_sweep(tmp_path)
    html, _ = sweep_report.write(sweep)
    page = html.read_text(encoding="utf-8")
    assert "<script" not in page and "http://" not in page and "https://" not in page
    monkeypatch.setattr(test_report, "PROBE", KOREAN_PROBE.replace("BASE_PROBE", test_report.PROBE))
    shot = tmp_path / "sweep-report.png"
    seen = test_report.open_in_chromium(html, shot)
    print(f"\nscreenshot: {shot}")
    assert seen["problems"] == [], seen["problems"]
    assert seen["title"].startswith("evalkit sweep: ko-mini")
    # One player per listened utterance and checkpoint, each reading its own clip inside the sweep folder.
    assert seen["utterances"] == 4 and len(seen["audio"]) == seen["utterances"] * len(STEPS)
    for src, ready, error in seen["audio"]:
        path = (sweep / unquote(src)).resolve()
        assert path.is_relative_to(sweep.resolve()) and path.is_file(), src
        assert ready >= 1 and error is None, (src, ready, error)  # the browser read its header
    assert seen["plots"] == 4 and seen["charts"] == 4 * len(STEPS)
    korean = seen["korean"]
    assert korean["texts"] == ["같이 갈래요?", "2024년 5월 1일에 만나요.", "국물이 맛있어요.", "사과 3개 주세요."]
    assert korean["syllables"] >= 10
    assert korean["distinct"] == korean["syllables"] and korean["like_tofu"] == 0, korean  # no tofu
    assert korean["width"] > 0
    assert shot.stat().st_size > 20_000
