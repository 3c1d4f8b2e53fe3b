"""`evalkit correlate`: which automatic metrics follow human ratings, and which duplicate each other.

Ratings file (CSV, UTF-8, a header row, comma-separated; one row per rating):

    run,utterance_id,score,rater
    evalkit-runs/20250101-ko-base,ko-base-001,4,alice

- `run`: the rated run, named as any of: the RUN exactly as given on the command line; its evalkit
  run id (summary.json `run_id`); its MLflow run id; for a run folder, the folder's name or its
  absolute path. A name that fits two of the runs given (two folders called `repeat-01`) is bad
  input: use a run id. Rows naming none of the runs given are left out and counted (a listening
  test's anchors and attention checks, or systems not asked about), as are rows whose utterance id
  the run does not have.
- `utterance_id`: the suite's utterance id (the run's `id` column).
- `score`: a number, higher is better (MOS 1-5, MUSHRA 0-100, ...). A cell that is not a finite
  number is bad input.
- `rater`: optional; only counted.
Column names are matched without regard to case or surrounding spaces; other columns are ignored
(`evalkit listen` exports run, utterance_id, score, rater, test, timestamp). A row whose `test` is
`ab` is left out and counted: an A/B answer is a preference between two clips, not a score of one.
A listening database (a path ending `.db`: `evalkit listen`'s sqlite file, opened read-only) is read
with `SELECT run, utterance_id, score, rater FROM ratings WHERE test IS NOT 'ab' AND repeat_of IS NULL
AND system_kind = 'run'` (each condition only when the table has that column: A/B answers, attention
repeats and hidden anchors are left out, as the listening export leaves them out), with the same
rules. Unlike `evalkit listen --export`, this does not drop raters who failed the attention check:
export the CSV when that matters.

Statistics (evalkit.correlation), per metric value key of the runs (every key their metrics compare,
with or without a direction; per-utterance counts such as char_sub are left out, as in compare):
- utterance level: one pair per rated (run, utterance) with a finite value: the mean of its
  ratings against the value; intervals resample utterance ids (each drawn id brings its pairs
  from every run);
- system level: one point per run: the mean of its per-utterance mean ratings against the mean of
  the key, both over the same rated utterances with a finite value; needs at least 3 systems;
  intervals resample utterances and recompute each system's means;
- Pearson r, Spearman rho and Kendall tau-b (scipy), 95% percentile bootstrap intervals
  (compare.RESAMPLES resamples, seed compare.SEED), the number of pairs (or systems);
- the ranking: keys by |Spearman rho| at utterance level, sign shown. Ratings are higher-is-better,
  so a metric that tracks them correlates positively when higher is better and negatively when
  lower is better (CER); `agrees` says whether the sign is the expected one (when the interval
  excludes 0; otherwise the sign is unknown);
- the metric-metric Spearman matrix over every utterance of every run given (rated or not, each
  pair of keys over the rows where both are finite): |rho| near 1 means two keys say the same;
- `--by tag`: the same per suite tag, over the rated utterances carrying the tag. Per-tag intervals
  are 95% each, not corrected for the number of tags: this is for finding phenomena where a metric
  stops tracking listeners, not a gate.
"""

from __future__ import annotations

import csv
import hashlib
import math
import sqlite3
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import correlation
from .compare import CONFIDENCE, RESAMPLES, SEED
from .correlation import Coefficients
from .errors import EvalkitError, first_line
from .runs import LoadedRun
from .types import Row

REQUIRED = ("run", "utterance_id", "score")
LISTEN_QUERY = "SELECT run, utterance_id, score, rater FROM ratings"
# Conditions added to LISTEN_QUERY for each column the table has: first ratings of the runs only.
LISTEN_FILTERS = {"test": "test IS NOT 'ab'", "repeat_of": "repeat_of IS NULL", "system_kind": "system_kind = 'run'"}
MIN_SYSTEMS = 3
MAX_RATINGS_BYTES = 200 * 1024 * 1024  # a ratings file from someone else is read whole: bound it


