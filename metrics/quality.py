"""Reference-free quality: DNSMOS (Microsoft's deep noise suppression MOS predictor).

Metric card
- dnsmos_sig, dnsmos_bak, dnsmos_ovrl: ITU-T P.835 speech signal, background and overall
  quality predicted by DNSMOS (speechmos's bundled ONNX models, non-personalized polynomial
  fit), on a 1-5 scale.
- dnsmos_p808: the P.808 overall MOS model, 1-5.
Computation: exactly `speechmos.dnsmos.run(x, 16000)`: the clip is repeated to at least 9.01 s,
scored in 9.01 s windows every 1 s and the window scores averaged. Input is resampled to 16 kHz
by the core and clipped to [-1, 1] (speechmos refuses anything outside).
Direction: higher is better. Needs: audio only. Known answers: clean speech scores well above
the same speech with noise added at 5 dB SNR; a clip shorter than 0.25 s is NaN with a note.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from evalkit.types import Score, ScoringItem

MIN_SECONDS = 0.25


class DNSMOS:
    name = "dnsmos"
    version = "1"
    sample_rate = 16000
    needs_transcript = False
    needs_reference = False
    higher_is_better = {"dnsmos_sig": True, "dnsmos_bak": True, "dnsmos_ovrl": True, "dnsmos_p808": True}

    def score(self, items: Sequence[ScoringItem]) -> list[Score]:
        from speechmos import dnsmos  # loads onnxruntime sessions on first use

        out = []
        for item in items:
            x = item.audio.samples
            if len(x) < MIN_SECONDS * self.sample_rate:
                out.append(Score(dict.fromkeys(self.higher_is_better, math.nan),
                                 f"dnsmos: clip shorter than {MIN_SECONDS} s"))
                continue
            r = dnsmos.run(np.clip(x, -1.0, 1.0).astype(np.float32), self.sample_rate)
            out.append(Score({
                "dnsmos_sig": float(r["sig_mos"]),
                "dnsmos_bak": float(r["bak_mos"]),
                "dnsmos_ovrl": float(r["ovrl_mos"]),
                "dnsmos_p808": float(r["p808_mos"]),
            }))
        return out
