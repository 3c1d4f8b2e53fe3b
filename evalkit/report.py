"""A comparison as files a person reads: OUT/index.html, OUT/summary.md, OUT/comparison.json.

index.html is self-contained: inline CSS, plots as inline SVG images, no scripts and no network
resources; the only files it points at are the wav files copied into OUT/audio/{candidate,
baseline,reference}/, by relative path, so the folder can be zipped, uploaded as a CI artifact or
logged to MLflow and still play. summary.md is the same verdict for a CI comment or job summary.

Data and markup are apart: `view` turns the runs, the comparison and the verdict into a view model
of already formatted strings (frozen dataclasses; the only code here that reads a run's summary or
rows), and Jinja2 templates in reports/templates/ (`template_dir`) lay it out. Every run-provided
string is escaped: the HTML environment autoescapes and no template marks a value safe; the Markdown
environment escapes every value with `md` unless the template marks it `verbatim` (only the
report's own numbers and intervals are).

Metrics declare their display columns in the run record (RunRecord.metrics[NAME]): `alignments`,
the per-utterance text columns holding an inline edit alignment ([a→b], [-a], [+b]), shown for the
metrics compared; `headline`, the key that ranks the worst utterances unless --worst-by names one.
Run folders from before these fields show no alignment column and rank by the first headline found,
else by the first key that got worse.

Only audio that belongs to the runs is copied (and so uploaded with the report): each run's own
clips (LoadedRun.audio_path: regular files inside its audio folder, symlinks resolved), and
reference audio only when it provably is what the candidate was scored against
(runs.reference_paths checks the recorded reference digest); otherwise no reference players, with
a note. Local absolute paths of gates files are not shown (gates.display_path).

Per suite tag (compare.TagDelta), a section lists each tag's delta with its Bonferroni-corrected
interval and the sentence stating the correction (`correction_text`). To stay readable on a suite
with twenty tags and a dozen keys it shows every tag for the headline keys the runs' metrics declare,
and for any other key only the tags that moved (worse, better, changed) or that a gate names
(`tag_rows`); comparison.json holds every (tag, key).

Keys without a direction (higher_is_better None, e.g. duration_ratio) show "↕" where other keys
show ↑ or ↓, the status "changed" or "same", and rank "most changed" utterances by the size of
their change, never as lower-is-better. Δ % is shown only where a percentage means something
(compare.relative_change: not for a baseline mean near zero), else "–".
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import math
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, record
from .compare import CONFIDENCE, Comparison, Incomparable, MetricDelta, TagDelta
from .errors import EvalkitError, first_line
from .gates import MetricVerdict, Verdict, level
from .runs import LoadedRun
from .types import Row

WORST = 10
FILES = ("index.html", "summary.md", "comparison.json", "audio")
# Emoji for CI comments (GitHub renders them); plain symbols in HTML, which common fonts carry.
_MARK = {"pass": "✅ pass", "regressed": "❌ regressed", "incomparable": "⚠️ incomparable"}
_SYMBOL = {"pass": "✓ pass", "regressed": "✗ regressed", "incomparable": "⚠ incomparable"}
_EDIT = re.compile(r"\[([^\[\]→]*)→([^\[\]]*)\]|\[-([^\[\]]*)\]|\[\+([^\[\]]*)\]")
# Every file the templates use: all must be there before anything is written.
TEMPLATES = ("report.html.j2", "_macros.html.j2", "report.css", "summary.md.j2")
# Installed: the package evalkit_reports (reports/templates/ in the source tree, as package data).
_TEMPLATE_PACKAGE = "evalkit_reports"


def arrow(higher_is_better: bool | None) -> str:
    """↑ higher is better, ↓ lower is better, ↕ no direction."""
    return "↕" if higher_is_better is None else "↑" if higher_is_better else "↓"


def pct(m: MetricDelta, digits: int = 3) -> str:
    """Δ % of the baseline mean, or "–" when the baseline is too near zero (compare.relative_change)."""
    r = m.rel_delta
    return fmt(100 * r, True, digits) + " %" if math.isfinite(r) else fmt(None)


def _worst_title(m: MetricDelta) -> str:
    return "Most changed utterances" if m.higher_is_better is None else "Worst-regressed utterances"


def worst_metric(result: Comparison, worst_by: str | None) -> MetricDelta | None:
    """The key that ranks utterances: `worst_by` when compared, else the first that got worse."""
    by_key = {m.key: m for m in result.metrics}
    return (by_key.get(worst_by) if worst_by is not None else None) or next(
        (m for m in result.metrics if m.direction == "worse"), None)


def worst_utterances(m: MetricDelta | None, k: int = WORST) -> list[tuple[str, float, float]]:
    """The k utterances that got most worse on m; for a key without a direction, the k that changed
    most either way."""
    if m is None:
        return []
    if m.higher_is_better is None:
        ranked = sorted(m.pairs, key=lambda p: -abs(p[1] - p[2]))
        return [p for p in ranked if p[1] != p[2]][:k]
    sign = -1.0 if m.higher_is_better else 1.0
    ranked = sorted(m.pairs, key=lambda p: -sign * (p[1] - p[2]))
    return [p for p in ranked if sign * (p[1] - p[2]) > 0][:k]


def write(out_dir: Path, candidate: LoadedRun, baseline: LoadedRun, result: Comparison | Incomparable,
          verdict: Verdict, worst_by: str | None = None, *, templates: Path | None = None) -> Path:
    """Writes the report into out_dir. `worst_by` None: the candidate's first declared headline
    that was compared (`view`). `templates`: a template folder other than `template_dir()`'s."""
    env = Templates(templates or template_dir())  # missing templates fail before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)
    foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in FILES)
    if foreign:  # the folder is rewritten: never one that holds anything but an earlier report
        raise EvalkitError(f"{out_dir} holds other files ({', '.join(foreign[:3])}); choose an empty --out")
    shutil.rmtree(out_dir / "audio", ignore_errors=True)  # no stale clips from an earlier report
    model = view(out_dir, candidate, baseline, result, verdict, worst_by)
    (out_dir / "summary.md").write_text(env.render("summary.md.j2", report=model), encoding="utf-8")
    (out_dir / "index.html").write_text(env.render("report.html.j2", report=model), encoding="utf-8")
    doc = record.jsonable(_as_json(model, result, verdict))
    (out_dir / "comparison.json").write_text(json.dumps(doc, ensure_ascii=False, indent=2), encoding="utf-8")
    return out_dir / "index.html"


