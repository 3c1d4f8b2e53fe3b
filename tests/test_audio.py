import numpy as np
import pytest

from evalkit import audio
from evalkit.errors import EvalkitError
from evalkit.types import Audio


def test_checks_known_answers():
    sr = 16000
    assert audio.check(Audio(np.zeros(0, np.float32), sr))[0] == "empty audio"
    nan = np.full(sr, 0.1, np.float32)
    nan[5] = np.nan
    assert "NaN" in audio.check(Audio(nan, sr))[0]
    assert audio.check(Audio(np.zeros(sr, np.float32), sr))[0].startswith("silent")
    tone = (0.5 * np.sin(2 * np.pi * 220 * np.arange(sr) / sr)).astype(np.float32)
    failure, facts = audio.check(Audio(tone, sr))
    assert failure is None and facts["duration_s"] == 1.0 and facts["clip_ratio"] == 0.0
    failure, _ = audio.check(Audio(np.tile(tone, 30), sr), audio.duration_cap("Hello."))
    assert failure.startswith("audio too long")
    assert audio.check(Audio(np.tile(tone, 9), sr), audio.duration_cap("Hello."))[0] is None
    clipped = np.clip(tone * 4, -1, 1)
    assert audio.check(Audio(clipped, sr))[1]["clip_ratio"] > 0.5


def test_saved_samples_are_the_scored_samples(tmp_path):
    rng = np.random.default_rng(0)
    a = Audio((rng.standard_normal(8000) * 0.3).clip(-1, 1).astype(np.float32), 22050)
    q = audio.as_pcm16(a)
    audio.write_wav(tmp_path / "a.wav", q)
    back = audio.read_wav(tmp_path / "a.wav")
    assert back.sample_rate == 22050
    np.testing.assert_array_equal(back.samples, q.samples)


def test_resample_keeps_duration_and_pitch():
    sr = 22050
    t = np.arange(sr) / sr
    a = Audio(np.sin(2 * np.pi * 440 * t).astype(np.float32), sr)
    r = audio.resample(a, 16000)
    assert len(r.samples) == 16000
    spectrum = np.abs(np.fft.rfft(r.samples))
    assert np.argmax(spectrum) == pytest.approx(440, abs=1)


@pytest.mark.parametrize("rates", [(22050, 16000), (24000, 16000), (44100, 16000), (16000, 22050), (48000, 8000),
                                   (16000, 24000)])
@pytest.mark.parametrize("n", [1, 2, 7, 22049, 22050, 100003])
def test_resample_is_librosa_soxr_hq_sample_for_sample(rates, n):
    """evalkit calls soxr itself (librosa's import costs seconds before the first transcript): every
    value must stay what librosa.resample(res_type="soxr_hq") gives, length fix included."""
    import librosa

    orig, target = rates
    rng = np.random.default_rng(n)
    for dtype in (np.float32, np.float64):
        x = (rng.standard_normal(n) * 0.3).clip(-1, 1).astype(dtype)
        ours = audio.resample(Audio(x, orig), target)
        theirs = librosa.resample(x, orig_sr=orig, target_sr=target, res_type="soxr_hq").astype(np.float32)
        assert ours.sample_rate == target and ours.samples.dtype == np.float32
        np.testing.assert_array_equal(ours.samples, theirs)


def test_unreadable_file(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(EvalkitError, match="not a readable audio file"):
        audio.read_wav(bad)


def test_edge_silence_known_answer():
    sr = 16000
    tone = (0.5 * np.sin(2 * np.pi * 220 * np.arange(sr) / sr)).astype(np.float32)
    padded = np.concatenate([np.zeros(sr // 4, np.float32), tone, np.zeros(sr // 2, np.float32)])
    lead, trail = audio.edge_silence(Audio(padded, sr))
    assert lead == pytest.approx(0.25, abs=0.011) and trail == pytest.approx(0.5, abs=0.011)
    assert audio.edge_silence(Audio(tone, sr)) == (0.0, 0.0)
