"""The report of a checkpoint sweep (`evalkit sweep`): SWEEP/report.html and SWEEP/report.md.

For each suite of the sweep, over its evaluated checkpoints in training-step order:
- each key metric (the headlines the runs' metrics declare, then the usual directed keys that are
  present: cer, wer, dnsmos_ovrl, mel_dtw, ...) as the per-checkpoint mean with its 95% percentile
  bootstrap CI over utterances (compare.bootstrap_ci: RESAMPLES resamples, seed SEED, so the same
  sweep always gives the same report), drawn as an inline SVG line chart with a CI band and
  whiskers, and as a table;
- the best checkpoint per key, by the direction the runs recorded (RunRecord.metrics[name].
  higher_is_better; a key without one, or one the runs disagree on, has no best), with the other
  checkpoints whose mean lies inside the best one's CI: the best is not clearly better than those;
- a tags x checkpoints heatmap of mean CER (each tag over its own utterances: the run's by_tag
  aggregates, else computed from its rows), an HTML table with inline background colours and a
  plain table in the Markdown;
- listening: the same few utterances (those whose CER changed most between the first and the last
  checkpoint, then the first ids) with a player, transcript and CER per checkpoint, so a person
  hears one sentence evolve over training;
- the checkpoints that failed or were skipped, with their reason, and run folders that could not
  be read;
- notes where checkpoints are not comparable (compare.incomparability against the first one).

SWEEP/sweep.json is untrusted input (evalkit.untrusted's rules): every field is type-checked, and a
run_dir must be a relative path without '..' that resolves (symlinks included) inside SWEEP; anything
else is one line of EvalkitError. A run folder that is missing or unreadable does not cost the report:
its checkpoint is listed as unreadable.

The HTML is self-contained like `evalkit report`'s (inline CSS and SVG, no scripts, no network); the
only files it points at are wav clips by relative path. Written into SWEEP (the default) it links the
clips inside the run folders, so the sweep folder plays wherever it is moved or unzipped; written
elsewhere it copies them into OUT/audio/. Every run-provided string is escaped (Jinja2 autoescape for
the HTML, report.md for the Markdown); the templates mark nothing safe.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from . import __version__, record
from .compare import RESAMPLES, SEED, bootstrap_ci, incomparability
from .errors import EvalkitError, first_line
from .report import Edit, Templates, arrow, edits, fmt, template_dir
from .types import Row
from .untrusted import inside

SWEEP_FILE = "sweep.json"
FORMAT = 1
REPORT_HTML = "report.html"
REPORT_MD = "report.md"
FILES = (REPORT_HTML, REPORT_MD, "audio")  # what a report folder other than SWEEP may already hold
TEMPLATES = ("sweep.html.j2", "sweep.md.j2", "_macros.html.j2", "report.css")
STATUSES = ("done", "failed", "skipped")
LISTEN = 4  # utterances to listen to per suite
HEAT_KEY = "cer"
# Directed keys worth a curve when present, after the declared headlines.
KEY_METRICS = ("cer", "wer", "dnsmos_ovrl", "pesq_wb", "stoi", "mel_dtw", "mcd", "f0_corr", "f0_rmse_cents",
               "spk_sim")
MAX_SWEEP_BYTES = 16 << 20  # a sweep.json of thousands of checkpoints is a few MB
CHART_W, CHART_H = 560, 220
_MARGIN = (58, 18, 16, 38)  # left, right, top, bottom
# Heatmap colours: good, middle, bad (the report's pass green, a pale amber, its regression red).
_GOOD, _MID, _BAD, _NEUTRAL = (0xD5, 0xF0, 0xDD), (0xFD, 0xEB, 0xC8), (0xF5, 0xB7, 0xB1), (0xD6, 0xE6, 0xF5)


# sweep.json, validated.

@dataclass(frozen=True)
class Checkpoint:
    """One entry of sweep.json; `folder` is run_dir resolved inside the sweep folder."""

    model: str
    step: int
    step_source: str
    suite: str
    status: str  # done | failed | skipped
    reason: str | None
    run_dir: str | None
    mlflow_run_id: str | None
    folder: Path | None


@dataclass(frozen=True)
class Sweep:
    folder: Path
    sweep_id: str
    started_unix: float
    finished_unix: float | None  # None: still running (or killed)
    suites: tuple[str, ...]
    parent_run_id: str | None
    checkpoints: tuple[Checkpoint, ...]  # in evaluation order


def read(sweep_dir: Path) -> Sweep:
    """SWEEP/sweep.json, every field checked and every run_dir resolved inside SWEEP."""
    path = sweep_dir / SWEEP_FILE
    try:
        size = path.stat().st_size
        if size > MAX_SWEEP_BYTES:
            raise EvalkitError(f"{path}: {size} bytes, larger than the {MAX_SWEEP_BYTES}-byte limit for a sweep file")
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvalkitError(f"{sweep_dir}: no {SWEEP_FILE}, not a folder that `evalkit sweep` wrote") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise EvalkitError(f"{path}: not a readable sweep file ({first_line(exc, 200)})") from None
    if not isinstance(doc, dict):
        raise EvalkitError(f"{path}: not a sweep file (a JSON object is expected)")
    if doc.get("format") != FORMAT or isinstance(doc.get("format"), bool):
        raise EvalkitError(f"{path}: format {doc.get('format')!r} is not one this evalkit reads ({FORMAT})")
    where = str(path)
    suites = doc.get("suites")
    if not isinstance(suites, list) or not all(isinstance(s, str) for s in suites):
        raise EvalkitError(f"{where}: suites must be a list of names")
    raw = doc.get("checkpoints")
    if not isinstance(raw, list):
        raise EvalkitError(f"{where}: checkpoints must be a list")
    checkpoints = tuple(_checkpoint(sweep_dir, c, f"{where}: checkpoints[{i}]") for i, c in enumerate(raw))
    seen: dict[tuple[str, int], int] = {}
    for i, c in enumerate(checkpoints):
        if c.status != "done":
            continue
        first = seen.setdefault((c.suite, c.step), i)
        if first != i:  # a curve over steps needs one value per step
            raise EvalkitError(f"{where}: checkpoints[{first}] and [{i}] both evaluated step {c.step} "
                               f"on suite {c.suite!r}")
    finished = _number(doc, "finished_unix", where, optional=True)
    return Sweep(sweep_dir, _string(doc, "sweep_id", where), _number(doc, "started_unix", where) or 0.0,
                 finished, tuple(suites), _string(doc, "parent_run_id", where, optional=True), checkpoints)


def _checkpoint(sweep_dir: Path, c: Any, where: str) -> Checkpoint:
    if not isinstance(c, dict):
        raise EvalkitError(f"{where}: not an object")
    step = c.get("step")
    if not isinstance(step, int) or isinstance(step, bool):
        raise EvalkitError(f"{where}: step must be an integer, got {step!r}")
    status = _string(c, "status", where)
    if status not in STATUSES:
        raise EvalkitError(f"{where}: status must be one of {', '.join(STATUSES)}, got {status!r}")
    run_dir = _string(c, "run_dir", where, optional=True)
    folder = None
    if run_dir is not None:
        if not run_dir or ".." in Path(run_dir).parts:
            raise EvalkitError(f"{where}: run_dir {run_dir!r} must name a folder inside {sweep_dir} without '..'")
        try:
            folder = inside(sweep_dir, run_dir, f"{where}: run_dir")
        except (OSError, RuntimeError) as exc:  # a symlink loop
            raise EvalkitError(f"{where}: run_dir {run_dir!r} does not resolve ({first_line(exc)})") from None
    elif status == "done":
        raise EvalkitError(f"{where}: status done without a run_dir")
    return Checkpoint(_string(c, "model", where), step, _string(c, "step_source", where, optional=True) or "",
                      _string(c, "suite", where), status, _string(c, "reason", where, optional=True), run_dir,
                      _string(c, "mlflow_run_id", where, optional=True), folder)


def _string(d: dict, key: str, where: str, optional: bool = False) -> Any:
    v = d.get(key)
    if isinstance(v, str) or (optional and v is None):
        return v
    raise EvalkitError(f"{where}: {key} must be a string{' or null' if optional else ''}, got {_short(v)}")


def _number(d: dict, key: str, where: str, optional: bool = False) -> float | None:
    v = d.get(key)
    if optional and v is None:
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    raise EvalkitError(f"{where}: {key} must be a number{' or null' if optional else ''}, got {_short(v)}")


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


# The runs and their numbers.

@dataclass(frozen=True)
class Evaluated:
    """A done checkpoint with its run folder loaded."""

    checkpoint: Checkpoint
    folder: Path
    summary: record.RunRecord
    rows: tuple[Row, ...]

    @property
    def step(self) -> int:
        return self.checkpoint.step


@dataclass(frozen=True)
class Estimate:
    mean: float
    low: float  # 95% percentile bootstrap CI of the mean
    high: float
    n: int  # utterances with a finite value


@dataclass(frozen=True)
class Trajectory:
    """One key over the evaluated checkpoints of a suite, in step order."""

    key: str
    higher_is_better: bool | None
    steps: tuple[int, ...]
    estimates: tuple[Estimate | None, ...]  # None: the checkpoint has no value for the key
    best: int | None  # index of the best checkpoint; None without a direction or values

    def near_best(self) -> list[int]:
        """The other checkpoints whose mean lies inside the best one's CI."""
        if self.best is None:
            return []
        b = self.estimates[self.best]
        assert b is not None
        return [i for i, e in enumerate(self.estimates)
                if i != self.best and e is not None and b.low <= e.mean <= b.high]


