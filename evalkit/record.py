"""The local record of a run: the folder every evaluation writes before anything is uploaded.

    OUT/summary.json        provenance, resolved config, aggregates, tracking status
    OUT/utterances.jsonl    one row per utterance (id, text, transcript, every metric, failure)
    OUT/utterances.csv      the same table for spreadsheets
    OUT/audio/<id>.wav      the synthesized clips (16-bit PCM, the exact samples that were scored)

While a run is in progress the folder holds instead:

    OUT/run.json            the resolved configuration, written first (what --resume reruns)
    OUT/progress.jsonl      finished rows, appended and synced chunk by chunk

so a run killed at any moment loses at most the chunks in flight. Tracking (MLflow) reads
only the finished folder, so a run whose upload failed can be sent later.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import EvalkitError, first_line
from .types import Row
from .untrusted import inside

SUMMARY = "summary.json"
TABLE_JSONL = "utterances.jsonl"
TABLE_CSV = "utterances.csv"
RUN = "run.json"
PROGRESS = "progress.jsonl"


@dataclass(frozen=True)
class SuiteInfo:
    name: str
    version: str
    language: str
    digest: str
    source: str  # where it was loaded from at run time
    utterances: int  # how many were evaluated (after --limit)


@dataclass(frozen=True)
class MetricInfo:
    """What a metric declared when the run was made: enough to compare, aggregate and display
    its values without loading the metric again."""

    version: str
    sample_rate: int
    higher_is_better: Mapping[str, bool | None]  # every value key, with its direction
    options: Mapping[str, Any] = field(default_factory=dict)
    counts: tuple[str, ...] = ()  # keys summed, not averaged
    corpus: Mapping[str, tuple[tuple[str, ...], str]] = field(default_factory=dict)
    alignments: tuple[str, ...] = ()  # text columns holding an inline edit alignment
    headline: str | None = None  # the key a report ranks utterances by, unless told otherwise

    def averaged(self) -> dict[str, bool | None]:
        """Value keys compared utterance by utterance (counts are only summed)."""
        return {k: v for k, v in self.higher_is_better.items() if k not in self.counts}


@dataclass(frozen=True)
class ReferenceInfo:
    """The reference audio a run was scored against: `kind` none, suite, folder (an absolute
    path) or mlflow (a run id), and the digest of every (utterance id, wav bytes) pair."""

    kind: str = "none"
    location: str = ""
    digest: str = ""

    @property
    def label(self) -> str:
        return "none" if self.kind == "none" else f"{self.kind}:{self.location}"


@dataclass(frozen=True)
class TrackingInfo:
    uri: str | None = None
    experiment: str | None = None
    run_id: str | None = None  # the MLflow run id, once logged


@dataclass(frozen=True)
class RunRecord:
    """summary.json: everything about a finished run except its rows. `run_id` is evalkit's own
    id (also the MLflow tag evalkit.run_id); the MLflow run id is `tracking.run_id`."""

    run_id: str
    run_name: str
    evalkit_version: str
    started_unix: float
    finished_unix: float
    suite: SuiteInfo
    model: Mapping[str, Any]  # the adapter's provenance
    adapter: str
    asr: Mapping[str, Any]  # the ASR backend's provenance; empty when nothing was transcribed
    metrics: Mapping[str, MetricInfo]
    params: Mapping[str, Any]
    tags: Mapping[str, str]
    aggregates: Mapping[str, float]
    by_tag: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # suite tag -> its aggregates
    step: int | None = None  # the training step of the checkpoint (`evalkit run --step`)
    tracking: TrackingInfo = TrackingInfo()
    reference: ReferenceInfo = ReferenceInfo()
    cache: Mapping[str, int] = field(default_factory=dict)
    resumed_utterances: int = 0
    broken_stages: tuple[str, ...] = ()

    @property
    def wall_seconds(self) -> float:
        return self.finished_unix - self.started_unix

    @property
    def model_name(self) -> str:
        return str(self.params.get("model", "?"))

    def value_keys(self) -> dict[str, tuple[str, bool | None]]:
        """key -> (metric name, direction) for every per-utterance key its metrics compare."""
        return {k: (name, higher) for name, info in self.metrics.items() for k, higher in info.averaged().items()}

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["wall_seconds"] = self.wall_seconds
        for info in d["metrics"].values():
            info["corpus"] = {k: [list(num), den] for k, (num, den) in info["corpus"].items()}
        return jsonable(d)

    @classmethod
    def from_json(cls, d: Any) -> RunRecord:
        """Reads summary.json, also from run folders written before a field existed; anything
        that is not a run record raises ValueError (callers say which folder)."""
        if not isinstance(d, dict):
            raise ValueError("not an object")
        suite = d["suite"]
        tracking = d.get("tracking") or {}
        params = dict(d.get("params") or {})
        tags = {str(k): str(v) for k, v in (d.get("tags") or {}).items()}
        reference = d.get("reference") or _reference_from_label(str(params.get("reference") or "none"),
                                                               tags.get("evalkit.reference_digest", ""))
        aggregates = {str(k): math.nan if v is None else float(v) for k, v in (d.get("aggregates") or {}).items()}
        return cls(
            run_id=str(d["run_id"]), run_name=str(d.get("run_name") or ""),
            evalkit_version=str(d.get("evalkit_version") or ""),
            started_unix=float(d.get("started_unix") or 0.0), finished_unix=float(d.get("finished_unix") or 0.0),
            suite=SuiteInfo(str(suite["name"]), str(suite.get("version") or ""), str(suite.get("language") or ""),
                            str(suite.get("digest") or ""), str(suite.get("source") or ""),
                            int(suite.get("utterances") or 0)),
            model=dict(d.get("model") or {}), adapter=str(d.get("adapter") or ""), asr=dict(d.get("asr") or {}),
            metrics={str(n): _metric_info(i, aggregates) for n, i in (d.get("metrics") or {}).items()},
            params=params, tags=tags,
            aggregates=aggregates,
            by_tag={str(t): {str(k): math.nan if v is None else float(v) for k, v in agg.items()}
                    for t, agg in (d.get("by_tag") or {}).items()},
            step=None if d.get("step") is None else int(d["step"]),
            tracking=TrackingInfo(tracking.get("uri"), tracking.get("experiment"), tracking.get("run_id")),
            reference=ReferenceInfo(str(reference.get("kind") or "none"), str(reference.get("location") or ""),
                                    str(reference.get("digest") or "")),
            cache={str(k): int(v) for k, v in (d.get("cache") or {}).items()},
            resumed_utterances=int(d.get("resumed_utterances") or 0),
            broken_stages=tuple(str(b) for b in d.get("broken_stages") or ()),
        )


def _metric_info(d: Any, aggregates: Mapping[str, float]) -> MetricInfo:
    higher = d.get("higher_is_better") or {}
    counts = d.get("counts")
    if counts is None:  # recorded from 0.1.0 on; before, a count showed only as a sum without a mean
        counts = [k for k in higher if f"{k}/sum" in aggregates and f"{k}/mean" not in aggregates]
    return MetricInfo(
        version=str(d.get("version") or ""), sample_rate=int(d.get("sample_rate") or 0),
        higher_is_better={str(k): None if v is None else bool(v) for k, v in higher.items()},
        options=dict(d.get("options") or {}), counts=tuple(str(c) for c in counts),
        corpus={str(k): (tuple(str(n) for n in v[0]), str(v[1])) for k, v in (d.get("corpus") or {}).items()},
        alignments=tuple(str(a) for a in d.get("alignments") or ()),
        headline=None if d.get("headline") is None else str(d["headline"]),
    )


def _reference_from_label(label: str, digest: str) -> dict:
    # Run folders from before ReferenceInfo recorded only "kind:location".
    kind, _, location = label.partition(":")
    return {"kind": kind if location else "none", "location": location, "digest": digest}


def write(out_dir: Path, summary: RunRecord, rows: Sequence[Row]) -> None:
    flat = [r.csv() for r in rows]
    columns: list[str] = []
    for r in flat:
        columns.extend(k for k in r if k not in columns)
    _atomic(out_dir / TABLE_JSONL, "".join(_line(r) for r in rows))
    with replacing(out_dir / TABLE_CSV, out_dir / (TABLE_CSV + ".tmp")) as tmp, \
            open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(flat)
    write_summary(out_dir, summary)


def write_summary(out_dir: Path, summary: RunRecord) -> None:
    _atomic(out_dir / SUMMARY, json.dumps(summary.to_json(), ensure_ascii=False, indent=2) + "\n")


_UNREADABLE = (OSError, ValueError, KeyError, TypeError, IndexError)  # ValueError: JSON too


def load_summary(out_dir: Path) -> RunRecord:
    """A finished run folder's record alone (listing many runs needs no rows)."""
    try:
        return RunRecord.from_json(json.loads((out_dir / SUMMARY).read_text(encoding="utf-8")))
    except _UNREADABLE as exc:
        raise _not_a_run(out_dir, exc) from None


