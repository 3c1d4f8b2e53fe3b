"""The degraded hidden anchor: a copy of a clip made clearly worse, so that every listening test
has a known-bad point on its scale (MUSHRA's low anchor; in a MOS test it shows whether raters
use the bottom of the scale).

The degradation is MUSHRA's classic low anchor, a 3.5 kHz low-pass (ITU-R BS.1534), plus white
noise at 15 dB SNR so that it is audible on band-limited 8-16 kHz TTS output too, where a 3.5 kHz
low-pass alone can be subtle. The noise is seeded by the source bytes: the same source always
gives the same anchor, and a rerun of the server finds the file it wrote before.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import soundfile

from ..errors import EvalkitError, first_line

VERSION = "1"  # part of every anchor's file name: a changed recipe never reuses an old file
LOWPASS_HZ = 3500.0
SNR_DB = 15.0


def degrade(x: np.ndarray, sample_rate: int, seed: int) -> np.ndarray:
    """`x` low-passed at LOWPASS_HZ, with white noise at SNR_DB below its RMS, peak-limited to 0.99."""
    from scipy import signal

    y = np.asarray(x, dtype=np.float64)
    if sample_rate > 2 * LOWPASS_HZ and y.size:
        sos = signal.butter(8, LOWPASS_HZ, fs=sample_rate, output="sos")
        try:
            y = signal.sosfiltfilt(sos, y)  # zero phase: the anchor stays time-aligned with its source
        except ValueError:  # shorter than the filter's padding: one pass is still a low-pass
            y = signal.sosfilt(sos, y)
    rms = float(np.sqrt(np.mean(y ** 2))) if y.size else 0.0
    if rms > 0:
        y = y + np.random.default_rng(seed).standard_normal(y.size) * rms * 10 ** (-SNR_DB / 20)
    peak = float(np.abs(y).max()) if y.size else 0.0
    return (y * (0.99 / peak) if peak > 0.99 else y).astype(np.float32)


def degraded_copy(source: Path, folder: Path) -> Path:
    """The degraded anchor of `source`, written into `folder` once (named by the source bytes
    and VERSION) and found there afterwards."""
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise EvalkitError(f"cannot read {source} to make its degraded anchor ({first_line(exc)})") from None
    digest = hashlib.sha256(VERSION.encode() + b"\0" + data).hexdigest()
    dest = folder / f"{digest[:24]}.wav"
    if dest.is_file():
        return dest
    try:
        x, sr = soundfile.read(io.BytesIO(data), dtype="float64", always_2d=True)
    except (RuntimeError, ValueError, soundfile.LibsndfileError) as exc:
        raise EvalkitError(f"{source} is not a readable wav ({first_line(exc)})") from None
    y = degrade(x.mean(axis=1), int(sr), seed=int(digest[:8], 16))
    folder.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:  # written beside, then renamed: a half-written anchor is never served
        soundfile.write(tmp, y, int(sr), subtype="PCM_16", format="WAV")
        os.replace(tmp, dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise EvalkitError(f"cannot write the degraded anchor {dest} ({first_line(exc)})") from None
    return dest