def estimate(values: Sequence[float]) -> Estimate | None:
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    if v.size == 0:
        return None
    mean = float(v.mean())
    low, high = bootstrap_ci(v, RESAMPLES, SEED)
    # Resampled means of equal values can differ from the mean in the last bit.
    return Estimate(mean, min(low, mean), max(high, mean), int(v.size))


def load_runs(sweep: Sweep) -> tuple[dict[str, list[Evaluated]], dict[str, list[tuple[Checkpoint, str]]]]:
    """Per suite (sweep order, then any suite only the checkpoints name): the evaluated checkpoints
    in step order, and the others in step order with how they count (failed, skipped, unreadable)."""
    names = list(dict.fromkeys([*sweep.suites, *(c.suite for c in sweep.checkpoints)]))
    done: dict[str, list[Evaluated]] = {s: [] for s in names}
    missed: dict[str, list[tuple[Checkpoint, str]]] = {s: [] for s in names}
    for c in sweep.checkpoints:
        if c.status != "done" or c.folder is None:
            missed[c.suite].append((c, c.status))
            continue
        try:
            summary, rows = record.load(c.folder)
        except EvalkitError as exc:
            missed[c.suite].append((Checkpoint(c.model, c.step, c.step_source, c.suite, c.status,
                                               f"run folder {c.run_dir}: {first_line(exc, 300)}", c.run_dir,
                                               c.mlflow_run_id, c.folder), "unreadable"))
            continue
        done[c.suite].append(Evaluated(c, c.folder, summary, tuple(rows)))
    for s in names:
        done[s].sort(key=lambda e: e.step)
        missed[s].sort(key=lambda m: m[0].step)
    return done, missed