@dataclass(frozen=True)
class Rating:
    run: str
    utterance_id: str
    score: float
    rater: str | None = None


@dataclass(frozen=True)
class Ratings:
    source: str  # the file's name, as shown
    ratings: tuple[Rating, ...]
    sha256: str  # of the file's bytes: which ratings a logged correlation used
    left_out_ab: int = 0


# --- reading ratings -----------------------------------------------------------------------


def read_ratings(path: Path) -> Ratings:
    """The ratings of a CSV file or a listening sqlite database (a path ending .db)."""
    path = Path(path)
    try:
        if not path.is_file():
            raise EvalkitError(f"{path}: no such ratings file")
        if path.stat().st_size > MAX_RATINGS_BYTES:
            raise EvalkitError(f"{path}: over {MAX_RATINGS_BYTES >> 20} MiB, not a ratings file")
        data = path.read_bytes()
    except OSError as exc:
        raise EvalkitError(f"{path}: cannot read the ratings ({exc.strerror or exc})") from None
    digest = hashlib.sha256(data).hexdigest()
    if path.suffix.lower() == ".db":
        rows, skipped = _from_db(path)
    else:
        rows, skipped = _from_csv(path, data)
    ratings = tuple(_rating(path, where, r) for where, r in rows)
    if not ratings:
        raise EvalkitError(f"{path}: holds no ratings")
    return Ratings(path.name, ratings, digest, skipped)


def _from_csv(path: Path, data: bytes) -> tuple[list[tuple[str, dict]], int]:
    try:
        text = data.decode("utf-8-sig")  # a spreadsheet's export starts with a byte order mark
    except UnicodeDecodeError as exc:
        raise EvalkitError(f"{path}: not UTF-8 text ({first_line(exc)})") from None
    reader = csv.reader(text.splitlines())
    try:
        header = next(reader)
    except StopIteration:
        raise EvalkitError(f"{path}: empty; a ratings CSV starts with the header run,utterance_id,score[,rater]") \
            from None
    except csv.Error as exc:
        raise EvalkitError(f"{path}: not a CSV file ({exc})") from None
    columns = {name.strip().lower(): i for i, name in reversed(list(enumerate(header)))}
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise EvalkitError(f"{path}: no column {', '.join(missing)} (a ratings CSV needs the columns "
                           f"{', '.join(REQUIRED)} and optionally rater; it has {', '.join(header[:8]) or 'none'})")
    rows, skipped = [], 0
    try:
        for line, cells in enumerate(reader, start=2):
            if not any(c.strip() for c in cells):
                continue
            get = {name: cells[i].strip() if i < len(cells) else "" for name, i in columns.items()}
            if get.get("test", "").lower() == "ab":
                skipped += 1
                continue
            rows.append((f"line {line}", get))
    except csv.Error as exc:
        raise EvalkitError(f"{path}: not a CSV file ({exc})") from None
    return rows, skipped


def _from_db(path: Path) -> tuple[list[tuple[str, dict]], int]:
    try:
        # Read-only: a database another process (the listening server) writes is never changed here.
        with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as db:
            columns = {r[1].lower() for r in db.execute("PRAGMA table_info(ratings)")}
            if not columns:
                raise EvalkitError(f"{path}: no table ratings (a listening database has one, with the columns "
                                   f"{', '.join(REQUIRED)}, rater)")
            missing = [c for c in (*REQUIRED, "rater") if c not in columns]
            if missing:
                raise EvalkitError(f"{path}: table ratings has no column {', '.join(missing)}")
            skipped = db.execute("SELECT count(*) FROM ratings WHERE test = 'ab'").fetchone()[0] \
                if "test" in columns else 0
            where = [cond for column, cond in LISTEN_FILTERS.items() if column in columns]
            found = db.execute(LISTEN_QUERY + (" WHERE " + " AND ".join(where) if where else "")).fetchall()
    except sqlite3.Error as exc:
        raise EvalkitError(f"{path}: not a readable listening database ({first_line(exc)})") from None
    return [(f"row {i}", {"run": r[0], "utterance_id": r[1], "score": r[2], "rater": r[3]})
            for i, r in enumerate(found, start=1)], int(skipped)


