"""What the reference-based metrics share: one analysis rate, one silence policy, one
frame-level feature, one F0 tracker and one DTW.

A synthesized clip and its reference differ legitimately in timing, pauses and level, so
every reference-based value is computed on trimmed clips aligned by DTW.

Parameters (and why)
- SAMPLE_RATE 16 kHz. The core already resamples every clip to 16 kHz for ASR, DNSMOS and
  PESQ, so these metrics reuse that copy; speech envelope, F0 and an 80-band mel up to
  8 kHz lose nothing that TTS mel features keep (22.05 kHz TTS mels also stop at 8 kHz);
  ESPnet ships a 16 kHz mel-cepstrum setting; there are 27% fewer frames than at 22.05 kHz.
  Once silence is trimmed, MCD at 16 and 22.05 kHz differs by about 0.03 dB (espeak).
- Log-mel: Whisper's 16 kHz STFT layout (n_fft 400 = 25 ms Hann window, hop 160 = 10 ms,
  centred frames, zero padding) and 80 Slaney mel bands from 0 to 8000 Hz; magnitude (not
  power) compressed with ln(max(x, 1e-5)) as Tacotron 2 / HiFi-GAN do. The floor (about
  -100 dB) makes inaudible frames equal, whatever their exact noise floor.
- Silence: librosa.effects.trim at TOP_DB 40 below the clip's loudest frame (RMS over 1024
  samples = 64 ms, hop 160), applied identically to output and reference; only leading and
  trailing silence goes: pauses inside are part of the timing being judged. 40 dB rather
  than librosa's 60 so that room noise and vocoder hiss are cut as surely as espeak's
  digital zeros.
- F0: librosa.pyin (probabilistic YIN) by default, 60-500 Hz (low male to high female
  speech), 0.2-semitone grid, 64 ms frames, on the same 10 ms grid as the mel frames.
  Chosen over WORLD's dio on evidence: the bundled Piper voice (F0 about 86 Hz) has its
  fundamental 34 dB below the second harmonic, and dio, which tracks the fundamental
  component, reports 2 F0 on about half its frames (median 165 Hz); a pure +3 semitone
  WORLD pitch shift then scores f0_corr -0.23 with dio and 0.99 with pyin. pyin costs
  about 0.15-0.2 s per 3.5 s clip (dio 0.035 s, harvest 0.5 s); both stay selectable.
- DTW: exact DTW is librosa.sequence.dtw with the symmetric1 step pattern (steps (1,1),
  (1,0), (0,1), each adding the local cost once) on Euclidean frame distances; "fast" is
  fastdtw (pure Python here) with a radius. The accumulated cost is divided by N + M, not
  by the path length: identical silent frames let equal-cost paths differ in length
  (569 vs 538 steps measured), which moved a path-length mean by 6%.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from evalkit.audio import SILENCE_PEAK
from evalkit.protocols import Metric
from evalkit.types import Score, ScoringItem

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160  # 10 ms; F0 uses the same grid, so a mel DTW path indexes F0 frames directly
N_MELS = 80
FMIN, FMAX = 0.0, 8000.0
LOG_FLOOR = 1e-5

TOP_DB = 40.0
TRIM_FRAME = 1024
MIN_SECONDS = 0.1

FRAME_PERIOD_MS = 1000.0 * HOP_LENGTH / SAMPLE_RATE
F0_FLOOR, F0_CEIL = 60.0, 500.0
PYIN_FRAME = 1024  # 64 ms: at least two periods of the 60 Hz floor at 16 kHz
PYIN_RESOLUTION = 0.2  # semitones; 0.1 is 5x slower (pyin's Viterbi is quadratic in bins)
F0_METHODS = ("pyin", "dio", "harvest")
DTW_METHODS = ("exact", "fast")


def check_dtw(dtw: str) -> None:
    """Refuse a DTW method at construction, not on every clip scored with it."""
    if dtw not in DTW_METHODS:
        raise ValueError(f"dtw must be one of {DTW_METHODS}, got {dtw!r}")


class Alignment(NamedTuple):
    total: float  # accumulated symmetric1 cost: the sum of local distances along the path
    path: np.ndarray  # (L, 2) frame index pairs (reference, output), start to end
    n: int
    m: int

    @property
    def normalized(self) -> float:
        return self.total / (self.n + self.m)


class ReferenceComparison(Metric):
    """A metric of the output against its reference clip, both checked and trimmed (`prepare`):
    a pair that cannot be compared gets NaN for every key with the reason, else `compare`."""

    needs_reference = True
    process_safe = True  # scores in the metric worker pool (evalkit.workers)

    def load(self) -> None:
        import librosa.effects  # noqa: F401  # seconds of imports (scipy.signal, numba), not per clip
        import librosa.feature  # noqa: F401

    def score(self, items: Sequence[ScoringItem]) -> list[Score]:
        return [self._one(item) for item in items]

    def _one(self, item: ScoringItem) -> Score:
        clips = prepare(item, self.sample_rate)
        if isinstance(clips, str):
            return Score(dict.fromkeys(self.higher_is_better, math.nan), f"{self.name}: {clips}")
        return self.compare(*clips)

    def compare(self, ref: np.ndarray, out: np.ndarray) -> Score:
        """The values for one prepared (reference, output) pair, both float64 at `sample_rate`."""
        raise NotImplementedError


def prepare(item: ScoringItem, sample_rate: int) -> tuple[np.ndarray, np.ndarray] | str:
    """(trimmed reference, trimmed output) as float64, or why the pair cannot be scored."""
    if item.reference_audio is None:
        return "no reference audio"
    clips = []
    for role, audio in (("reference", item.reference_audio), ("output", item.audio)):
        if audio.sample_rate != sample_rate:
            return f"{role} is at {audio.sample_rate} Hz, expected {sample_rate} Hz"
        x = np.asarray(audio.samples, dtype=np.float64)
        if x.ndim != 1 or not np.isfinite(x).all():
            return f"{role} is not finite mono audio"
        if len(x) < MIN_SECONDS * sample_rate:
            return f"{role} is shorter than {MIN_SECONDS} s"
        if np.abs(x).max() < SILENCE_PEAK:
            return f"{role} is silent"
        x = trim(x)
        if len(x) < MIN_SECONDS * sample_rate:
            return f"{role} is shorter than {MIN_SECONDS} s after trimming silence"
        clips.append(x)
    return clips[0], clips[1]


def trim(x: np.ndarray) -> np.ndarray:
    import librosa

    return librosa.effects.trim(x, top_db=TOP_DB, frame_length=TRIM_FRAME, hop_length=HOP_LENGTH)[0]


def log_mel(x: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(frames, 80) natural-log mel magnitudes; frame k is centred on sample k * 160."""
    import librosa

    mel = librosa.feature.melspectrogram(
        y=x, sr=sample_rate, n_fft=N_FFT, hop_length=HOP_LENGTH, window="hann", center=True,
        pad_mode="constant", power=1.0, n_mels=N_MELS, fmin=FMIN, fmax=FMAX)
    return np.log(np.maximum(mel, LOG_FLOOR)).T


