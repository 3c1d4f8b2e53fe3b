"""Reference-based spectral alignment: mel-spectrogram DTW distance and mel-cepstral distortion.

Both trim leading and trailing silence from output and reference with one policy and align
them with DTW (_dtw.py holds the analysis rate, features, trimming and DTW, and why).

Metric card: MelDTW
- mel_dtw: D / (N + M), where D is the accumulated symmetric1 DTW cost between the 80-band
  natural-log mel magnitude frames (16 kHz, 10 ms hop) of the trimmed reference (N frames)
  and output (M frames), with Euclidean frame distances. Unit: log-mel Euclidean distance
  (nats) per frame of both clips; along a one-to-one path it is half the mean frame distance.
- duration_ratio: trimmed output duration / trimmed reference duration. 1 is ideal, above 1
  the output is slower. It has no direction (`higher_is_better` None): neither way is better,
  so compare shows it as changed or same and gates never count it as a regression.
Parameters: dtw "exact" (librosa, default) or "fast" (fastdtw), radius (fast only, 10).
Direction: mel_dtw lower is better, duration_ratio none. Needs: reference audio (16 kHz mono). Known answers
(tests/test_signal_metrics.py, measured): identical clip -> 0 and 1.0; the same espeak
sentence at 150 vs 175 wpm -> 1.9 (ratio 1.18) against 9.6 for another sentence; a 0.85x
phase-vocoder stretch of Piper -> 4.4 (ratio 1.19) against 8.6 for another sentence.
Missing reference, silence (peak below -80 dBFS), a clip under 0.1 s, also after trimming ->
NaN with a note.

Metric card: MCD
- mcd: mel-cepstral distortion in dB, the mean over the DTW path of
  10/ln10 * sqrt(2 * sum_{d=1..D} (c_d - c'_d)^2), c0 excluded (c0 is the frame's log gain:
  recording level is not spectral distortion).
Analysis: WORLD (pyworld) F0 by dio + stonemask (60-500 Hz; CheapTrick only sizes its window
from it) and CheapTrick envelope (FFT 1024 at 16 kHz) every 5 ms, converted to a mel-cepstrum
exactly as pysptk.sp2mc does (real cepstrum of log|H|, all-pass warped by alpha), with
ESPnet's order and alpha per sample rate (ORDER_ALPHA): 16 kHz 23 / 0.42, i.e. 24
coefficients with c0, 23 compared. The DTW path is found on the same c1..cD vectors, so the
alignment minimises the distance being averaged. Exact DTW holds two N x M float64 matrices
(about 64 MB for two 10 s clips at 5 ms): use dtw="fast" for long clips.
Parameters: dtw, radius as above; sample_rate (a key of ORDER_ALPHA, default 16000).
Direction: lower is better. Needs: reference audio. Known answers (measured): identical clip
-> 0; the same espeak sentence at 150 vs 175 wpm -> 2.3 dB, another sentence -> 11.4 dB;
unscorable pairs -> NaN with a note as for MelDTW.
Cross-check: pymcd 0.2.1 is reproduced exactly from its settings (tests): 22.05 kHz, 512-point
WORLD at 5 ms, 13th order, alpha 0.65, c0 kept, fastdtw radius 1, and pysptk.mcep(itype=3)
fed WORLD's power spectrum P as if it were an amplitude, which squares it and adds eps 1e-8:
its cepstrum is that of log(P^2 + 1e-8), twice ours where the envelope is loud and a floor
where it is quiet (a level-dependent distortion).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from evalkit.types import Score

from ._dtw import F0_FLOOR, SAMPLE_RATE, ReferenceComparison, align, check_dtw, mel_alignment, track_f0

ORDER_ALPHA = {16000: (23, 0.42), 22050: (34, 0.45), 24000: (34, 0.46), 44100: (39, 0.53), 48000: (39, 0.55)}
MCD_FRAME_PERIOD_MS = 5.0  # WORLD default; at 10 ms DTW matches transitions worse: +0.6 dB on a rate change
MCD_DB = 10.0 / math.log(10.0) * math.sqrt(2.0)  # MCD_DB * ||d|| == 10/ln10 * sqrt(2 * sum d^2)


class MelDTW(ReferenceComparison):
    name = "mel_dtw"
    version = "1"
    sample_rate = SAMPLE_RATE
    higher_is_better = {"mel_dtw": False, "duration_ratio": None}  # None: no direction (1.0 is ideal)
    headline = "mel_dtw"

    def __init__(self, dtw: str = "exact", radius: int = 10) -> None:
        check_dtw(dtw)
        self.dtw, self.radius = dtw, radius
        self.options = {"dtw": dtw, "radius": radius}

    def compare(self, ref: np.ndarray, out: np.ndarray) -> Score:
        a = mel_alignment(ref, out, self.sample_rate, self.dtw, self.radius)
        return Score({"mel_dtw": a.normalized, "duration_ratio": len(out) / len(ref)})


class MCD(ReferenceComparison):
    name = "mcd"
    version = "1"
    sample_rate = SAMPLE_RATE
    higher_is_better = {"mcd": False}
    headline = "mcd"

    def __init__(self, dtw: str = "exact", radius: int = 10, sample_rate: int = SAMPLE_RATE) -> None:
        check_dtw(dtw)
        if sample_rate not in ORDER_ALPHA:
            raise ValueError(f"no mel-cepstrum order/alpha for {sample_rate} Hz (known: {sorted(ORDER_ALPHA)})")
        self.dtw, self.radius, self.sample_rate = dtw, radius, sample_rate
        self.order, self.alpha = ORDER_ALPHA[sample_rate]
        self.options = {"dtw": dtw, "radius": radius, "order": self.order, "alpha": self.alpha,
                        "frame_period_ms": MCD_FRAME_PERIOD_MS}

    def compare(self, ref: np.ndarray, out: np.ndarray) -> Score:
        ref, out = (world_mcep(x, self.sample_rate, self.order, self.alpha)[:, 1:] for x in (ref, out))
        a = align(ref, out, self.dtw, self.radius)
        return Score({"mcd": MCD_DB * a.total / len(a.path)})


def world_mcep(x: np.ndarray, sample_rate: int, order: int, alpha: float,
               frame_period: float = MCD_FRAME_PERIOD_MS, fft_size: int | None = None) -> np.ndarray:
    """(frames, order + 1) mel-cepstrum c0..c_order of WORLD's CheapTrick envelope."""
    import pyworld

    x = np.ascontiguousarray(x, dtype=np.float64)
    # dio, not pyin: CheapTrick only sizes its window from F0 and dio is 5x cheaper.
    f0 = track_f0(x, sample_rate, "dio", frame_period)
    t = np.arange(len(f0)) * frame_period / 1000.0
    sp = pyworld.cheaptrick(x, f0, t, sample_rate, f0_floor=F0_FLOOR, fft_size=fft_size)
    return mel_cepstrum(sp, order, alpha)


