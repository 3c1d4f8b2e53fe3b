"""Wav I/O, the one resampling step, and the sanity checks every synthesized clip goes through."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from .errors import EvalkitError
from .types import Audio

SILENCE_PEAK = 1e-4  # about -80 dBFS: below this a clip carries no speech
# A model that never stops (no end-of-speech) is a failure, not a long clip to score: nothing a
# TTS model should say about a text takes longer than this.
MIN_CAP_S, CAP_S_PER_CHAR = 10.0, 0.5


def duration_cap(text: str) -> float:
    return max(MIN_CAP_S, CAP_S_PER_CHAR * len(text))


def read_wav(path: str | Path) -> Audio:
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise EvalkitError(f"{path}: not a readable audio file ({exc})") from None
    return Audio(np.ascontiguousarray(data.mean(axis=1), dtype=np.float32), int(sr))


def _int16(samples: np.ndarray) -> np.ndarray:
    # libsndfile reads PCM16 as n / 32768; quantize with the same scale so a round trip is exact.
    return np.clip(np.round(samples.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def write_wav(path: str | Path, audio: Audio) -> None:
    sf.write(str(path), _int16(audio.samples), audio.sample_rate, subtype="PCM_16")


def as_pcm16(audio: Audio) -> Audio:
    """What a wav file on disk holds: scores are computed on exactly the samples that are saved."""
    return Audio((_int16(audio.samples) / 32768.0).astype(np.float32), audio.sample_rate)


def resample(audio: Audio, sample_rate: int) -> Audio:
    if audio.sample_rate == sample_rate:
        return audio
    import librosa  # imported late: it costs about a second and numba compilation

    y = librosa.resample(audio.samples, orig_sr=audio.sample_rate, target_sr=sample_rate, res_type="soxr_hq")
    return Audio(y.astype(np.float32), sample_rate)


def check(audio: Audio, max_seconds: float | None = None) -> tuple[str | None, dict[str, float]]:
    """(failure reason or None, per-clip facts). A failed clip is not scored."""
    x = audio.samples
    if x.ndim != 1:
        return f"audio must be mono, got shape {x.shape}", {}
    if x.size == 0:
        return "empty audio", {"duration_s": 0.0}
    facts = {"duration_s": float(audio.duration)}
    if max_seconds is not None and audio.duration > max_seconds:
        return f"audio too long: {audio.duration:.1f} s, cap {max_seconds:.1f} s for this text (a model that never stops?)", facts
    if not np.isfinite(x).all():
        return f"audio has {int((~np.isfinite(x)).sum())} NaN/inf samples", facts
    peak = float(np.abs(x).max())
    facts["peak"] = peak
    facts["clip_ratio"] = float(np.mean(np.abs(x) >= 0.999))
    if peak < SILENCE_PEAK:
        return "silent audio (peak below -80 dBFS)", facts
    facts["lead_silence_s"], facts["trail_silence_s"] = edge_silence(audio)
    return None, facts


def edge_silence(audio: Audio, top_db: float = 40.0, frame_s: float = 0.01) -> tuple[float, float]:
    """Seconds of leading and trailing silence: 10 ms frames more than `top_db` below the
    loudest frame (librosa.effects.trim's rule, on non-overlapping frames)."""
    n = max(1, int(audio.sample_rate * frame_s))
    frames = len(audio.samples) // n
    if frames == 0:
        return 0.0, 0.0
    rms = np.sqrt(np.mean(audio.samples[:frames * n].astype(np.float64).reshape(frames, n) ** 2, axis=1))
    loud = np.flatnonzero(rms > rms.max() * 10 ** (-top_db / 20))
    return float(loud[0] * frame_s), float((frames - 1 - loud[-1]) * frame_s + (len(audio.samples) - frames * n) / audio.sample_rate)