def fmt(v: float | None, signed: bool = False, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:+.{digits}g}" if signed else f"{v:.{digits}g}"


def ci_text(m: MetricDelta, digits: int = 4) -> str:
    return f"[{fmt(m.ci_low, True, digits)}, {fmt(m.ci_high, True, digits)}]"


def metric_status(verdict: Verdict, m: MetricDelta) -> str:
    return _status(verdict.metrics.get(m.key), m)


def tag_status(verdict: Verdict, t: TagDelta) -> str:
    return _status(verdict.tags.get((t.tag, t.key)), t.stats)


def _status(v: MetricVerdict | None, m: MetricDelta) -> str:
    if v is not None and v.regressed:
        return "regressed"
    if m.direction == "worse" and v is not None and v.gate is not None:
        return "worse, within gate"
    return m.direction


def _gate(v: MetricVerdict | None, m: MetricDelta) -> str:
    if m.higher_is_better is None:
        return "none (no direction)"
    return "none" if v is None or v.gate is None else f"≤ {fmt(v.allowed)} worse"


def headlines(*runs: LoadedRun) -> tuple[str, ...]:
    """The headline keys the runs' metrics declare, the first run's first."""
    return tuple(dict.fromkeys(d.headline for run in runs for d in _facts(run).metrics if d.headline is not None))


def tag_rows(result: Comparison, headline_keys: Sequence[str], verdict: Verdict | None = None) -> list[TagDelta]:
    """The per-tag deltas a table shows: every tag of a headline key (of the first compared key with
    a direction when no headline was compared), and of other keys the tags that moved or are gated."""
    compared = [m.key for m in result.metrics]
    shown = {k for k in headline_keys if k in compared} or {
        next((m.key for m in result.metrics if m.higher_is_better is not None), compared[0] if compared else "")}
    gated = verdict.tags if verdict is not None else {}
    return [t for t in result.tags if t.key in shown or t.stats.direction != "same"
            or ((t.tag, t.key) in gated and gated[(t.tag, t.key)].gate is not None)]