def load(out_dir: Path) -> tuple[RunRecord, list[Row]]:
    """A finished run folder as its typed record and rows."""
    summary = load_summary(out_dir)
    try:
        rows = [Row.from_json(json.loads(line))
                for line in (out_dir / TABLE_JSONL).read_text(encoding="utf-8").splitlines() if line]
    except _UNREADABLE as exc:
        raise _not_a_run(out_dir, exc) from None
    return summary, rows


def _not_a_run(out_dir: Path, exc: BaseException) -> EvalkitError:
    return EvalkitError(f"{out_dir}: not a finished evalkit run folder ({first_line(exc, 200)})")


def write_run(out_dir: Path, run: dict) -> None:
    _atomic(out_dir / RUN, json.dumps(jsonable(run), ensure_ascii=False, indent=2) + "\n")


def read_run(out_dir: Path) -> dict | None:
    try:
        return json.loads((out_dir / RUN).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise EvalkitError(f"{out_dir / RUN}: unreadable ({exc})") from None


def append_rows(out_dir: Path, rows: Sequence[Row]) -> None:
    """Append finished rows and sync them to disk before returning: they survive a kill."""
    text = "".join(_line(r) for r in rows)
    with open(out_dir / PROGRESS, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def read_progress(out_dir: Path) -> list[Row]:
    """Rows finished so far; a last line cut short by a kill is ignored (its chunk is redone)."""
    try:
        lines = (out_dir / PROGRESS).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    rows = []
    for line in lines:
        try:
            rows.append(Row.from_json(_progress_row(json.loads(line))))
        except ValueError:  # JSONDecodeError included
            break
    return rows


def audio_file(out_dir: Path, row: Row) -> Path | None:
    """The clip a finished row names, which must be the run's own audio/<name>.wav: a row edited
    to point anywhere else (an absolute path, '..', a symlink out of audio/) is refused."""
    uid, rel = row.utterance_id, row.audio_path
    if not rel:
        return None
    if Path(str(rel)).parent != Path("audio") or (out_dir / "audio").is_symlink():
        raise EvalkitError(f"{out_dir}: utterance {uid!r} names audio {rel!r}, not a file in its audio/ folder")
    return inside(out_dir / "audio", Path(str(rel)).name, f"{out_dir}: audio of utterance {uid!r}")


def finish(out_dir: Path) -> None:
    """The final tables supersede the progress log."""
    (out_dir / PROGRESS).unlink(missing_ok=True)


def _progress_row(d):
    # progress.jsonl of a run interrupted under evalkit 0.1.0 nested values and texts.
    if isinstance(d, dict) and "utterance_id" in d:
        return {"id": d["utterance_id"], "text": d.get("text"), "tags": d.get("tags"), **(d.get("texts") or {}),
                **(d.get("values") or {}), "audio": d.get("audio_path"), "failure": d.get("failure"),
                "notes": d.get("notes")}
    return d


def _line(r: Row) -> str:
    return json.dumps(r.to_json(), ensure_ascii=False) + "\n"


def _atomic(path: Path, text: str) -> None:
    with replacing(path, path.with_name(path.name + ".tmp")) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextmanager
def replacing(path: Path, tmp: Path) -> Iterator[Path]:
    """Yields `tmp` to write, then renames it over `path`: a full disk leaves the old file whole
    and no half-written one beside it (the OSError still propagates)."""
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def jsonable(obj):
    """NaN and infinity are not JSON: write null, so every reader (MLflow, pandas, browsers) agrees.
    The run record and the comparison report both write through this."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj
