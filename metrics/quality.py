"""Reference-free quality: DNSMOS (Microsoft's deep noise suppression MOS predictor).

Metric card
- dnsmos_sig, dnsmos_bak, dnsmos_ovrl: ITU-T P.835 speech signal, background and overall
  quality predicted by DNSMOS (speechmos's bundled ONNX models, non-personalized polynomial
  fit), on a 1-5 scale.
- dnsmos_p808: the P.808 overall MOS model, 1-5.
Computation: exactly `speechmos.dnsmos.run(x, 16000)`, with its two ONNX sessions pinned to one
thread (version 2; the library's thread-per-core default changes the last bits from machine to
machine): the clip is repeated to at least 9.01 s, scored in 9.01 s windows every 1 s and the
window scores averaged. Input is resampled to 16 kHz
by the core and clipped to [-1, 1] (speechmos refuses anything outside).
Direction: higher is better. Needs: audio only. Known answers: clean speech scores well above
the same speech with noise added at 5 dB SNR; a clip shorter than 0.25 s is NaN with a note.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from evalkit.protocols import Metric
from evalkit.types import Score, ScoringItem

MIN_SECONDS = 0.25


class DNSMOS(Metric):
    name = "dnsmos"
    version = "2"
    sample_rate = 16000
    process_safe = True  # scores in the metric worker pool (evalkit.workers)
    higher_is_better = {"dnsmos_sig": True, "dnsmos_bak": True, "dnsmos_ovrl": True, "dnsmos_p808": True}
    headline = "dnsmos_ovrl"

    def load(self) -> None:
        from speechmos import dnsmos

        _pinned_sessions(dnsmos)
        # The first run() imports librosa's feature code (scipy.signal, numba: 1.5 s), which would
        # otherwise fall on the first clip; a mel spectrogram of silence does that and no more.
        import librosa.feature

        librosa.feature.melspectrogram(y=np.zeros(1600, np.float32), sr=self.sample_rate, n_fft=321, hop_length=160,
                                       n_mels=120)  # speechmos's settings

    def score(self, items: Sequence[ScoringItem]) -> list[Score]:
        from speechmos import dnsmos  # loads onnxruntime sessions on first use

        _pinned_sessions(dnsmos)
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


def _pinned_sessions(module) -> None:
    """Create speechmos's module-global model ourselves, before its first `run()` would, with each
    ONNX session pinned to one thread. ONNX Runtime's default is one thread per physical core,
    and the thread count moves the last bits (2e-8 on a Piper clip): pinned, a value is the same
    on every machine and in every process, worker or not. One thread is also the cheapest use of
    a core shared with Whisper (20 clips end to end: 36.5 s against 41 s with the default)."""
    if module.dnsmos is not None:
        return
    import onnxruntime as ort

    here = os.path.join(os.path.dirname(os.path.abspath(module.__file__)), "dnsmos_models")
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    model = module.DNSMOS.__new__(module.DNSMOS)
    model.primary_model_path = os.path.join(here, "sig_bak_ovr.onnx")  # the very path run() compares
    model.onnx_sess = ort.InferenceSession(model.primary_model_path, options)
    model.p808_onnx_sess = ort.InferenceSession(os.path.join(here, "model_v8.onnx"), options)
    module.dnsmos = model


# Intrusive measures compare sample against sample: they are only meaningful when the output is
# time-aligned with its reference (the same model re-run, a vocoder resynthesis, a codec), never
# between two TTS renderings with their own timing. Beyond this duration mismatch they are NaN.
MAX_DURATION_MISMATCH = 0.05


class _TimeAligned(Metric):
    """A metric of the output against a time-aligned reference (`_aligned_pair`): `compute(ref,
    out)` gives the one value `key`; a pair that cannot be compared, or that the library refuses
    with one of the `refusals()`, gets NaN with the reason."""

    key: str
    needs_reference = True
    process_safe = True  # scores in the metric worker pool (evalkit.workers)

    def score(self, items: Sequence[ScoringItem]) -> list[Score]:
        out = []
        for item in items:
            pair = _aligned_pair(item, self.name)
            if isinstance(pair, str):
                out.append(Score({self.key: math.nan}, pair))
                continue
            try:
                out.append(Score({self.key: float(self.compute(*pair))}))
            except self.refusals() as exc:
                out.append(Score({self.key: math.nan}, f"{self.name}: {type(exc).__name__}: {str(exc)[:80]}"))
        return out

    def compute(self, ref: np.ndarray, out: np.ndarray) -> float:
        raise NotImplementedError

    def refusals(self) -> tuple[type[BaseException], ...]:
        """What the library raises for a pair it cannot score (not an evalkit bug)."""
        return ()


def _aligned_pair(item: ScoringItem, metric: str) -> tuple[np.ndarray, np.ndarray] | str:
    """(reference, output) cut to a common length, or the reason they cannot be compared."""
    if item.reference_audio is None:
        return f"{metric}: no reference audio"
    ref, out = item.reference_audio.samples, item.audio.samples
    if min(len(ref), len(out)) < MIN_SECONDS * item.audio.sample_rate:
        return f"{metric}: clip shorter than {MIN_SECONDS} s"
    mismatch = abs(len(out) - len(ref)) / len(ref)
    if mismatch > MAX_DURATION_MISMATCH:
        return f"{metric}: output and reference durations differ by {mismatch:.0%}: not time-aligned"
    n = min(len(ref), len(out))
    return ref[:n].astype(np.float64), out[:n].astype(np.float64)


class PESQ(_TimeAligned):
    """Wideband PESQ (ITU-T P.862.2) of the output against a time-aligned reference.

    Metric card
    - pesq_wb: MOS-LQO, about 1.0-4.64; `pesq.pesq(16000, ref, out, "wb")` exactly, on both
      signals cut to the shorter length.
    Applies only when the output is time-aligned with the reference (durations within 5%):
    otherwise NaN with a note, since PESQ's own delay compensation cannot undo a different
    speaking rhythm. Silence or no detectable speech: NaN with the library's reason, never 0.
    Direction: higher is better. Needs: reference audio. Known answers: identical clip -> 4.644;
    white noise at 20 dB SNR scores above the same at 5 dB SNR.
    """

    name = "pesq"
    version = "1"
    sample_rate = 16000
    higher_is_better = {"pesq_wb": True}
    headline = key = "pesq_wb"

    def refusals(self) -> tuple[type[BaseException], ...]:
        from pesq import PesqError

        return PesqError, ValueError  # silence surfaces as ValueError from the C layer

    def compute(self, ref: np.ndarray, out: np.ndarray) -> float:
        from pesq import pesq

        return pesq(self.sample_rate, ref, out, "wb")


class STOI(_TimeAligned):
    """Short-time objective intelligibility of the output against a time-aligned reference.

    Metric card
    - stoi: 0-1 (classic STOI, Taal et al. 2011), exactly `pystoi.stoi(ref, out, 16000)` on
      both signals cut to the shorter length; pystoi resamples to 10 kHz internally.
    Applies only to time-aligned pairs (durations within 5%), as PESQ.
    Direction: higher is better. Needs: reference audio. Known answers: identical clip -> 1.0;
    noise at 5 dB SNR scores below noise at 20 dB SNR.
    """

    name = "stoi"
    version = "1"
    sample_rate = 16000
    higher_is_better = {"stoi": True}
    headline = key = "stoi"

    def compute(self, ref: np.ndarray, out: np.ndarray) -> float:
        from pystoi import stoi

        return stoi(ref, out, self.sample_rate, extended=False)
