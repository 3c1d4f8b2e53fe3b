"""The local record of a run: the folder every evaluation writes before anything is uploaded.

    OUT/summary.json        provenance, resolved config, aggregates, tracking status
    OUT/utterances.jsonl    one row per utterance (id, text, transcript, every metric, failure)
    OUT/utterances.csv      the same table for spreadsheets
    OUT/audio/<id>.wav      the synthesized clips (16-bit PCM, the exact samples that were scored)

Tracking (MLflow) reads only this folder, so a run whose upload failed can be sent later.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Sequence

from .errors import EvalkitError
from .types import Row

SUMMARY = "summary.json"
TABLE_JSONL = "utterances.jsonl"
TABLE_CSV = "utterances.csv"


def write(out_dir: Path, summary: dict, rows: Sequence[Row]) -> None:
    flat = [r.flat() for r in rows]
    columns: list[str] = []
    for r in flat:
        columns.extend(k for k in r if k not in columns)
    _atomic(out_dir / TABLE_JSONL, "".join(json.dumps(_jsonable(r), ensure_ascii=False) + "\n" for r in flat))
    tmp = out_dir / (TABLE_CSV + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: ",".join(v) if isinstance(v, list) else v for k, v in r.items()} for r in flat)
    os.replace(tmp, out_dir / TABLE_CSV)
    write_summary(out_dir, summary)


def write_summary(out_dir: Path, summary: dict) -> None:
    _atomic(out_dir / SUMMARY, json.dumps(_jsonable(summary), ensure_ascii=False, indent=2) + "\n")


def read(out_dir: Path) -> tuple[dict, list[dict]]:
    try:
        summary = json.loads((out_dir / SUMMARY).read_text(encoding="utf-8"))
        rows = [json.loads(line) for line in (out_dir / TABLE_JSONL).read_text(encoding="utf-8").splitlines() if line]
    except (OSError, json.JSONDecodeError) as exc:
        raise EvalkitError(f"{out_dir}: not a finished evalkit run folder ({exc})") from None
    return summary, rows


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _jsonable(obj):
    """NaN is not JSON: write null, so every reader (MLflow, pandas, browsers) agrees."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj
