"""PESQ, STOI and speaker similarity: known answers on real Piper / espeak audio."""

import math

import numpy as np
import pytest

from evalkit.audio import resample
from evalkit.types import Audio, ScoringItem, SynthesisRequest, Utterance
from evalkit_metrics.quality import PESQ, STOI
from evalkit_metrics.speaker import SpeakerSimilarity

TEXT = "The museum opens at nine and closes early on Sundays."
OTHER = "Please remember to water the plants while I am away."


@pytest.fixture(scope="module")
def clips(piper, espeak_en):
    def render(adapter, text):
        return resample(adapter.synthesize([SynthesisRequest("x", text, "en")])[0], 16000)

    return {"piper": render(piper, TEXT), "piper_other": render(piper, OTHER), "espeak": render(espeak_en, TEXT)}


def noisy(clean: Audio, snr_db: float) -> Audio:
    rng = np.random.default_rng(7)
    noise = rng.standard_normal(len(clean.samples))
    noise *= math.sqrt(np.mean(clean.samples.astype(np.float64) ** 2) / 10 ** (snr_db / 10) / np.mean(noise ** 2))
    return Audio(np.clip(clean.samples + noise, -1, 1).astype(np.float32), clean.sample_rate)


def one(metric, out: Audio, ref: Audio | None):
    return metric.score([ScoringItem(Utterance("x", TEXT), "en", out, reference_audio=ref)])[0]


def test_pesq_known_answers_and_library_equality(clips):
    from pesq import pesq

    clean = clips["piper"]
    same = one(PESQ(), clean, clean).values["pesq_wb"]
    assert same == pytest.approx(4.644, abs=0.01)
    n20, n5 = noisy(clean, 20), noisy(clean, 5)
    v20, v5 = one(PESQ(), n20, clean).values["pesq_wb"], one(PESQ(), n5, clean).values["pesq_wb"]
    assert same > v20 > v5
    assert v20 == pesq(16000, clean.samples.astype(np.float64), n20.samples.astype(np.float64), "wb")


def test_stoi_known_answers_and_library_equality(clips):
    from pystoi import stoi

    clean = clips["piper"]
    assert one(STOI(), clean, clean).values["stoi"] == pytest.approx(1.0, abs=1e-6)
    n20, n5 = noisy(clean, 20), noisy(clean, 5)
    v20, v5 = one(STOI(), n20, clean).values["stoi"], one(STOI(), n5, clean).values["stoi"]
    assert 1.0 > v20 > v5
    assert v5 == stoi(clean.samples.astype(np.float64), n5.samples.astype(np.float64), 16000)


@pytest.mark.parametrize("metric", [PESQ(), STOI()])
def test_intrusive_metrics_refuse_unaligned_or_missing_references(clips, metric):
    key = next(iter(metric.higher_is_better))
    import librosa

    slower = Audio(librosa.effects.time_stretch(clips["piper"].samples, rate=0.85), 16000)
    unaligned = one(metric, slower, clips["piper"])  # the same speech, 18% slower
    assert math.isnan(unaligned.values[key]) and "not time-aligned" in unaligned.note
    missing = one(metric, clips["piper"], None)
    assert math.isnan(missing.values[key]) and "no reference" in missing.note


def test_pesq_on_silence_is_nan_not_zero(clips):
    silence = Audio(np.zeros_like(clips["piper"].samples), 16000)
    s = one(PESQ(), silence, clips["piper"])
    assert math.isnan(s.values["pesq_wb"]) and s.note


def test_speaker_similarity_orders_voices(clips):
    sim = SpeakerSimilarity()
    assert one(sim, clips["piper"], clips["piper"]).values["spk_sim"] == pytest.approx(1.0, abs=1e-5)
    same_voice = one(sim, clips["piper_other"], clips["piper"]).values["spk_sim"]
    other_voice = one(sim, clips["espeak"], clips["piper"]).values["spk_sim"]
    assert same_voice > other_voice
    short = one(sim, Audio(clips["piper"].samples[:1600], 16000), clips["piper"])
    assert math.isnan(short.values["spk_sim"]) and "speech" in short.note
