"""Frozen dataclasses that cross module boundaries."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True, eq=False)
class Audio:
    """Mono float32 samples in [-1, 1] (not enforced: checks report violations)."""

    samples: np.ndarray
    sample_rate: int

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate if self.sample_rate else 0.0


@dataclass(frozen=True)
class Utterance:
    id: str
    text: str
    tags: tuple[str, ...] = ()
    speaker: str | None = None
    reference: Path | None = None
    speaker_prompt: Path | None = None  # a clip of the target speaker (suite header `speakers:`)
    # Whole-sentence spoken forms the suite accepts besides the readings evalkit derives from
    # `text` (evalkit.korean_readings): Korean CER is taken against the closest of all.
    readings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Suite:
    name: str
    version: str
    language: str
    description: str
    utterances: tuple[Utterance, ...]
    digest: str
    source: str  # where it was loaded from, for messages only

    def limited(self, limit: int | None) -> Suite:
        """The first `limit` utterances; the digest stays the full suite's (a subset is named by params)."""
        if limit is None or limit >= len(self.utterances):
            return self
        return Suite(self.name, self.version, self.language, self.description,
                     self.utterances[:limit], self.digest, self.source)


@dataclass(frozen=True)
class SynthesisRequest:
    utterance_id: str
    text: str
    language: str
    speaker: str | None = None
    seed: int = 0


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str


@dataclass(frozen=True, eq=False)
class ScoringItem:
    """Everything a metric may read about one utterance. Text fields are already normalized."""

    utterance: Utterance
    language: str
    audio: Audio
    transcript: Transcript | None = None
    reference_text_norm: str | None = None
    transcript_norm: str | None = None
    reference_audio: Audio | None = None


@dataclass(frozen=True)
class Score:
    """One utterance's values from one metric; a value that cannot be computed is NaN with a note."""

    values: Mapping[str, float]
    note: str | None = None
    texts: Mapping[str, str] = field(default_factory=dict)  # per-utterance strings for the table


# Row columns evalkit itself writes: no metric value or text key may take one of these names, or
# the flat table (CSV, MLflow) could not tell them apart (checked when metrics are loaded).
RESERVED_COLUMNS = ("id", "text", "tags", "audio", "failure", "notes")


@dataclass(frozen=True)
class Row:
    """One utterance of a finished run: the unit of the per-utterance table.

    Its JSON form (`to_json`, one object per line of utterances.jsonl and progress.jsonl) is flat,
    so a line reads as a table row: the reserved columns, then each text and each value under its
    own key (a value that could not be computed is null). `from_json` reads it back exactly: a
    string is a text, a number or null a value.
    """

    utterance_id: str
    text: str
    tags: tuple[str, ...]
    values: Mapping[str, float] = field(default_factory=dict)
    texts: Mapping[str, str] = field(default_factory=dict)  # transcript, normalized forms
    audio_path: str | None = None
    failure: str | None = None
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict:
        out: dict = {"id": self.utterance_id, "text": self.text, "tags": list(self.tags)}
        out.update(self.texts)
        out.update({k: v if math.isfinite(v) else None for k, v in self.values.items()})
        out["audio"] = self.audio_path
        out["failure"] = self.failure
        out["notes"] = list(self.notes)
        return out

    @classmethod
    def from_json(cls, d: Mapping) -> Row:
        """The inverse of to_json; also reads run folders written before notes were a list."""
        if not isinstance(d, Mapping) or not isinstance(d.get("id"), str):
            raise ValueError("a row is an object with a string id")
        notes = d.get("notes") or ()
        if isinstance(notes, str):
            notes = notes.split("; ")
        values: dict[str, float] = {}
        texts: dict[str, str] = {}
        for k, v in d.items():
            if k in RESERVED_COLUMNS:
                continue
            if isinstance(v, str):
                texts[k] = v
            elif v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)):
                values[k] = math.nan if v is None else float(v)
        return cls(d["id"], str(d.get("text") or ""), tuple(str(t) for t in d.get("tags") or ()), values, texts,
                   d.get("audio"), d.get("failure"), tuple(str(n) for n in notes))

    def value(self, key: str) -> float:
        """The value of `key`, NaN when absent or not computed."""
        return self.values.get(key, math.nan)

    def csv(self) -> dict:
        """The row for a spreadsheet: lists joined into one cell."""
        out = self.to_json()
        out["tags"] = ",".join(self.tags)
        out["notes"] = "; ".join(self.notes) if self.notes else None
        return out
