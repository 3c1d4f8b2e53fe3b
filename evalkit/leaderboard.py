"""`evalkit runs`: finished runs side by side (model, step, suite, key metrics), from an MLflow
store or from a folder of run folders, as a table, CSV, Markdown or JSON.

From MLflow nothing is downloaded: a run's tags, params and aggregate metrics are enough. The key
metrics are each run's declared headlines (`evalkit.headlines`, recorded since evalkit 0.1.0;
older runs fall back to `cer`): `KEY/mean`, and `KEY/corpus` where it exists.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import record, tracking
from .errors import EvalkitError

FORMATS = ("table", "csv", "md", "json")
HEADLINES_TAG = "evalkit.headlines"


@dataclass(frozen=True)
class Entry:
    source: str  # mlflow:<run id> or the run folder
    model: str
    step: int | None
    suite: str
    suite_digest: str
    started_unix: float
    headlines: tuple[str, ...]
    metrics: dict[str, float]  # the run's aggregates


def from_mlflow(uri: str, experiment: str | None = None, suite: str | None = None) -> list[Entry]:
    return [Entry(f"mlflow:{r.run_id}", r.tags.get("evalkit.model", "?"), _step(r.tags.get("evalkit.step")),
                  r.tags.get("evalkit.suite", "?"), r.tags.get("evalkit.suite_digest", ""), r.start_time / 1000,
                  tuple(h for h in r.tags.get(HEADLINES_TAG, "cer").split(",") if h), dict(r.metrics))
            for r in tracking.list_runs(uri, experiment, suite)]


def from_folder(folder: Path, suite: str | None = None) -> list[Entry]:
    """Every finished run folder directly inside `folder` (others are skipped: unfinished runs
    and unrelated folders are normal there)."""
    if not folder.is_dir():
        raise EvalkitError(f"--from {folder}: not a folder")
    out = []
    for child in sorted(folder.iterdir()):
        summary = child / record.SUMMARY
        # A link could make a listing read files outside the folder: only plain run folders count.
        if child.is_symlink() or summary.is_symlink() or not summary.is_file():
            continue
        try:
            s = record.load_summary(child)
        except EvalkitError:
            continue
        if suite is not None and s.suite.name != suite:
            continue
        out.append(Entry(str(child), s.model_name, s.step, s.suite.name, s.suite.digest, s.started_unix,
                         tuple(m.headline for m in s.metrics.values() if m.headline), dict(s.aggregates)))
    return out


def columns(entries: Sequence[Entry]) -> list[str]:
    """The metric columns: each headline's mean (and corpus rate where any run has one), in the
    order the runs declare them, then failures."""
    out: list[str] = []
    for e in entries:
        for h in e.headlines:
            for key in (f"{h}/mean", f"{h}/corpus"):
                if key not in out and any(key in x.metrics for x in entries):
                    out.append(key)
    return [*out, "failures/count"]


def ordered(entries: Sequence[Entry], sort: str | None) -> list[Entry]:
    """By `sort` (a metric key, ascending; `-KEY` descending; runs without it last), else by step
    and start time (a training run's checkpoints in order)."""
    if sort is None:
        return sorted(entries, key=lambda e: (e.step is None, e.step or 0, e.started_unix))
    key, descending = (sort[1:], True) if sort.startswith("-") else (sort, False)
    if not any(key in e.metrics for e in entries) and entries:
        raise EvalkitError(f"--sort {sort}: no run has the metric {key!r} (for example: {', '.join(columns(entries))})")
    have = [e for e in entries if math.isfinite(e.metrics.get(key, math.nan))]
    missing = [e for e in entries if e not in have]
    return sorted(have, key=lambda e: e.metrics[key], reverse=descending) + missing


def render(entries: Sequence[Entry], fmt: str) -> str | list:
    """CSV, Markdown or JSON text; for `table`, rows for the terminal (header first)."""
    cols = columns(entries)
    header = ["model", "step", "suite", "digest", *cols, "source"]
    rows = [[e.model, "" if e.step is None else str(e.step), e.suite, e.suite_digest[:12],
             *(_num(e.metrics.get(c)) for c in cols), e.source] for e in entries]
    if fmt == "table":
        return [header, *rows]
    if fmt == "csv":
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([header, *rows])
        return buf.getvalue()
    if fmt == "md":
        from .report import md

        lines = ["| " + " | ".join(md(h) for h in header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(md(c) for c in r) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    if fmt == "json":
        return json.dumps([{"model": e.model, "step": e.step, "suite": e.suite, "suite_digest": e.suite_digest,
                            "source": e.source, "metrics": record.jsonable({c: e.metrics.get(c) for c in cols})}
                           for e in entries], ensure_ascii=False, indent=2) + "\n"
    raise EvalkitError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")


def _num(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return ""
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.4f}"


def _step(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:  # a tag edited by hand
        return None
