"""DNSMOS through evalkit equals speechmos called directly, and falls as noise rises."""

import math

import numpy as np
import pytest

from evalkit.audio import resample
from evalkit.types import Audio, ScoringItem, SynthesisRequest, Utterance
from evalkit_metrics.quality import DNSMOS


@pytest.fixture(scope="module")
def clip16k(piper):
    text = "The museum opens at nine and closes early on Sundays."
    a = piper.synthesize([SynthesisRequest("d1", text, "en")])[0]
    return resample(a, 16000)


def _noisy(clean: Audio, snr_db: float) -> Audio:
    rng = np.random.default_rng(1234)
    noise = rng.standard_normal(len(clean.samples))
    p_sig = np.mean(clean.samples.astype(np.float64) ** 2)
    noise *= math.sqrt(p_sig / (10 ** (snr_db / 10)) / np.mean(noise ** 2))
    return Audio(np.clip(clean.samples + noise, -1, 1).astype(np.float32), clean.sample_rate)


def _score(a: Audio):
    return DNSMOS().score([ScoringItem(Utterance("d1", "x"), "en", a)])[0]


def library(threads: int | None):
    """speechmos's own DNSMOS model; `threads` None keeps ONNX Runtime's default (one per core)."""
    import os

    import onnxruntime as ort
    from speechmos import dnsmos

    here = os.path.join(os.path.dirname(os.path.abspath(dnsmos.__file__)), "dnsmos_models")
    model = dnsmos.DNSMOS(os.path.join(here, "sig_bak_ovr.onnx"), os.path.join(here, "model_v8.onnx"))
    if threads is not None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = threads
        model.onnx_sess = ort.InferenceSession(model.primary_model_path, options)
        model.p808_onnx_sess = ort.InferenceSession(os.path.join(here, "model_v8.onnx"), options)
    return model


@pytest.mark.slow
def test_equals_library(clip16k):
    ours = _score(clip16k).values
    for threads, tolerance in ((1, 0.0), (None, 1e-6)):  # exact when pinned alike; last bits otherwise
        direct = library(threads)(np.clip(clip16k.samples, -1, 1), 16000, False)
        assert ours["dnsmos_ovrl"] == pytest.approx(direct["ovrl_mos"], abs=tolerance)
        assert ours["dnsmos_sig"] == pytest.approx(direct["sig_mos"], abs=tolerance)
        assert ours["dnsmos_bak"] == pytest.approx(direct["bak_mos"], abs=tolerance)
        assert ours["dnsmos_p808"] == pytest.approx(direct["p808_mos"], abs=tolerance)


@pytest.mark.slow
def test_noise_lowers_quality_in_order(clip16k):
    clean = _score(clip16k).values
    snr20 = _score(_noisy(clip16k, 20)).values
    snr5 = _score(_noisy(clip16k, 5)).values
    assert clean["dnsmos_ovrl"] > snr20["dnsmos_ovrl"] > snr5["dnsmos_ovrl"]
    assert clean["dnsmos_bak"] > snr20["dnsmos_bak"] > snr5["dnsmos_bak"]


def test_too_short_is_nan_with_note():
    s = _score(Audio(np.full(800, 0.1, np.float32), 16000))
    assert all(math.isnan(v) for v in s.values.values()) and "shorter" in s.note