def correction_text(tags: Sequence[TagDelta]) -> str:
    """The sentence a report states about its per-tag intervals (compare.tag_confidence)."""
    if not tags:
        return ""
    alpha = f"{1 - CONFIDENCE:g}"
    keys: dict[tuple[int, float], list[str]] = {}
    for t in tags:
        at = keys.setdefault((t.tags_compared, t.confidence), [])
        if t.key not in at:
            at.append(t.key)
    outcome = " A tag's direction is decided by that interval alone."
    if len(keys) == 1:
        ((m, conf),) = keys
        return (f"Per-tag intervals are Bonferroni-corrected across the {m} tag{'s' if m != 1 else ''}: each is a "
                f"1-{alpha}/{m} interval ({level(conf)}).{outcome}")
    parts = "; ".join(f"{', '.join(k)}: across {m} tag{'s' if m != 1 else ''}, each a 1-{alpha}/{m} interval "
                      f"({level(conf)})" for (m, conf), k in keys.items())
    return f"Per-tag intervals are Bonferroni-corrected across the tags each key was compared on ({parts}).{outcome}"


def _direction_words(higher_is_better: bool | None) -> str:
    if higher_is_better is None:
        return "no direction: neither way is better"
    return "higher is better" if higher_is_better else "lower is better"


# The view model: what the templates see, every value a formatted string (or a number, a flag).

@dataclass(frozen=True)
class RunView:
    label: str
    source: str
    run_id: str | None  # summary.json's run_id (comparison.json only)
    mlflow_run_id: str | None


@dataclass(frozen=True)
class SuiteView:
    name: str
    version: str
    language: str


@dataclass(frozen=True)
class MetricRow:
    key: str
    arrow: str  # ↑ ↓ ↕
    direction_words: str
    css_class: str  # the status's first word: regressed, worse, better, same, changed
    baseline: str
    candidate: str
    delta: str
    delta_pct: str
    ci: str
    p: str
    gate: str
    status: str


@dataclass(frozen=True)
class TagRow:
    tag: str
    key: str
    arrow: str
    direction_words: str
    css_class: str
    n: int
    baseline: str
    candidate: str
    delta: str
    ci: str  # at the Bonferroni-corrected level the section's sentence states
    gate: str
    status: str


@dataclass(frozen=True)
class TagSection:
    correction: str  # the sentence stating the multiple-comparison correction
    rows: tuple[TagRow, ...]
    left_out: int  # (tag, key) deltas not shown here (unmoved, ungated, not a headline): in comparison.json


@dataclass(frozen=True)
class Edit:
    """A piece of an inline alignment: kind "same" (text as is), "sub" (text → new), "del", "ins"."""

    kind: str
    text: str
    new: str = ""


@dataclass(frozen=True)
class Take:
    """One run's side of an utterance: kind candidate or baseline."""

    kind: str
    transcript: str
    alignments: tuple[tuple[Edit, ...], ...]  # one per ComparisonView.alignment_columns
    audio: str | None  # relative to the report folder


@dataclass(frozen=True)
class Utterance:
    uid: str
    head: str  # beside the id: the change that ranked it, or why it failed
    change: str  # "b → c (Δ)" for the Markdown table ("" for a new failure)
    text: str
    candidate: Take
    baseline: Take
    reference_audio: str | None

    @property
    def takes(self) -> tuple[Take, Take]:
        return self.candidate, self.baseline


@dataclass(frozen=True)
class Ranking:
    title: str  # Worst-regressed utterances / Most changed utterances
    key: str
    empty: str | None  # the sentence shown when no utterance got worse (or changed)
    utterances: tuple[Utterance, ...]


@dataclass(frozen=True)
class Plot:
    key: str
    uri: str  # data:image/svg+xml;base64,...