def _rating(path: Path, where: str, row: Mapping) -> Rating:
    run, uid, raw = (str(row.get(k) if row.get(k) is not None else "").strip() for k in REQUIRED)
    if not run or not uid:
        raise EvalkitError(f"{path} {where}: empty {'run' if not run else 'utterance_id'}")
    try:
        score = float(raw)
    except ValueError:
        score = math.nan
    if not math.isfinite(score):
        raise EvalkitError(f"{path} {where}: score {raw[:40]!r} is not a number")
    rater = row.get("rater")
    return Rating(run, uid, score, str(rater).strip() or None if rater is not None else None)


# --- which run a rating names ----------------------------------------------------------------


def names_of(run: LoadedRun, spec: str) -> set[str]:
    """Every name a rating's `run` cell may use for `run` (the module docstring's rules)."""
    names = {spec.strip(), run.summary.run_id.lower()}
    if run.mlflow_run_id:
        names.add(run.mlflow_run_id.lower())
    if run.source.startswith("folder:"):
        folder = Path(run.source[len("folder:"):])
        names |= {folder.name, str(folder)}
        if Path(spec).name:
            names.add(Path(spec).name)
    return {n.rstrip("/") or n for n in names if n}


def _matcher(runs: Sequence[LoadedRun], specs: Sequence[str]):
    by_name: dict[str, set[int]] = {}
    seen: dict[str, int] = {}
    for i, (run, spec) in enumerate(zip(runs, specs, strict=True)):
        if run.summary.run_id in seen:
            raise EvalkitError(f"{spec} and {specs[seen[run.summary.run_id]]} are the same run: give each run once")
        seen[run.summary.run_id] = i
        for name in names_of(run, spec):
            by_name.setdefault(name, set()).add(i)

    def match(name: str) -> int | None:
        key = name.strip().rstrip("/") or name
        found = by_name.get(key) or by_name.get(key.lower()) or set()
        if len(found) > 1:
            which = " and ".join(specs[i] for i in sorted(found))
            raise EvalkitError(f"ratings name run {name!r}, which fits {which}: name runs by their run ids instead")
        return next(iter(found), None)

    return match


# --- the result ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RatedRun:
    label: str
    source: str
    run_id: str
    mlflow_run_id: str | None
    tracking_uri: str | None
    experiment: str | None
    ratings: int  # ratings matched to one of its utterances
    utterances: int  # its utterances with at least one rating
    mean_score: float  # mean of its per-utterance mean ratings


@dataclass(frozen=True)
class Point:
    """One rated utterance of one run: the unit of the utterance level."""

    run: int  # index into Result.runs
    utterance_id: str
    score: float  # mean of its ratings
    ratings: int
    tags: tuple[str, ...]
    values: Mapping[str, float]


@dataclass(frozen=True)
class KeyCorrelation:
    key: str
    higher_is_better: bool | None
    utterance: Coefficients
    system: Coefficients

    @property
    def expected_sign(self) -> int | None:
        """+1 when higher is better, -1 when lower is better: the sign a metric that tracks
        higher-is-better ratings has; None without a direction."""
        return None if self.higher_is_better is None else 1 if self.higher_is_better else -1

    @property
    def agrees(self) -> bool | None:
        """Whether the utterance-level Spearman rho has the expected sign; None without a direction
        or when its interval includes 0 (no evidence of either sign)."""
        rho, sign = self.utterance.spearman, self.expected_sign
        if sign is None or not rho.excludes_zero:
            return None
        return (rho.value > 0) == (sign > 0)


@dataclass(frozen=True)
class Section:
    """The whole of the rated utterances (tag None) or those carrying one suite tag."""

    tag: str | None
    pairs: int  # rated (run, utterance) points
    systems: int  # runs with a rated point
    keys: tuple[KeyCorrelation, ...]  # ranked: highest |utterance-level Spearman| first, NaN last
    system_note: str | None  # why there is no system level