def mel_cepstrum(power_spectrum: np.ndarray, order: int, alpha: float) -> np.ndarray:
    """(frames, order + 1) mel-cepstrum of (frames, fft/2 + 1) power spectra; equals
    pysptk.sp2mc: the real cepstrum of log|H| (|H|^2 = power), all-pass warped by alpha."""
    c = np.fft.irfft(np.log(power_spectrum), axis=1)
    c[:, 0] /= 2.0  # log|H|^2's cosine series doubles every term but the constant one
    n_in = power_spectrum.shape[1]  # the causal half; sp2mc's mirrored half changes < 1e-13
    return c[:, :n_in] @ _freqt_matrix(n_in, order, float(alpha)).T


@lru_cache(maxsize=8)
def _freqt_matrix(n_in: int, order: int, alpha: float) -> np.ndarray:
    """SPTK's freqt recursion is linear in the cepstrum: run it once on the identity and
    every clip is then one matrix product instead of a Python loop per frame."""
    beta = 1.0 - alpha * alpha
    d = np.zeros((order + 1, n_in))
    for i in range(n_in - 1, -1, -1):
        prev = d.copy()
        d[0] = alpha * prev[0]
        d[0, i] += 1.0
        if order >= 1:
            d[1] = beta * prev[0] + alpha * prev[1]
        for j in range(2, order + 1):
            d[j] = prev[j - 1] + alpha * (prev[j] - d[j - 1])
    return d