def key_directions(runs: Sequence[Evaluated]) -> dict[str, bool | None]:
    """The key metrics with their direction, in display order: declared headlines first, then
    KEY_METRICS; only keys some row has a finite value for. A direction the runs disagree on is none."""
    seen: dict[str, set[bool | None]] = {}
    for r in runs:
        for key, (_, higher) in r.summary.value_keys().items():
            seen.setdefault(key, set()).add(higher)
    headlines = [m.headline for r in runs for m in r.summary.metrics.values() if m.headline]
    out: dict[str, bool | None] = {}
    for key in dict.fromkeys([*headlines, *KEY_METRICS]):
        if key in seen and any(math.isfinite(row.value(key)) for r in runs for row in r.rows):
            directions = seen[key]
            out[key] = next(iter(directions)) if len(directions) == 1 else None
    return out


def trajectory(runs: Sequence[Evaluated], key: str, higher_is_better: bool | None) -> Trajectory:
    estimates = tuple(estimate([row.value(key) for row in r.rows]) for r in runs)
    best = None
    if higher_is_better is not None:
        sign = 1.0 if higher_is_better else -1.0
        for i, e in enumerate(estimates):
            # Strictly better only: on a tie the earlier checkpoint got there with less training.
            if e is not None and (best is None or sign * e.mean > sign * _mean(estimates[best])):
                best = i
    return Trajectory(key, higher_is_better, tuple(r.step for r in runs), estimates, best)


