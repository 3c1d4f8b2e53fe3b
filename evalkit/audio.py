"""Wav I/O, the one resampling step, and the sanity checks every synthesized clip goes through."""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from .errors import EvalkitError
from .record import replacing
from .types import Audio

SILENCE_PEAK = 1e-4  # about -80 dBFS: below this a clip carries no speech
# A model that never stops (no end-of-speech) is a failure, not a long clip to score: nothing a
# TTS model should say about a text takes longer than this, and no clip is ever longer than
# MAX_S (a long text must not open the door to a 6-hour file).
MIN_CAP_S, CAP_S_PER_CHAR, MAX_S = 10.0, 0.5, 600.0


def duration_cap(text: str) -> float:
    return min(MAX_S, max(MIN_CAP_S, CAP_S_PER_CHAR * len(text)))


def read_wav(source: str | Path | BinaryIO, max_seconds: float = MAX_S) -> Audio:
    """A wav (or any libsndfile format) as mono float32. Its length is read from the header
    first: a file longer than `max_seconds` is refused before its samples are read."""
    name = getattr(source, "name", None) or ("<bytes>" if hasattr(source, "read") else str(source))
    src = source if hasattr(source, "read") else str(source)
    try:
        info = sf.info(src)
        if info.samplerate <= 0 or info.frames / info.samplerate > max_seconds:
            raise EvalkitError(f"{name}: audio too long: {info.frames / max(info.samplerate, 1):.1f} s, cap "
                               f"{max_seconds:.1f} s (a model that never stops?)")
        if hasattr(src, "seek"):
            src.seek(0)
        data, sr = sf.read(src, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise EvalkitError(f"{name}: not a readable audio file ({exc})") from None
    return Audio(np.ascontiguousarray(data.mean(axis=1), dtype=np.float32), int(sr))


def _int16(samples: np.ndarray) -> np.ndarray:
    # libsndfile reads PCM16 as n / 32768; quantize with the same scale so a round trip is exact.
    return np.clip(np.round(samples.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def write_wav(path: str | Path, audio: Audio) -> None:
    """Encoded in memory, written beside the target and renamed: a full disk raises the kernel's
    OSError (not libsndfile's vague one) and leaves no torn wav behind."""
    buf = io.BytesIO()
    sf.write(buf, _int16(audio.samples), audio.sample_rate, subtype="PCM_16", format="WAV")
    path = Path(path)
    with replacing(path, path.with_name(f".{path.name}.tmp")) as tmp, open(tmp, "wb") as f:
        f.write(buf.getbuffer())


def as_pcm16(audio: Audio) -> Audio:
    """What a wav file on disk holds: scores are computed on exactly the samples that are saved."""
    return Audio((_int16(audio.samples) / 32768.0).astype(np.float32), audio.sample_rate)


def resample(audio: Audio, sample_rate: int) -> Audio:
    """`librosa.resample(y, res_type="soxr_hq")` sample for sample (tests/test_audio.py checks it
    against librosa): soxr's HQ resampler, then the output padded with zeros or cut to
    ceil(n * ratio) samples as librosa's `fix` does. Called directly, because importing librosa
    costs seconds (scipy.signal, numba) on the path to the first transcript, and soxr alone 0.1 s."""
    if audio.sample_rate == sample_rate:
        return audio
    import soxr

    x = audio.samples
    n = int(np.ceil(x.shape[-1] * (float(sample_rate) / audio.sample_rate)))
    y = soxr.resample(x, audio.sample_rate, sample_rate, quality="soxr_hq")
    y = y[:n] if y.shape[-1] >= n else np.pad(y, (0, n - y.shape[-1]))
    return Audio(np.asarray(y, dtype=np.float32), sample_rate)


def check(audio: Audio, max_seconds: float | None = None) -> tuple[str | None, dict[str, float]]:
    """(failure reason or None, per-clip facts). A failed clip is not scored."""
    x = audio.samples
    if x.ndim != 1:
        return f"audio must be mono, got shape {x.shape}", {}
    if x.size == 0:
        return "empty audio", {"duration_s": 0.0}
    facts = {"duration_s": float(audio.duration)}
    if max_seconds is not None and audio.duration > max_seconds:
        return (f"audio too long: {audio.duration:.1f} s, cap {max_seconds:.1f} s for this text "
                "(a model that never stops?)"), facts
    if not np.isfinite(x).all():
        return f"audio has {int((~np.isfinite(x)).sum())} NaN/inf samples", facts
    peak = float(np.abs(x).max())
    facts["peak"] = peak
    facts["clip_ratio"] = float(np.mean(np.abs(x) >= 0.999))
    if peak > 1.0:
        # Saved as 16-bit PCM it would be hard-clipped, and scored as if the model had said that.
        return (f"samples outside [-1, 1] (peak {peak:.3g}{', integer-scaled?' if peak >= 2 else ''}): the saved "
                f"wav would clip; scale the model's output in its adapter"), facts
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
    tail = (len(audio.samples) - frames * n) / audio.sample_rate
    return float(loud[0] * frame_s), float((frames - 1 - loud[-1]) * frame_s + tail)
