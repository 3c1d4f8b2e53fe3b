"""A correlation (evalkit.correlate.Result) as files a person reads, and as an MLflow run.

OUT/index.html   self-contained like the comparison report (inline CSS, plots as inline SVG images,
                 no scripts, no network): the ranking, both levels' tables, per-tag tables, the
                 metric-metric matrix, a scatter plot per key
OUT/summary.md   the same tables for a CI comment or a pull request
OUT/correlation.json  every number (NaN as null)
OUT/figures/*.svg     the plots as files: what MLflow shows among the artifacts

As in evalkit.report, data and markup are apart: `view` builds a view model of formatted strings and
the Jinja2 templates correlate.html.j2 / correlate.md.j2 (reports/templates/) lay it out, through the
same Templates (HTML autoescaped, Markdown escaped by `md`).

MLflow: a correlation belongs to a set of runs and a ratings file together, not to one run, so it is
logged as a run of its own (`log`), by default in the experiment `evalkit-correlate`: never in the
rated runs' experiment, where it would become the `latest:EXPERIMENT` baseline of a nightly. It
carries the files above as artifacts, the ratings file's sha256 and counts as params, each key's
Spearman rho as metrics (`spearman/utterance/KEY`, `spearman/system/KEY`), and the tag
`evalkit.correlate.runs` (the rated MLflow run ids); each rated run logged to the same store gets the
tag `evalkit.correlate.last` naming it.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, record, tracking
from .correlate import KeyCorrelation, Matrix, Result, Section
from .correlation import Coefficients, Estimate
from .errors import EvalkitError
from .gates import level
from .report import Templates, arrow, template_dir

TEMPLATES = ("correlate.html.j2", "correlate.md.j2", "report.css")
FILES = ("index.html", "summary.md", "correlation.json", "figures")
EXPERIMENT = "evalkit-correlate"
RUNS_TAG = "evalkit.correlate.runs"
LAST_TAG = "evalkit.correlate.last"
_COLORS = ("#2471a3", "#c0392b", "#27ae60", "#8e44ad", "#d68910", "#17a589", "#566573", "#cb4335", "#2e86c1")


def fmt(v: float, signed: bool = True) -> str:
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        return "–"
    return f"{v:+.2f}" if signed else f"{v:.3g}"


def estimate_text(e: Estimate) -> str:
    """rho [low, high], two decimals: correlations need no more."""
    if not math.isfinite(e.value):
        return "–"
    ci = f" [{fmt(e.ci_low)}, {fmt(e.ci_high)}]" if math.isfinite(e.ci_low) else " [–]"
    return fmt(e.value) + ci


def expected_text(k: KeyCorrelation) -> str:
    return {1: "+", -1: "−", None: "none"}[k.expected_sign]


def agrees_text(k: KeyCorrelation) -> str:
    return {True: "yes", False: "NO", None: "–"}[k.agrees]


# --- the view model ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    text: str
    css: str  # pos | neg | none, then "good"/"bad" when the interval excludes 0 (expected sign or not), "sure"
    # without a direction
    value: str = "–"  # the coefficient alone and its interval alone, for a narrow HTML cell
    ci: str = ""


@dataclass(frozen=True)
class KeyRow:
    rank: int
    key: str
    arrow: str
    n: str
    pearson: Cell
    spearman: Cell
    kendall: Cell
    expected: str
    agrees: str
    note: str
    systems: str
    sys_pearson: Cell
    sys_spearman: Cell
    sys_kendall: Cell
    sys_note: str


@dataclass(frozen=True)
class SectionView:
    title: str
    pairs: int
    systems: int
    system_note: str
    rows: tuple[KeyRow, ...]


@dataclass(frozen=True)
class Figure:
    key: str
    caption: str
    uri: str  # data:image/svg+xml;base64,...
    file: str  # figures/<name>.svg


@dataclass(frozen=True)
class MatrixView:
    keys: tuple[str, ...]
    rows: tuple[tuple[str, tuple[Cell, ...]], ...]
    redundant: tuple[str, ...]
    left_out: str


@dataclass(frozen=True)
class RunView:
    label: str
    source: str
    mlflow_run_id: str
    ratings: int
    utterances: int
    mean_score: str


@dataclass(frozen=True)
class CorrelateView:
    ratings_source: str
    ratings_sha256: str
    ratings: int
    raters: int
    pairs: int
    runs: tuple[RunView, ...]
    overall: SectionView
    by_tag: tuple[SectionView, ...]
    matrix: MatrixView
    figures: tuple[Figure, ...]
    matrix_figure: Figure | None
    notes: tuple[str, ...]
    confidence: str
    resamples: int
    seed: int
    version: str
    generated: str


def _cell(e: Estimate, expected: int | None = None) -> Cell:
    """A coefficient; shaded when its interval excludes 0: by whether its sign is the expected one."""
    if not math.isfinite(e.value):
        return Cell("–", "none")
    sign = "pos" if e.value > 0 else "neg" if e.value < 0 else "none"
    ci = f"[{fmt(e.ci_low)}, {fmt(e.ci_high)}]" if math.isfinite(e.ci_low) else "[–]"
    if not e.excludes_zero:
        return Cell(estimate_text(e), sign, fmt(e.value), ci)
    verdict = "sure" if expected is None else "good" if (e.value > 0) == (expected > 0) else "bad"
    return Cell(estimate_text(e), f"{sign} {verdict}", fmt(e.value), ci)


def _row(rank: int, k: KeyCorrelation) -> KeyRow:
    u, s, want = k.utterance, k.system, k.expected_sign
    return KeyRow(rank, k.key, arrow(k.higher_is_better), str(u.n), _cell(u.pearson, want), _cell(u.spearman, want),
                  _cell(u.kendall, want), expected_text(k), agrees_text(k), u.note or "", str(s.n),
                  _cell(s.pearson, want), _cell(s.spearman, want), _cell(s.kendall, want), s.note or "")


def _section(s: Section) -> SectionView:
    title = "All rated utterances" if s.tag is None else f"Tag {s.tag}"
    return SectionView(title, s.pairs, s.systems, s.system_note or "",
                       tuple(_row(i, k) for i, k in enumerate(s.keys, 1)))


def _matrix(m: Matrix) -> MatrixView:
    rows = []
    for i, key in enumerate(m.keys):
        cells = []
        for j in range(len(m.keys)):
            v = m.rho[i][j]
            strength = "none" if not math.isfinite(v) else "hi" if abs(v) >= 0.9 else "mid" if abs(v) >= 0.6 else "lo"
            cells.append(Cell(fmt(v), strength + (" diag" if i == j else "")))
        rows.append((key, tuple(cells)))
    redundant = tuple(f"{a} ~ {b} (rho {fmt(v)})" for a, b, v in m.redundant())
    return MatrixView(m.keys, tuple(rows), redundant, ", ".join(m.left_out))


def view(result: Result, figures: tuple[Figure, ...], matrix_figure: Figure | None) -> CorrelateView:
    runs = tuple(RunView(r.label, r.source, r.mlflow_run_id or "–", r.ratings, r.utterances, fmt(r.mean_score, False))
                 for r in result.runs)
    return CorrelateView(result.ratings_source, result.ratings_sha256, result.ratings, result.raters,
                         len(result.points), runs, _section(result.overall), tuple(_section(s) for s in result.by_tag),
                         _matrix(result.matrix), figures, matrix_figure, result.notes, level(result.confidence),
                         result.resamples, result.seed, __version__, f"{datetime.now():%Y-%m-%d %H:%M}")


# --- figures ----------------------------------------------------------------------------------


def _svg(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()


def _figure(key: str, caption: str, svg: bytes) -> tuple[Figure, bytes]:
    name = re.sub(r"[^A-Za-z0-9._-]", "_", key).lstrip(".") or "key"
    uri = "data:image/svg+xml;base64," + base64.b64encode(svg).decode("ascii")
    return Figure(key, caption, uri, f"figures/{name}.svg"), svg


def scatter(result: Result, k: KeyCorrelation) -> tuple[Figure, bytes] | None:
    """Ratings against the key: every rated utterance (a colour per run) and, beside it, each
    run's means (the system level)."""
    import matplotlib
    from matplotlib.figure import Figure as MplFigure

    have = [p for p in result.points if math.isfinite(p.values.get(k.key, math.nan))]
    if not have:
        return None
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "evalkit", "font.size": 8}):
        fig = MplFigure(figsize=(8.0, 2.8), layout="constrained")
        ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
        runs = sorted({p.run for p in have})
        for i in runs:
            mine = [p for p in have if p.run == i]
            color = _COLORS[i % len(_COLORS)]
            ax1.scatter([p.values[k.key] for p in mine], [p.score for p in mine], s=10, alpha=0.7, color=color,
                        label=result.runs[i].label[:40])
            ax2.scatter([np.mean([p.values[k.key] for p in mine])], [np.mean([p.score for p in mine])], s=40,
                        color=color)
        u, s = k.utterance, k.system
        ax1.set_title(f"{k.key} {arrow(k.higher_is_better)}: utterances (n={u.n}), ρ {estimate_text(u.spearman)}")
        ax1.set_xlabel(k.key)
        ax1.set_ylabel("mean rating")
        if len(runs) <= 9:
            ax1.legend(fontsize=6, loc="best", frameon=False)
        ax2.set_title(f"systems (n={s.n}), ρ {estimate_text(s.spearman)}" if math.isfinite(s.spearman.value)
                      else f"systems (n={s.n}): no system level")
        ax2.set_xlabel(f"mean {k.key}")
        svg = _svg(fig)
    caption = (f"{k.key}: each dot a rated utterance of a run (its mean rating); right: each run's means. "
               f"Expected sign {expected_text(k)}.")
    return _figure(k.key, caption, svg)