@dataclass(frozen=True)
class ComparisonView:
    paired: int
    metrics: tuple[MetricRow, ...]
    notes: tuple[str, ...]
    pct_left_out: bool  # some Δ % shown as "–"
    reference_note: str | None
    alignment_columns: tuple[str, ...]
    new_failures: tuple[Utterance, ...]
    ranking: Ranking | None
    plots: tuple[Plot, ...]
    identical: tuple[str, ...]  # keys equal on every utterance (no plot)
    resamples: int
    seed: int
    by_tag: TagSection | None = None  # None: no tag was compared


@dataclass(frozen=True)
class ReportView:
    status: str  # pass, regressed, incomparable
    symbol: str  # for HTML
    mark: str  # for Markdown (emoji)
    candidate: RunView
    baseline: RunView
    suite: SuiteView  # the candidate's
    lang: str  # <html lang>
    reasons: tuple[str, ...]
    gates_source: str
    version: str
    comparison: ComparisonView | None  # None: incomparable


@dataclass(frozen=True)
class _Declared:
    """What one metric declared for display."""

    name: str
    alignments: tuple[str, ...]
    headline: str | None


@dataclass(frozen=True)
class _Facts:
    """What the report reads from one run."""

    run: RunView
    suite: SuiteView
    lang: str
    rows: Mapping[str, Row]  # by utterance id
    metrics: tuple[_Declared, ...]


def _facts(run: LoadedRun) -> _Facts:
    """Everything the report reads from a run's summary and rows (with _references, the only
    places that know the run record's shape). Declarations of older runs may be missing or
    malformed: they count as none."""
    s = run.summary
    declared = tuple(_Declared(name, m.alignments, m.headline) for name, m in s.metrics.items())
    return _Facts(RunView(run.label, run.source, s.run_id, run.mlflow_run_id),
                  SuiteView(s.suite.name, s.suite.version, s.suite.language),
                  s.suite.language or "en", {r.utterance_id: r for r in run.rows}, declared)


def _references(run: LoadedRun) -> tuple[dict[str, Path], str | None]:
    """The candidate's reference clips, and a note when it names references that are not played."""
    from .runs import reference_paths

    try:
        refs = reference_paths(run.summary, [r.utterance_id for r in run.rows])
    except Exception:  # listening aids only: a missing or changed suite must not cost the report
        refs = {}
    if refs or run.summary.reference.kind == "none":
        return refs, None
    return refs, ("Reference audio is not played: it could not be verified as the audio the candidate "
                  "was scored against (its reference digest does not match, or it is gone).")


def _display_columns(result: Comparison, candidate: _Facts, baseline: _Facts) -> tuple[tuple[str, ...], str | None]:
    """The alignment columns of the metrics compared (the candidate's declarations first) and the
    first declared headline that was compared (the candidate's, else the baseline's)."""
    metrics, keys = {m.metric for m in result.metrics}, {m.key for m in result.metrics}
    columns: list[str] = []
    headline = None
    for d in (*candidate.metrics, *baseline.metrics):
        if d.name not in metrics:
            continue
        columns += [a for a in d.alignments if a not in columns]
        if headline is None and d.headline in keys:
            headline = d.headline
    return tuple(columns), headline


def edits(s) -> tuple[Edit, ...]:
    """An inline edit alignment ([a→b], [-a], [+b]) as pieces; anything but a string is empty."""
    if not isinstance(s, str) or not s:
        return ()
    out, pos = [], 0
    for hit in _EDIT.finditer(s):
        if hit.start() > pos:
            out.append(Edit("same", s[pos:hit.start()]))
        sub_a, sub_b, dele, ins = hit.groups()
        if dele is not None:
            out.append(Edit("del", dele))
        elif ins is not None:
            out.append(Edit("ins", ins))
        else:
            out.append(Edit("sub", sub_a, sub_b))
        pos = hit.end()
    if pos < len(s):
        out.append(Edit("same", s[pos:]))
    return tuple(out)


def _text(v) -> str:
    return "" if v is None else str(v)