@dataclass(frozen=True)
class Matrix:
    keys: tuple[str, ...]
    rho: tuple[tuple[float, ...], ...]
    n: tuple[tuple[int, ...], ...]
    left_out: tuple[str, ...]  # keys with fewer than 3 finite values or one value only

    def redundant(self, threshold: float = 0.9) -> list[tuple[str, str, float]]:
        return [(a, self.keys[j], self.rho[i][j]) for i, a in enumerate(self.keys) for j in range(i + 1, len(self.keys))
                if math.isfinite(self.rho[i][j]) and abs(self.rho[i][j]) >= threshold]


@dataclass(frozen=True)
class Result:
    runs: tuple[RatedRun, ...]
    ratings_source: str
    ratings_sha256: str
    ratings: int  # matched to a rated point
    raters: int
    points: tuple[Point, ...]
    directions: Mapping[str, bool | None]  # every key, in the runs' order
    overall: Section
    by_tag: tuple[Section, ...]
    matrix: Matrix
    notes: tuple[str, ...]
    resamples: int
    seed: int
    confidence: float


def keys_of(runs: Sequence[LoadedRun]) -> dict[str, bool | None]:
    """Every compared value key of the runs, in order, with the direction all of them recorded
    (None when they disagree or none has one)."""
    out: dict[str, bool | None] = {}
    seen: dict[str, set] = {}
    for run in runs:
        for key, (_, higher) in run.summary.value_keys().items():
            seen.setdefault(key, set()).add(higher)
            out[key] = higher
    return {k: (next(iter(seen[k])) if len(seen[k]) == 1 else None) for k in out}


def correlate(runs: Sequence[LoadedRun], specs: Sequence[str], ratings: Ratings, by_tag: bool = False,
              resamples: int = RESAMPLES, seed: int = SEED) -> Result:
    """The correlations of `ratings` with the metric values of `runs` (given as `specs`)."""
    match = _matcher(runs, specs)
    rows = [{r.utterance_id: r for r in run.rows} for run in runs]
    scores: dict[tuple[int, str], list[float]] = {}
    raters: set[str] = set()
    unknown_runs: Counter[str] = Counter()
    unknown_ids: Counter[str] = Counter()
    for rating in ratings.ratings:
        i = match(rating.run)
        if i is None:
            unknown_runs[rating.run] += 1
        elif rating.utterance_id not in rows[i]:
            unknown_ids[specs[i]] += 1
        else:
            scores.setdefault((i, rating.utterance_id), []).append(rating.score)
            if rating.rater:
                raters.add(rating.rater)
    if not scores:
        names = ", ".join(repr(n) for n, _ in unknown_runs.most_common(3))
        raise EvalkitError(f"{ratings.source}: no rating names one of the runs given and an utterance it has (the "
                           f"ratings name {names or 'only utterances the runs lack'}; a run is named by the RUN "
                           "given, its run id, its MLflow run id or its folder's name)")
    points = tuple(_point(i, uid, s, rows[i][uid]) for (i, uid), s in sorted(scores.items(), key=_order(runs)))
    directions = keys_of(runs)
    notes = _notes(ratings, unknown_runs, unknown_ids, points, runs, specs)
    overall = section(None, points, directions, resamples, seed)
    tags = list(dict.fromkeys(t for p in points for t in p.tags)) if by_tag else []
    if by_tag and not tags:
        raise EvalkitError("--by tag: none of the rated utterances carries a suite tag")
    by = tuple(section(t, tuple(p for p in points if t in p.tags), directions, resamples, seed) for t in tags)
    rated = tuple(_rated(run, spec, i, points) for i, (run, spec) in enumerate(zip(runs, specs, strict=True)))
    return Result(rated, ratings.source, ratings.sha256, sum(p.ratings for p in points), len(raters), points,
                  directions, overall, by, matrix(runs, directions), tuple(notes), resamples, seed, CONFIDENCE)