def matrix_plot(m: Matrix) -> tuple[Figure, bytes] | None:
    import matplotlib
    from matplotlib.figure import Figure as MplFigure

    if len(m.keys) < 2:
        return None
    k = len(m.keys)
    rho = np.array(m.rho, dtype=float)
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "evalkit", "font.size": 7}):
        size = min(9.0, max(4.5, 1.5 + 0.45 * k))
        fig = MplFigure(figsize=(size, size * 0.85), layout="constrained")
        ax = fig.subplots()
        image = ax.imshow(np.nan_to_num(rho), vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_xticks(range(k), m.keys, rotation=60, ha="right")
        ax.set_yticks(range(k), m.keys)
        if k <= 16:
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, fmt(rho[i, j]), ha="center", va="center", fontsize=6,
                            color="white" if math.isfinite(rho[i, j]) and abs(rho[i, j]) > 0.6 else "#222")
        fig.colorbar(image, ax=ax, shrink=0.8, label="Spearman rho")
        ax.set_title("metric-metric Spearman rho")
        svg = _svg(fig)
    return _figure("metric-matrix", "Spearman rho between metric keys over every utterance of every run: |rho| near "
                   "1 means two keys rank utterances alike (redundant).", svg)


# --- files ------------------------------------------------------------------------------------