def _mean(e: Estimate | None) -> float:
    return math.nan if e is None else e.mean


def tag_means(run: Evaluated, key: str) -> dict[str, tuple[float, int]]:
    """tag -> (mean of key over the tag's utterances, utterances): the run's by_tag aggregates when
    it recorded them, else from its rows (an utterance with two tags counts in both)."""
    if run.summary.by_tag:
        return {t: (agg.get(f"{key}/mean", math.nan), int(agg.get("utterances/count", 0) or 0))
                for t, agg in run.summary.by_tag.items()}
    tagged: dict[str, list[Row]] = {}
    for row in run.rows:
        for t in dict.fromkeys(row.tags):
            tagged.setdefault(t, []).append(row)
    out = {}
    for t, rows in tagged.items():
        vals = [v for v in (r.value(key) for r in rows) if math.isfinite(v)]
        out[t] = (float(np.mean(vals)) if vals else math.nan, len(rows))
    return out


def listening_ids(runs: Sequence[Evaluated], key: str | None, k: int = LISTEN) -> list[str]:
    """The utterances to listen to: those whose `key` changed most between the first and the last
    checkpoint (largest change first, ties in suite order), then the first ids in suite order."""
    order = list(dict.fromkeys(row.utterance_id for r in runs for row in r.rows))
    chosen: list[str] = []
    if key is not None and len(runs) > 1:
        first = {row.utterance_id: row.value(key) for row in runs[0].rows}
        last = {row.utterance_id: row.value(key) for row in runs[-1].rows}
        changes = [(abs(last[u] - first[u]), i, u) for i, u in enumerate(order)
                   if u in first and u in last and math.isfinite(first[u]) and math.isfinite(last[u])
                   and last[u] != first[u]]
        chosen = [u for _, _, u in sorted(changes, key=lambda c: (-c[0], c[1]))][:k]
    chosen += [u for u in order if u not in chosen][:k - len(chosen)]
    return chosen


# The view model: what the templates see, every value a formatted string (or a number, a flag).

@dataclass(frozen=True)
class KeyColumn:
    key: str
    arrow: str  # ↑ ↓ ↕
    direction_words: str


@dataclass(frozen=True)
class Cell:
    text: str
    title: str = ""
    style: str = ""  # inline CSS (heatmap colour), written by this module only
    best: bool = False


@dataclass(frozen=True)
class CheckpointRow:
    step: str
    model: str
    step_source: str
    utterances: str
    failures: str
    mlflow_run_id: str
    cells: tuple[Cell, ...]  # one per SuiteSection.columns


@dataclass(frozen=True)
class Tick:
    pos: str
    label: str


@dataclass(frozen=True)
class ChartPoint:
    step: int
    cx: str
    cy: str
    y_low: str  # the CI whisker's ends
    y_high: str
    tip: str
    best: bool


@dataclass(frozen=True)
class Chart:
    key: str
    arrow: str
    direction_words: str
    caption: str
    width: int
    height: int
    left: str
    right: str
    top: str
    bottom: str
    x_label_y: str
    y_label_x: str
    points: tuple[ChartPoint, ...]  # step order
    line: str  # polyline points
    band: str  # polygon points of the CI band ("" under two points)
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]


@dataclass(frozen=True)
class BestRow:
    key: str
    arrow: str
    direction_words: str
    step: str
    model: str
    value: str
    near: str  # checkpoints not clearly worse


@dataclass(frozen=True)
class HeatRow:
    tag: str
    utterances: str
    cells: tuple[Cell, ...]  # one per Heatmap.steps
    whole: bool  # the row over all utterances


@dataclass(frozen=True)
class Heatmap:
    key: str
    arrow: str
    steps: tuple[str, ...]
    rows: tuple[HeatRow, ...]
    legend: str