def view(out_dir: Path, candidate: LoadedRun, baseline: LoadedRun, result: Comparison | Incomparable,
         verdict: Verdict, worst_by: str | None = None) -> ReportView:
    """The view model of a report; copies the clips it plays into out_dir/audio/."""
    cand, base = _facts(candidate), _facts(baseline)
    comparison = None
    if isinstance(result, Comparison):
        columns, headline = _display_columns(result, cand, base)
        refs, ref_note = _references(candidate)

        def utterance(uid: str, head: str, change: str = "") -> Utterance:
            c, b = cand.rows.get(uid) or Row(uid, "", ()), base.rows.get(uid) or Row(uid, "", ())
            players = {kind: _copy_audio(out_dir, src, kind, uid) for kind, src in
                       (("candidate", candidate.audio_path(c)), ("baseline", baseline.audio_path(b)),
                        ("reference", refs.get(uid)))}
            take = {kind: Take(kind, _text(row.texts.get("transcript", "")),
                               tuple(edits(row.texts.get(a)) for a in columns), players[kind])
                    for kind, row in (("candidate", c), ("baseline", b))}
            return Utterance(uid, head, change, _text(c.text), take["candidate"], take["baseline"],
                             players["reference"])

        ranking = None
        m = worst_metric(result, worst_by or headline)
        if m is not None:
            worst = worst_utterances(m)
            moved = "changed" if m.higher_is_better is None else "got worse"
            ranking = Ranking(_worst_title(m), m.key, None if worst else f"No utterance {moved} on {m.key}.",
                              tuple(utterance(uid, f"{m.key} {_change(c, b)}", _change(c, b)) for uid, c, b in worst))
        changed = [d for d in result.metrics if any(c != b for _, c, b in d.pairs)]
        comparison = ComparisonView(
            paired=result.paired,
            metrics=tuple(_metric_row(verdict, d) for d in result.metrics),
            notes=tuple(verdict.notes),
            pct_left_out=any(not math.isfinite(d.rel_delta) for d in result.metrics),
            reference_note=ref_note,
            alignment_columns=columns,
            new_failures=tuple(utterance(f.utterance_id, _text(f.reason)) for f in result.new_failures),
            ranking=ranking,
            plots=tuple(Plot(d.key, _plot(d)) for d in changed),
            identical=tuple(d.key for d in result.metrics if d not in changed),
            resamples=result.resamples, seed=result.seed,
            by_tag=_tag_section(result, verdict, candidate, baseline))
    return ReportView(status=verdict.status, symbol=_SYMBOL[verdict.status], mark=_MARK[verdict.status],
                      candidate=cand.run, baseline=base.run, suite=cand.suite, lang=cand.lang,
                      reasons=tuple(verdict.reasons), gates_source=_text(verdict.gates_source),
                      version=__version__, comparison=comparison)


def _change(c: float, b: float) -> str:
    return f"{fmt(b)} → {fmt(c)} ({fmt(c - b, True)})"


def _metric_row(verdict: Verdict, d: MetricDelta) -> MetricRow:
    st = metric_status(verdict, d)
    return MetricRow(key=d.key, arrow=arrow(d.higher_is_better), direction_words=_direction_words(d.higher_is_better),
                     css_class=st.split(",")[0], baseline=fmt(d.baseline_mean), candidate=fmt(d.candidate_mean),
                     delta=fmt(d.delta, True), delta_pct=pct(d), ci=ci_text(d), p=fmt(d.p_value),
                     gate=_gate(verdict.metrics.get(d.key), d), status=st)


def _tag_section(result: Comparison, verdict: Verdict, candidate: LoadedRun,
                 baseline: LoadedRun) -> TagSection | None:
    if not result.tags:
        return None
    shown = tag_rows(result, headlines(candidate, baseline), verdict)
    rows = []
    for t in shown:
        d, st = t.stats, tag_status(verdict, t)
        rows.append(TagRow(tag=t.tag, key=d.key, arrow=arrow(d.higher_is_better),
                           direction_words=_direction_words(d.higher_is_better), css_class=st.split(",")[0], n=d.n,
                           baseline=fmt(d.baseline_mean), candidate=fmt(d.candidate_mean), delta=fmt(d.delta, True),
                           ci=ci_text(d), gate=_gate(verdict.tags.get((t.tag, t.key)), d), status=st))
    return TagSection(correction_text(result.tags), tuple(rows), len(result.tags) - len(shown))


# Templates.