def write(out_dir: Path, result: Result, *, templates: Path | None = None) -> Path:
    """Writes the files into out_dir (created; an existing folder may hold only an earlier
    correlation); returns index.html."""
    env = Templates(templates or template_dir(), TEMPLATES, "correlate report")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in FILES)
    except OSError as exc:
        raise EvalkitError(f"output folder {out_dir} is not writable ({exc.strerror or exc})") from None
    if foreign:
        raise EvalkitError(f"{out_dir} holds other files ({', '.join(foreign[:3])}); choose an empty --out")
    made = [f for f in (scatter(result, k) for k in result.overall.keys) if f is not None]
    heat = matrix_plot(result.matrix)
    model = view(result, tuple(f for f, _ in made), heat[0] if heat else None)
    try:
        figures = out_dir / "figures"
        figures.mkdir(exist_ok=True)
        for old in figures.glob("*.svg"):
            old.unlink()
        for f, svg in [*made, *([heat] if heat else [])]:
            (out_dir / f.file).write_bytes(svg)
        (out_dir / "summary.md").write_text(env.render("correlate.md.j2", c=model), encoding="utf-8")
        (out_dir / "index.html").write_text(env.render("correlate.html.j2", c=model), encoding="utf-8")
        doc = record.jsonable(as_json(result))
        (out_dir / "correlation.json").write_text(json.dumps(doc, ensure_ascii=False, indent=2) + "\n",
                                                  encoding="utf-8")
    except OSError as exc:
        raise EvalkitError(f"cannot write the correlation to {out_dir} ({exc.strerror or exc})") from None
    return out_dir / "index.html"


