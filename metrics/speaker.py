"""Speaker similarity: does the output sound like the reference speaker?

Metric card
- spk_sim: cosine similarity of GE2E speaker embeddings (resemblyzer's VoiceEncoder, weights
  shipped inside the package) of the output and the reference, in [-1, 1]; resemblyzer's own
  preprocessing (volume normalization, webrtcvad silence trimming) is applied to both.
Direction: higher is better. Needs: reference audio (the same utterance by the target speaker),
or else the speaker's prompt clip from the suite header (`speakers:`; any clip of the speaker).
Known answers: identical clip -> 1.0; the same voice on another sentence scores above a
different voice on the same sentence. Clips with under 0.5 s of speech after trimming: NaN
with a note.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from evalkit.protocols import Metric
from evalkit.types import Score, ScoringItem

MIN_SPEECH_SECONDS = 0.5


@lru_cache(maxsize=1)
def _encoder():
    from resemblyzer import VoiceEncoder

    return VoiceEncoder(device="cpu", verbose=False)


class SpeakerSimilarity(Metric):
    name = "spk_sim"
    version = "1"
    sample_rate = 16000
    needs_reference = True
    process_safe = True  # scores in the metric worker pool (evalkit.workers)
    accepts_speaker_prompt = True  # any clip of the target speaker will do, not only this sentence
    higher_is_better = {"spk_sim": True}
    headline = "spk_sim"

    def load(self) -> None:
        _encoder()

    def score(self, items: Sequence[ScoringItem]) -> list[Score]:
        out = []
        for item in items:
            if item.reference_audio is None:
                out.append(Score({"spk_sim": math.nan}, "spk_sim: no reference audio"))
                continue
            a, note = embed(item.audio.samples)
            b, ref_note = embed(item.reference_audio.samples)
            if a is None or b is None:
                out.append(Score({"spk_sim": math.nan}, note or ref_note))
                continue
            out.append(Score({"spk_sim": float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))}))
        return out


def embed(samples: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    from resemblyzer import preprocess_wav

    wav = preprocess_wav(samples.astype(np.float32), source_sr=16000)
    if len(wav) < MIN_SPEECH_SECONDS * 16000:
        return None, f"spk_sim: under {MIN_SPEECH_SECONDS} s of speech after trimming"
    return _encoder().embed_utterance(wav), None