def template_dir() -> Path:
    """The folder of the report templates: the installed package data (evalkit_reports), else
    reports/templates/ of the source tree this module sits in (an editable install). One line of
    EvalkitError when neither holds them all."""
    places: list[Path] = []
    try:
        spec = importlib.util.find_spec(_TEMPLATE_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        places += [Path(p) for p in (spec.submodule_search_locations or ())]
    places.append(Path(__file__).resolve().parent.parent / "reports" / "templates")
    for place in places:
        if all((place / name).is_file() for name in TEMPLATES):
            return place
    looked = []
    for place in dict.fromkeys(places):
        missing = [name for name in TEMPLATES if not (place / name).is_file()]
        looked.append(f"{place} (no {', '.join(missing)})" if place.is_dir() else str(place))
    raise EvalkitError(f"report templates are missing (looked in {' and '.join(looked)}): reinstall evalkit")


class _Verbatim(str):
    """A string the Markdown template prints as it is (a number or interval the report formatted)."""


def md(s) -> str:
    """Plain text inside a Markdown table cell: no markup, no broken columns."""
    if isinstance(s, _Verbatim):
        return s
    s = " ".join(str(s).split())
    return _Verbatim(re.sub(r"([\\`*_\[\]<>|#~])", r"\\\1", s))


class Templates:
    """The two Jinja2 environments over one template folder: HTML autoescaped, Markdown escaped by
    `md` unless marked `verbatim`; both with StrictUndefined (a misspelt field fails loudly). The
    comparison report and the sweep report (evalkit.sweep_report) share them; `what` names the
    report in error lines, and a missing template of `names` fails before anything is written."""

    def __init__(self, folder: Path, names: tuple[str, ...] = TEMPLATES, what: str = "report"):
        try:
            import jinja2
        except ImportError:
            raise EvalkitError(f"evalkit {what} needs Jinja2: pip install 'jinja2>=3.1'") from None
        missing = [name for name in names if not (folder / name).is_file()]
        if missing:
            raise EvalkitError(f"{what} templates are missing in {folder}: {', '.join(missing)}; reinstall evalkit")
        loader = jinja2.FileSystemLoader(str(folder))

        def environment(autoescape: bool, finalize=None) -> jinja2.Environment:
            return jinja2.Environment(loader=loader, autoescape=autoescape, finalize=finalize,
                                      undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                                      keep_trailing_newline=True, auto_reload=False)

        self.html = environment(autoescape=True)
        self.md = environment(autoescape=False, finalize=md)
        self.md.filters["md"] = md
        self.md.filters["verbatim"] = lambda s: _Verbatim(s)
        self.folder, self.what = folder, what

    def render(self, name: str, **context: Any) -> str:
        import jinja2

        env = self.md if name.endswith(".md.j2") else self.html
        try:
            return env.get_template(name).render(**context)
        except jinja2.TemplateNotFound as exc:
            raise EvalkitError(f"{self.what} template {exc.name} is missing in {self.folder}") from None
        except jinja2.TemplateError as exc:
            line = getattr(exc, "lineno", None)
            where = f"{name}:{line}" if line else name
            raise EvalkitError(f"{self.what} template {where} in {self.folder} failed: {first_line(exc)}") from None


# Files beside the page: audio clips and plots.

def _copy_audio(out_dir: Path, src: Path | None, kind: str, uid: str) -> str | None:
    """Copies a clip that the callers vetted (audio_path, reference_paths); only a regular file,
    read at its resolved place (never a device or a pipe that a link points at)."""
    if src is None:
        return None
    try:
        src = Path(src).resolve()
    except (OSError, RuntimeError):
        return None
    if not src.is_file():
        return None
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", uid).lstrip(".") or "utterance"
    rel = Path("audio") / kind / f"{safe}{Path(src).suffix.lower() or '.wav'}"
    (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, out_dir / rel)
    return rel.as_posix()


def _plot(m: MetricDelta) -> str:
    """Distribution (candidate vs baseline) and sorted per-utterance deltas, as an SVG data URI."""
    import matplotlib
    from matplotlib.figure import Figure

    c = np.array([p[1] for p in m.pairs])
    b = np.array([p[2] for p in m.pairs])
    d = c - b
    # Positive = worse; for a key without a direction, the size of the change (no side is worse).
    worse = np.abs(d) if m.higher_is_better is None else -d if m.higher_is_better else d
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "evalkit", "font.size": 8}):
        fig = Figure(figsize=(8.0, 2.1), layout="constrained")
        ax1, ax2 = fig.subplots(1, 2)
        ax1.boxplot([b, c], orientation="horizontal", tick_labels=["baseline", "candidate"], widths=0.5,
                    showfliers=False)
        jitter = np.random.default_rng(0).uniform(-0.15, 0.15, size=(2, len(d)))
        ax1.scatter(b, 1 + jitter[0], s=9, color="#777", alpha=0.7, zorder=3)
        ax1.scatter(c, 2 + jitter[1], s=9, color="#c0392b" if m.direction == "worse" else "#2471a3", alpha=0.7,
                    zorder=3)
        ax1.set_title(f"{m.key} ({_direction_words(m.higher_is_better)})")
        order = np.argsort(-worse, kind="stable")
        if m.higher_is_better is None:  # neither side is worse: one neutral colour
            colors = ["#2471a3" if w > 0 else "#999" for w in worse[order]]
        else:
            colors = ["#c0392b" if w > 0 else "#27ae60" if w < 0 else "#999" for w in worse[order]]
        ax2.bar(np.arange(len(d)), d[order], color=colors, width=0.8)
        ax2.axhline(0, color="#333", linewidth=0.6)
        if math.isfinite(m.ci_low):
            ax2.axhspan(m.ci_low, m.ci_high, color="#f39c12", alpha=0.25, linewidth=0, zorder=0)
        ax2.set_xticks([])
        first = "most changed" if m.higher_is_better is None else "most worsened"
        ax2.set_xlabel(f"{len(d)} utterances, {first} first; band: 95% CI of the mean")
        ax2.set_title("Δ per utterance (candidate − baseline)")
        buf = io.BytesIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _as_json(model: ReportView, result: Comparison | Incomparable, verdict: Verdict) -> dict:
    out: dict[str, Any] = {
        "verdict": verdict.status, "reasons": list(verdict.reasons), "notes": list(verdict.notes),
        "gates": verdict.gates_source,
        "candidate": {"source": model.candidate.source, "mlflow_run_id": model.candidate.mlflow_run_id,
                      "run_id": model.candidate.run_id},
        "baseline": {"source": model.baseline.source, "mlflow_run_id": model.baseline.mlflow_run_id,
                     "run_id": model.baseline.run_id}}
    if isinstance(result, Comparison):
        out["paired"] = result.paired
        # delta_pct: 100 * delta / |baseline|, null where the report shows no Δ % (baseline near zero).
        # higher_is_better: null for a key without a direction.
        out["metrics"] = [{"key": d.key, "higher_is_better": d.higher_is_better, "n": d.n,
                           "baseline": d.baseline_mean, "candidate": d.candidate_mean, "delta": d.delta,
                           "delta_pct": 100 * d.rel_delta,
                           "ci95": [d.ci_low, d.ci_high], "p": d.p_value,
                           "direction": d.direction, "status": metric_status(verdict, d)} for d in result.metrics]
        out["new_failures"] = [{"id": f.utterance_id, "reason": f.reason} for f in result.new_failures]
        # Every (tag, key), shown in the report or not; ci at `confidence`, Bonferroni across `tags_compared` tags.
        out["by_tag"] = {
            "correction": "bonferroni", "family_confidence": CONFIDENCE,
            "statement": correction_text(result.tags),
            "deltas": [{"tag": t.tag, "key": t.key, "higher_is_better": t.stats.higher_is_better, "n": t.stats.n,
                        "baseline": t.stats.baseline_mean, "candidate": t.stats.candidate_mean,
                        "delta": t.stats.delta, "ci": [t.stats.ci_low, t.stats.ci_high], "confidence": t.confidence,
                        "tags_compared": t.tags_compared, "resamples": t.resamples,
                        "direction": t.stats.direction,
                        "status": tag_status(verdict, t)} for t in result.tags]}
    return out