@dataclass(frozen=True)
class Take:
    step: str
    transcript: str
    alignment: tuple[Edit, ...]
    value: str
    audio: str | None  # relative to the report
    failure: str


@dataclass(frozen=True)
class Listen:
    uid: str
    text: str
    tags: str
    head: str
    takes: tuple[Take, ...]


@dataclass(frozen=True)
class Missed:
    step: str
    model: str
    status: str  # failed | skipped | unreadable
    reason: str


@dataclass(frozen=True)
class SuiteSection:
    name: str
    version: str
    language: str
    lang: str
    evaluated: int
    notes: tuple[str, ...]
    columns: tuple[KeyColumn, ...]
    rows: tuple[CheckpointRow, ...]
    charts: tuple[Chart, ...]
    best: tuple[BestRow, ...]
    heatmap: Heatmap | None
    listen_key: str
    alignment: bool  # the takes carry an ASR error alignment
    listening: tuple[Listen, ...]
    missed: tuple[Missed, ...]


@dataclass(frozen=True)
class SweepView:
    sweep_id: str
    suite_names: str
    started: str
    finished: str  # "" while the sweep has no finish time
    parent_run_id: str
    lang: str
    suites: tuple[SuiteSection, ...]
    checkpoints: int
    version: str
    resamples: int
    seed: int


def _direction_words(higher_is_better: bool | None) -> str:
    if higher_is_better is None:
        return "no direction: neither way is better"
    return "higher is better" if higher_is_better else "lower is better"


def _when(unix: float | None) -> str:
    if unix is None:
        return ""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _interval(e: Estimate) -> str:
    return f"{fmt(e.mean)} ({fmt(e.low)}–{fmt(e.high)})"


def _steps(steps: Sequence[int]) -> str:
    return ", ".join(str(s) for s in steps)


# A clip of a run folder -> its src in the report (suite index, step, utterance id given for names).
Placer = Callable[[Path, int, int, str], str | None]


def view(sweep: Sweep, place: Placer) -> SweepView:
    done, missed = load_runs(sweep)
    sections = tuple(_section(i, name, done[name], missed[name], place) for i, name in enumerate(done))
    langs = [s.lang for s in sections if s.evaluated]
    return SweepView(sweep_id=sweep.sweep_id, suite_names=", ".join(done), started=_when(sweep.started_unix),
                     finished=_when(sweep.finished_unix), parent_run_id=sweep.parent_run_id or "",
                     lang=langs[0] if langs else "en", suites=sections, checkpoints=len(sweep.checkpoints),
                     version=__version__, resamples=RESAMPLES, seed=SEED)


def _section(index: int, name: str, runs: list[Evaluated], missed: list[tuple[Checkpoint, str]],
             place: Placer) -> SuiteSection:
    directions = key_directions(runs)
    trajectories = [trajectory(runs, k, h) for k, h in directions.items()]
    columns = tuple(KeyColumn(t.key, arrow(t.higher_is_better), _direction_words(t.higher_is_better))
                    for t in trajectories)
    rows = tuple(CheckpointRow(
        step=str(r.step), model=shown_model(r.checkpoint.model), step_source=r.checkpoint.step_source,
        utterances=str(len(r.rows)), failures=str(sum(row.failure is not None for row in r.rows)),
        mlflow_run_id=r.checkpoint.mlflow_run_id or r.summary.tracking.run_id or "",
        cells=tuple(_estimate_cell(t, i) for t in trajectories)) for i, r in enumerate(runs))
    best = tuple(_best_row(t, runs) for t in trajectories)
    heat_key = HEAT_KEY if HEAT_KEY in directions else next(iter(directions), None)
    suite = runs[0].summary.suite if runs else None
    listen_key = heat_key or ""
    return SuiteSection(
        name=name, version=suite.version if suite else "", language=suite.language if suite else "",
        lang=(suite.language if suite else "") or "en", evaluated=len(runs), notes=tuple(_notes(runs)),
        columns=columns, rows=rows, charts=tuple(_chart(t, runs) for t in trajectories if any(t.estimates)),
        best=best, heatmap=_heatmap(runs, heat_key, directions.get(heat_key or "")) if heat_key else None,
        listen_key=listen_key, alignment=bool(_alignment_column(runs, heat_key)),
        listening=tuple(_listen(uid, runs, heat_key, index, place) for uid in listening_ids(runs, heat_key)),
        missed=tuple(Missed(str(c.step), shown_model(c.model), status, c.reason or "no reason recorded")
                     for c, status in missed))