def track_f0(x: np.ndarray, sample_rate: int, method: str = "pyin",
             frame_period: float = FRAME_PERIOD_MS) -> np.ndarray:
    """F0 in Hz per frame, 0 where unvoiced; frame k is centred at k * frame_period."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    if method == "pyin":
        import librosa

        f0, voiced, _ = librosa.pyin(x, fmin=F0_FLOOR, fmax=F0_CEIL, sr=sample_rate, frame_length=PYIN_FRAME,
                                     hop_length=round(sample_rate * frame_period / 1000.0), center=True,
                                     resolution=PYIN_RESOLUTION)
        return np.where(voiced, np.nan_to_num(f0), 0.0)
    import pyworld

    if method == "dio":
        f0, t = pyworld.dio(x, sample_rate, f0_floor=F0_FLOOR, f0_ceil=F0_CEIL, frame_period=frame_period)
        return pyworld.stonemask(x, f0, t, sample_rate)
    if method == "harvest":
        return pyworld.harvest(x, sample_rate, f0_floor=F0_FLOOR, f0_ceil=F0_CEIL, frame_period=frame_period)[0]
    raise ValueError(f"f0_method must be one of {F0_METHODS}, got {method!r}")


_MEL_ALIGNMENTS: OrderedDict[tuple, Alignment] = OrderedDict()
_MEL_ALIGNMENTS_KEPT = 32


def mel_alignment(ref: np.ndarray, out: np.ndarray, sample_rate: int, method: str = "exact",
                  radius: int = 10) -> Alignment:
    """DTW of the two clips' log-mel features, computed once per pair of contents: mel_dtw and
    f0 both walk this path, so the second metric finds it here instead of redoing it."""
    key = (hashlib.sha1(ref.tobytes()).digest(), hashlib.sha1(out.tobytes()).digest(), sample_rate, method, radius)
    if key in _MEL_ALIGNMENTS:
        _MEL_ALIGNMENTS.move_to_end(key)
        return _MEL_ALIGNMENTS[key]
    a = align(log_mel(ref, sample_rate), log_mel(out, sample_rate), method, radius)
    _MEL_ALIGNMENTS[key] = a
    if len(_MEL_ALIGNMENTS) > _MEL_ALIGNMENTS_KEPT:
        _MEL_ALIGNMENTS.popitem(last=False)
    return a


def align(ref: np.ndarray, out: np.ndarray, method: str = "exact", radius: int = 10) -> Alignment:
    """DTW between (N, d) and (M, d) frame sequences with Euclidean local distances."""
    n, m = len(ref), len(out)
    if method == "exact":
        import librosa

        acc, wp = librosa.sequence.dtw(X=ref.T, Y=out.T, metric="euclidean", backtrack=True)
        return Alignment(float(acc[-1, -1]), np.asarray(wp[::-1], dtype=np.int64), n, m)
    if method == "fast":
        from fastdtw import fastdtw

        total, path = fastdtw(ref, out, radius=radius, dist=2)
        return Alignment(float(total), np.asarray(path, dtype=np.int64), n, m)
    raise ValueError(f"dtw must be one of {DTW_METHODS}, got {method!r}")