def _order(runs: Sequence[LoadedRun]):
    position = [{r.utterance_id: n for n, r in enumerate(run.rows)} for run in runs]
    return lambda item: (item[0][0], position[item[0][0]][item[0][1]])


def _point(i: int, uid: str, scores: list[float], row: Row) -> Point:
    return Point(i, uid, float(np.mean(scores)), len(scores), row.tags, dict(row.values))


def _rated(run: LoadedRun, spec: str, i: int, points: Sequence[Point]) -> RatedRun:
    mine = [p for p in points if p.run == i]
    t = run.summary.tracking
    return RatedRun(run.label, spec, run.summary.run_id, run.mlflow_run_id, run.tracking_uri or t.uri,
                    t.experiment, sum(p.ratings for p in mine), len(mine),
                    float(np.mean([p.score for p in mine])) if mine else math.nan)


def _notes(ratings: Ratings, unknown_runs: Counter[str], unknown_ids: Counter[str], points: Sequence[Point],
           runs: Sequence[LoadedRun], specs: Sequence[str]) -> list[str]:
    notes = []
    if ratings.left_out_ab:
        notes.append(f"{ratings.left_out_ab} A/B rating(s) left out: a preference is not a score of one clip")
    for name, n in unknown_runs.most_common():
        notes.append(f"{n} rating(s) of run {name!r} left out: it is none of the runs given")
    for spec, n in unknown_ids.items():
        notes.append(f"{n} rating(s) of {spec} left out: utterance ids the run does not have")
    failed = sum(1 for p in points if not any(math.isfinite(v) for v in p.values.values()))
    if failed:
        notes.append(f"{failed} rated utterance(s) have no metric value (their synthesis failed): not in any pair")
    for i, spec in enumerate(specs):
        if not any(p.run == i for p in points):
            notes.append(f"{spec}: no rating matches it")
    return notes


def section(tag: str | None, points: Sequence[Point], directions: Mapping[str, bool | None],
            resamples: int = RESAMPLES, seed: int = SEED) -> Section:
    systems = len({p.run for p in points})
    found = []
    for key, higher in directions.items():
        have = [p for p in points if math.isfinite(p.values.get(key, math.nan))]
        x = [p.values[key] for p in have]
        y = [p.score for p in have]
        ids = [p.utterance_id for p in have]
        utterance = correlation.paired(x, y, ids, resamples, seed)
        if len({p.run for p in have}) >= MIN_SYSTEMS:
            system = correlation.grouped(x, y, [p.run for p in have], ids, resamples, seed)
        else:
            system = Coefficients(len({p.run for p in have}), correlation.NAN, correlation.NAN, correlation.NAN,
                                  f"system level needs at least {MIN_SYSTEMS} rated systems")
        found.append(KeyCorrelation(key, higher, utterance, system))
    ranked = sorted(found, key=lambda k: -abs(k.utterance.spearman.value) if math.isfinite(k.utterance.spearman.value)
                    else math.inf)
    why = None if systems >= MIN_SYSTEMS else (f"{systems} rated system{'s' if systems != 1 else ''}: the system "
                                               f"level needs at least {MIN_SYSTEMS}")
    return Section(tag, len(points), systems, tuple(ranked), why)


def matrix(runs: Sequence[LoadedRun], directions: Mapping[str, bool | None]) -> Matrix:
    rows = [r for run in runs for r in run.rows]
    columns = {k: [r.value(k) for r in rows] for k in directions}
    kept = [k for k, v in columns.items()
            if np.isfinite(v).sum() >= correlation.MIN_PAIRS and np.ptp(np.asarray(v)[np.isfinite(v)]) > 0]
    rho, n = correlation.spearman_matrix([columns[k] for k in kept])
    return Matrix(tuple(kept), tuple(tuple(float(v) for v in row) for row in rho),
                  tuple(tuple(int(v) for v in row) for row in n), tuple(k for k in columns if k not in kept))