def _notes(runs: Sequence[Evaluated]) -> list[str]:
    """Why some checkpoints' numbers are not comparable with the first one's."""
    out: list[str] = []
    for r in runs[1:]:
        for reason in incomparability(r.summary, runs[0].summary):
            note = f"step {r.step} vs step {runs[0].step}: {reason}"
            if note not in out:
                out.append(note)
    return out


def _estimate_cell(t: Trajectory, i: int) -> Cell:
    e = t.estimates[i]
    if e is None:
        return Cell(fmt(None))
    return Cell(_interval(e), f"mean of {e.n} utterances, 95% CI {fmt(e.low)}–{fmt(e.high)}", best=t.best == i)


def _best_row(t: Trajectory, runs: Sequence[Evaluated]) -> BestRow:
    words = _direction_words(t.higher_is_better)
    if t.best is None:
        why = "no direction" if t.higher_is_better is None else "no values"
        return BestRow(t.key, arrow(t.higher_is_better), words, fmt(None), "", why, "")
    e = t.estimates[t.best]
    assert e is not None
    near = t.near_best()
    return BestRow(t.key, arrow(t.higher_is_better), words, str(t.steps[t.best]),
                   shown_model(runs[t.best].checkpoint.model), _interval(e),
                   _steps([t.steps[i] for i in near]) if near else "none")


def _alignment_column(runs: Sequence[Evaluated], key: str | None) -> str | None:
    """The edit-alignment text column the metric that produced `key` declares, if any."""
    for r in runs:
        for info in r.summary.metrics.values():
            if key in info.higher_is_better and info.alignments:
                return info.alignments[0]
    return None


def _listen(uid: str, runs: Sequence[Evaluated], key: str | None, suite_index: int, place: Placer) -> Listen:
    column = _alignment_column(runs, key)
    takes = []
    text, tags = "", ""
    values: list[float] = []
    for r in runs:
        row = next((x for x in r.rows if x.utterance_id == uid), None)
        if row is None:
            takes.append(Take(str(r.step), "", (), fmt(None), None, "not in this run"))
            continue
        text, tags = text or row.text, tags or ", ".join(row.tags)
        value = row.value(key) if key else math.nan
        values.append(value)
        clip = _clip(r, row)
        takes.append(Take(str(r.step), str(row.texts.get("transcript", "")),
                          edits(row.texts.get(column)) if column else (), fmt(value),
                          place(clip, suite_index, r.step, uid) if clip is not None else None, row.failure or ""))
    finite = [v for v in values if math.isfinite(v)]
    head = f"{key} {fmt(finite[0])} → {fmt(finite[-1])}" if key and len(finite) > 1 else ""
    return Listen(uid, text, tags, head, tuple(takes))


def _clip(run: Evaluated, row: Row) -> Path | None:
    """The row's clip, only ever a regular file of its run's own audio folder (record.audio_file)."""
    try:
        path = record.audio_file(run.folder, row)
    except (EvalkitError, OSError, RuntimeError):  # refused, or a symlink loop
        return None
    return path if path is not None and path.is_file() else None


