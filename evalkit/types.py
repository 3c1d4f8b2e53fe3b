"""Frozen dataclasses that cross module boundaries."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

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


@dataclass(frozen=True)
class Suite:
    name: str
    version: str
    language: str
    description: str
    utterances: tuple[Utterance, ...]
    digest: str
    source: str  # where it was loaded from, for messages only

    def limited(self, limit: int | None) -> "Suite":
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


@dataclass(frozen=True)
class Row:
    """One utterance of a finished run: the unit of the per-utterance table."""

    utterance_id: str
    text: str
    tags: tuple[str, ...]
    values: Mapping[str, float] = field(default_factory=dict)
    texts: Mapping[str, str] = field(default_factory=dict)  # transcript, normalized forms
    audio_path: str | None = None
    failure: str | None = None
    notes: tuple[str, ...] = ()

    def flat(self) -> dict:
        out: dict = {"id": self.utterance_id, "text": self.text, "tags": list(self.tags)}
        out.update(self.texts)
        out.update(self.values)
        out["audio"] = self.audio_path
        out["failure"] = self.failure
        out["notes"] = "; ".join(self.notes) if self.notes else None
        return out