def _coefficients(c: Coefficients) -> dict:
    return {"n": c.n, "note": c.note, **{m: {"value": e.value, "ci": [e.ci_low, e.ci_high]}
                                         for m, e in (("pearson", c.pearson), ("spearman", c.spearman),
                                                      ("kendall", c.kendall))}}


def _section_json(s: Section) -> dict:
    return {"tag": s.tag, "pairs": s.pairs, "systems": s.systems, "system_note": s.system_note,
            "keys": [{"key": k.key, "higher_is_better": k.higher_is_better, "expected_sign": k.expected_sign,
                      "agrees": k.agrees, "utterance": _coefficients(k.utterance), "system": _coefficients(k.system)}
                     for k in s.keys]}


def as_json(result: Result) -> dict[str, Any]:
    return {
        "ratings": {"source": result.ratings_source, "sha256": result.ratings_sha256, "matched": result.ratings,
                    "raters": result.raters, "pairs": len(result.points)},
        "runs": [{"source": r.source, "run_id": r.run_id, "mlflow_run_id": r.mlflow_run_id, "label": r.label,
                  "ratings": r.ratings, "utterances": r.utterances, "mean_score": r.mean_score} for r in result.runs],
        "bootstrap": {"resamples": result.resamples, "seed": result.seed, "confidence": result.confidence,
                      "unit": "utterance", "interval": "percentile"},
        "overall": _section_json(result.overall),
        "by_tag": [_section_json(s) for s in result.by_tag],
        "metric_matrix": {"method": "spearman", "keys": list(result.matrix.keys),
                          "rho": [list(r) for r in result.matrix.rho], "n": [list(r) for r in result.matrix.n],
                          "left_out": list(result.matrix.left_out)},
        "notes": list(result.notes),
    }


# --- MLflow -----------------------------------------------------------------------------------


def log(result: Result, folder: Path, uri: str, experiment: str = EXPERIMENT) -> str:
    """The correlation as a run of its own (see the module docstring); returns its MLflow run id."""
    rated = [r.mlflow_run_id for r in result.runs if r.mlflow_run_id]
    metrics = {}
    for k in result.overall.keys:
        for level_name, c in (("utterance", k.utterance), ("system", k.system)):
            if math.isfinite(c.spearman.value):
                metrics[f"spearman/{level_name}/{k.key}"] = c.spearman.value
    params = {"ratings_file": result.ratings_source, "ratings_sha256": result.ratings_sha256,
              "ratings": result.ratings, "raters": result.raters, "pairs": len(result.points),
              "runs": len(result.runs), "resamples": result.resamples, "seed": result.seed}
    tags = {RUNS_TAG: ",".join(rated)[:5000], "evalkit.version": __version__}
    run_id = tracking.log_analysis(uri, experiment, f"correlate:{result.ratings_source}", folder, tags=tags,
                                   params=params, metrics=metrics)
    same_store = [r.mlflow_run_id for r in result.runs if r.mlflow_run_id and r.tracking_uri == uri]
    for rid in same_store:
        tracking.set_tags(uri, rid, {LAST_TAG: run_id})
    return run_id