def _heatmap(runs: Sequence[Evaluated], key: str, higher_is_better: bool | None) -> Heatmap:
    per_run = [tag_means(r, key) for r in runs]
    tags = list(dict.fromkeys([*(t for m in per_run for t in m), *(t for r in runs for row in r.rows
                                                                     for t in row.tags)]))
    whole = [estimate([row.value(key) for row in r.rows]) for r in runs]
    grid = [[_mean(e) for e in whole], *[[m.get(t, (math.nan, 0))[0] for m in per_run] for t in tags]]
    finite = [v for line in grid for v in line if math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 0.0)

    def cell(v: float, n: int) -> Cell:
        if not math.isfinite(v):
            return Cell(fmt(None), "no value")
        return Cell(fmt(v), f"mean {key} over {n} utterances", f"background:{_colour(v, lo, hi, higher_is_better)}")

    rows = [HeatRow("all utterances", str(max((len(r.rows) for r in runs), default=0)),
                    tuple(cell(_mean(e), e.n if e else 0) for e in whole), True)]
    for t in tags:
        sizes = [m.get(t, (math.nan, 0))[1] for m in per_run]
        rows.append(HeatRow(t, str(max(sizes, default=0)),
                            tuple(cell(*m.get(t, (math.nan, 0))) for m in per_run), False))
    if higher_is_better is None:
        legend = "darker blue: higher"
    else:
        legend = f"green: better, red: worse ({_direction_words(higher_is_better)}), over {fmt(lo)}–{fmt(hi)}"
    return Heatmap(key, arrow(higher_is_better), tuple(str(r.step) for r in runs), tuple(rows), legend)


def _colour(v: float, lo: float, hi: float, higher_is_better: bool | None) -> str:
    t = 0.0 if hi <= lo else (v - lo) / (hi - lo)
    if higher_is_better is None:
        rgb = _mix((0xF4, 0xF8, 0xFC), _NEUTRAL, t)
    else:
        bad = 1.0 - t if higher_is_better else t
        rgb = _mix(_GOOD, _MID, bad * 2) if bad <= 0.5 else _mix(_MID, _BAD, bad * 2 - 1)
    return "#" + "".join(f"{c:02x}" for c in rgb)


