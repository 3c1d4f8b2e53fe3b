"""Results of a listening test leave the database in two forms: the ratings CSV and each run's
MLflow record.

The ratings CSV (`write_csv`), one row per rating, UTF-8, comma-separated, a header line:

    run           the run's evalkit run id (summary.json's run_id, MLflow tag evalkit.run_id):
                  `evalkit correlate`, `evalkit compare` and `runs.load_run` all accept it
    utterance_id  the suite's utterance id
    score         MOS: 1-5 (absolute category rating); MUSHRA: 0-100; A/B: the run's share of one
                  judgment, 1 preferred, 0 the other run preferred, 0.5 no preference (so an A/B
                  judgment is two rows, one per run, summing to 1)
    rater         the rater id (the name or code entered on the start page, normalized)
    test          mos | ab | mushra
    timestamp     when the form was stored, ISO 8601 UTC (2026-12-05T10:11:12.345Z)
    model         the run's model name, for people reading the file
    item, token   the rated item's opaque id and the form token (one token per submitted form)

Only first ratings of runs are written: attention repeats and the hidden anchors stay in the
database (the anchors' means are logged beside each run's score), and raters who failed the
attention check are left out unless asked (`keep_failed`).

MLflow (`log_to_mlflow`): each run's own MLflow run (where `evalkit run` logged it) gets, through
evalkit.tracking: the test's metrics (mos/mean, mos/ci_low, mos/ci_high, mos/ratings, mos/raters,
mos/utterances; mushra/... the same; ab/win_rate, ab/ci_low, ab/ci_high, ab/wins, ab/losses,
ab/ties, ab/raters; TEST/raters_failed; the anchors' TEST/reference/mean and TEST/degraded/mean),
a per-utterance table listen/TEST_utterances.json (utterance id, text, ratings, mean, scores) and
its rows of the CSV as listen/TEST_ratings.csv. Logging again replaces what the MLflow UI shows
with the newer numbers.
"""

from __future__ import annotations

import csv
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .. import record, tracking
from ..errors import EvalkitError, first_line
from . import stats
from .catalog import Selection
from .store import Rating, Store

COLUMNS = ("run", "utterance_id", "score", "rater", "test", "timestamp", "model", "item", "token")


@dataclass(frozen=True)
class Results:
    """A database read back: every rating, each rater's attention check, and what results use."""

    test: str
    ratings: tuple[Rating, ...]
    checks: dict[str, stats.RaterCheck]
    usable: tuple[Rating, ...]  # first ratings, failed raters left out (unless kept)


def read(store: Store, test: str, keep_failed: bool = False) -> Results:
    ratings = store.ratings()
    checks = stats.screen(ratings)
    return Results(test, tuple(ratings), checks, tuple(stats.usable(ratings, checks, keep_failed)))


def timestamp(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def csv_rows(results: Results, selection: Selection) -> list[dict[str, str]]:
    labels = {s.key: s.label for s in selection.systems if s.kind == "run"}
    return [{"run": r.run, "utterance_id": r.utterance_id, "score": f"{r.score:g}", "rater": r.rater,
             "test": r.test, "timestamp": timestamp(r.at), "model": labels[r.run], "item": r.item, "token": r.token}
            for r in results.usable if r.run in labels]


def write_csv(path: Path, rows: Sequence[dict[str, str]]) -> None:
    """The ratings CSV (format above), replaced whole: a reader never sees half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with record.replacing(path, path.with_name(path.name + ".tmp")) as tmp, \
                open(tmp, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    except OSError as exc:
        raise EvalkitError(f"cannot write {path} ({first_line(exc)})") from None


def run_metrics(results: Results, run: str) -> dict[str, float]:
    """The MLflow metrics of one run (names above); empty when the run has no usable rating."""
    test = results.test
    failed = float(sum(c.status == "fail" for c in results.checks.values()))
    out: dict[str, float]
    if test == "ab":
        pref = stats.preferences(results.usable).get(run)
        if pref is None:
            return {}
        out = {"ab/win_rate": pref.rate, "ab/ci_low": pref.low, "ab/ci_high": pref.high, "ab/wins": pref.wins,
               "ab/losses": pref.losses, "ab/ties": pref.ties, "ab/raters": pref.raters, "ab/raters_failed": failed}
        return {k: float(v) for k, v in out.items() if not math.isnan(float(v))}  # no win rate with only ties
    summaries = stats.score_summaries(results.usable)
    own = summaries.get(run)
    if own is None:
        return {}
    out = {f"{test}/mean": own.mean, f"{test}/ci_low": own.low, f"{test}/ci_high": own.high,
           f"{test}/ratings": own.ratings, f"{test}/raters": own.raters, f"{test}/utterances": own.utterances,
           f"{test}/raters_failed": failed}
    for anchor in ("reference", "degraded"):
        if anchor in summaries:  # the same listeners' verdict on the anchors, to read the run's score against
            out[f"{test}/{anchor}/mean"] = summaries[anchor].mean
    return {k: float(v) for k, v in out.items() if not math.isnan(float(v))}


def utterance_table(results: Results, selection: Selection, run: str) -> list[dict]:
    texts = dict(selection.utterances)
    return [{"utterance_id": u.utterance_id, "text": texts.get(u.utterance_id, ""), "test": results.test,
             "ratings": len(u.scores), "mean": u.mean, "scores": ",".join(f"{s:g}" for s in u.scores)}
            for u in stats.per_utterance(results.usable, run)]


def log_to_mlflow(results: Results, selection: Selection, tracking_uri: str | None = None) -> list[str]:
    """Logs each run's results to its own MLflow run; returns one line per run saying what happened.
    A run never logged to MLflow is skipped with a line; an unreachable store raises (TrackingError)."""
    lines = []
    rows = csv_rows(results, selection)
    test = results.test
    for system in selection.systems:
        if system.kind != "run":
            continue
        if system.mlflow_run_id is None:
            lines.append(f"{system.label}: never logged to MLflow, its listening results stay in the CSV")
            continue
        metrics = run_metrics(results, system.key)
        if not metrics:
            lines.append(f"{system.label}: no usable rating yet, nothing logged")
            continue
        uri = tracking_uri or system.tracking_uri or tracking.default_uri()
        tracking.log_metrics(uri, system.mlflow_run_id, metrics)
        tracking.log_table(uri, system.mlflow_run_id, utterance_table(results, selection, system.key),
                           f"listen/{test}_utterances.json")
        with tempfile.TemporaryDirectory() as tmp:
            own = Path(tmp) / f"{test}_ratings.csv"
            write_csv(own, [r for r in rows if r["run"] == system.key])
            tracking.log_files(uri, system.mlflow_run_id, [own], "listen")
        headline = "ab/win_rate" if test == "ab" else f"{test}/mean"
        lines.append(f"{system.label}: logged {headline} {metrics.get(headline, math.nan):.3f} and {len(metrics)} "
                     f"metrics to "
                     f"MLflow run {system.mlflow_run_id} at {tracking.redact(uri)}")
    return lines
