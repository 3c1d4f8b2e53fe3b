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
import json
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from .errors import EvalkitError
from .types import Row
from .untrusted import inside

SUMMARY = "summary.json"
TABLE_JSONL = "utterances.jsonl"
TABLE_CSV = "utterances.csv"
RUN = "run.json"
PROGRESS = "progress.jsonl"


def write(out_dir: Path, summary: dict, rows: Sequence[Row]) -> None:
    flat = [r.flat() for r in rows]
    columns: list[str] = []
    for r in flat:
        columns.extend(k for k in r if k not in columns)
    _atomic(out_dir / TABLE_JSONL, "".join(json.dumps(jsonable(r), ensure_ascii=False) + "\n" for r in flat))
    with replacing(out_dir / TABLE_CSV, out_dir / (TABLE_CSV + ".tmp")) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows({k: ",".join(v) if isinstance(v, list) else v for k, v in r.items()} for r in flat)
    write_summary(out_dir, summary)


def write_summary(out_dir: Path, summary: dict) -> None:
    _atomic(out_dir / SUMMARY, json.dumps(jsonable(summary), ensure_ascii=False, indent=2) + "\n")


def read(out_dir: Path) -> tuple[dict, list[dict]]:
    try:
        summary = json.loads((out_dir / SUMMARY).read_text(encoding="utf-8"))
        rows = [json.loads(line) for line in (out_dir / TABLE_JSONL).read_text(encoding="utf-8").splitlines() if line]
    except (OSError, json.JSONDecodeError) as exc:
        raise EvalkitError(f"{out_dir}: not a finished evalkit run folder ({exc})") from None
    return summary, rows


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
    text = "".join(json.dumps(jsonable(_row_dict(r)), ensure_ascii=False) + "\n" for r in rows)
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
            d = json.loads(line)
        except json.JSONDecodeError:
            break
        rows.append(Row(
            utterance_id=d["utterance_id"], text=d["text"], tags=tuple(d["tags"]),
            values={k: math.nan if v is None else v for k, v in d["values"].items()},
            texts=d["texts"], audio_path=d["audio_path"], failure=d["failure"], notes=tuple(d["notes"]),
        ))
    return rows


def audio_file(out_dir: Path, row: dict) -> Path | None:
    """The clip a finished row names, which must be the run's own audio/<name>.wav: a row edited
    to point anywhere else (an absolute path, '..', a symlink out of audio/) is refused."""
    rel = row.get("audio")
    if not rel:
        return None
    if Path(str(rel)).parent != Path("audio") or (out_dir / "audio").is_symlink():
        raise EvalkitError(f"{out_dir}: utterance {row.get('id')!r} names audio {rel!r}, not a file in its audio/ folder")
    return inside(out_dir / "audio", Path(str(rel)).name, f"{out_dir}: audio of utterance {row.get('id')!r}")


def finish(out_dir: Path) -> None:
    """The final tables supersede the progress log."""
    (out_dir / PROGRESS).unlink(missing_ok=True)


def _row_dict(r: Row) -> dict:
    return {"utterance_id": r.utterance_id, "text": r.text, "tags": list(r.tags), "values": dict(r.values),
            "texts": dict(r.texts), "audio_path": r.audio_path, "failure": r.failure, "notes": list(r.notes)}


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
