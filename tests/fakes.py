"""Stand-ins a unit test isolates the core with (never the proof that a feature works)."""

from __future__ import annotations

import numpy as np

from evalkit.types import Audio


class Tones:
    """A TTS adapter: a 0.5 s tone per sentence, its amplitude set by the text's length, so
    different sentences give different peaks (and different cache keys)."""

    name = "tones"
    batch_size = 4

    def synthesize(self, requests):
        t = np.arange(8000, dtype=np.float32) / 16000
        return [Audio((0.01 * len(r.text) * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000) for r in requests]

    def close(self) -> None:
        pass