def _mix(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> tuple[int, int, int]:
    t = min(1.0, max(0.0, t))
    return (round(a[0] + (b[0] - a[0]) * t), round(a[1] + (b[1] - a[1]) * t), round(a[2] + (b[2] - a[2]) * t))


# The charts: inline SVG drawn from numbers (no plotting library: a line, a band, whiskers, ticks).

def _chart(t: Trajectory, runs: Sequence[Evaluated]) -> Chart:
    left, right, top, bottom = _MARGIN[0], CHART_W - _MARGIN[1], _MARGIN[2], CHART_H - _MARGIN[3]
    present = [(s, e) for s, e in zip(t.steps, t.estimates, strict=True) if e is not None]
    lo = min(e.low for _, e in present)
    hi = max(e.high for _, e in present)
    pad = (hi - lo) * 0.08 or (abs(hi) * 0.1 or 0.05)
    y0 = 0.0 if lo >= 0 > lo - pad else lo - pad
    y1 = hi + pad
    s0, s1 = t.steps[0], t.steps[-1]

    def x(step: int) -> float:
        return (left + right) / 2 if s1 == s0 else left + (step - s0) / (s1 - s0) * (right - left)

    def y(v: float) -> float:
        return bottom - (v - y0) / (y1 - y0) * (bottom - top)

    points = tuple(ChartPoint(
        s, _c(x(s)), _c(y(e.mean)), _c(y(e.low)), _c(y(e.high)),
        f"step {s}: {t.key} {fmt(e.mean)}, 95% CI {fmt(e.low)}–{fmt(e.high)} ({e.n} utterances)"
        + (" · best" if t.best is not None and t.steps[t.best] == s else ""),
        t.best is not None and t.steps[t.best] == s) for s, e in present)
    band = ""
    if len(present) > 1:
        band = " ".join([*(f"{_c(x(s))},{_c(y(e.high))}" for s, e in present),
                         *(f"{_c(x(s))},{_c(y(e.low))}" for s, e in reversed(present))])
    shown = list(t.steps) if len(t.steps) <= 10 else [*t.steps[::math.ceil(len(t.steps) / 8)], t.steps[-1]]
    x_ticks = tuple(Tick(_c(x(s)), _step_label(s)) for s in dict.fromkeys(shown))
    y_ticks = tuple(Tick(_c(y(v)), label) for v, label in _nice_ticks(y0, y1))
    words = _direction_words(t.higher_is_better)
    caption = f"{t.key} {arrow(t.higher_is_better)} ({words}) over training steps: mean and 95% CI per checkpoint"
    return Chart(t.key, arrow(t.higher_is_better), words, caption, CHART_W, CHART_H, _c(left), _c(right), _c(top),
                 _c(bottom), _c(bottom + 16), _c(left - 6), points,
                 " ".join(f"{p.cx},{p.cy}" for p in points), band, x_ticks, y_ticks)


def _c(v: float) -> str:
    return f"{v:.1f}"


def _step_label(step: int) -> str:
    return f"{step // 1000}k" if step and step % 1000 == 0 else str(step)


def _nice_ticks(lo: float, hi: float, target: int = 5) -> list[tuple[float, str]]:
    raw = (hi - lo) / max(1, target - 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    decimals = max(0, -math.floor(math.log10(step)) + (1 if step / magnitude == 2.5 else 0))
    out = []
    v = math.ceil(lo / step) * step
    while v <= hi + step * 1e-9:
        out.append((v, f"{v:.{decimals}f}"))
        v += step
    return out


# Templates and files.

def _templates() -> Templates:
    return Templates(template_dir(), TEMPLATES, "sweep report")


def _render(sweep: Sweep, place: Placer) -> tuple[str, str]:
    templates, model = _templates(), view(sweep, place)
    return templates.render("sweep.html.j2", sweep=model), templates.render("sweep.md.j2", sweep=model)


def _linker(root: Path) -> Placer:
    """Clips linked where they are, by a path relative to `root` (the sweep folder)."""
    base = root.resolve()

    def place(clip: Path, suite_index: int, step: int, uid: str) -> str | None:
        try:
            return quote(clip.resolve().relative_to(base).as_posix())
        except (ValueError, OSError, RuntimeError):
            return None

    return place


def _copier(out_dir: Path) -> Placer:
    """Clips copied into out_dir/audio/<suite>/<step>/ (numbered: two ids may sanitize alike)."""
    count = iter(range(1 << 30))

    def place(clip: Path, suite_index: int, step: int, uid: str) -> str | None:
        rel = (Path("audio") / f"{suite_index}" / f"step-{step}"
               / f"{next(count)}-{_safe(uid)}{clip.suffix.lower() or '.wav'}")
        (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(clip, out_dir / rel)
        return quote(rel.as_posix())

    return place


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")[:80] or "utterance"


def shown_model(model: str) -> str:
    """A checkpoint as a report names it: its file name, never a local absolute path (a report is
    shared), or the spec itself (espeak:ko)."""
    return Path(model).name if "/" in model or Path(model).suffix else model


def build(sweep_dir: Path) -> tuple[str, str]:
    """The report of the sweep in sweep_dir as (HTML, Markdown), for files written into sweep_dir:
    the HTML links the clips of the run folders by paths relative to it."""
    return _render(read(sweep_dir), _linker(sweep_dir))


def write(sweep_dir: Path, out_dir: Path | None = None) -> tuple[Path, Path]:
    """Writes report.html and report.md into out_dir (default: sweep_dir). Another folder may hold
    nothing but an earlier report: its clips are copied into out_dir/audio/, replacing old ones."""
    sweep = read(sweep_dir)
    target = sweep_dir if out_dir is None else out_dir
    if target.exists() and target.resolve() == sweep_dir.resolve():
        html, markdown = _render(sweep, _linker(sweep_dir))
    else:
        _templates()  # missing templates fail before anything is written
        target.mkdir(parents=True, exist_ok=True)
        foreign = sorted(p.name for p in target.iterdir() if p.name not in FILES)
        if foreign:  # audio/ is rewritten: never in a folder that holds anything but an earlier report
            raise EvalkitError(f"{target} holds other files ({', '.join(foreign[:3])}); choose an empty folder")
        audio = target / "audio"
        if audio.is_symlink() or audio.is_file():  # clips must land in the folder, not where a link points
            audio.unlink()
        shutil.rmtree(audio, ignore_errors=True)
        html, markdown = _render(sweep, _copier(target))
    paths = target / REPORT_HTML, target / REPORT_MD
    for path, text in zip(paths, (html, markdown), strict=True):
        with record.replacing(path, path.with_name(path.name + ".tmp")) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return paths
