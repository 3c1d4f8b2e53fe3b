"""Known answers for the reference-based metrics (mel_dtw, mcd, f0) on real rendered speech,
and cross-checks of their building blocks against peer libraries (dtw-python, pysptk, pymcd).

Audio is rendered once per module: Piper (en_US-joe, a low male neural voice) and espeak-ng
at two speaking rates, then transformed here: a phase-vocoder time stretch, WORLD
resynthesis with F0 raised 3 semitones or inverted, added noise. Every pair is scored once
(the `table` fixture) and the tests read from it.
"""

from __future__ import annotations

import math
import subprocess

import numpy as np
import pytest

from evalkit.audio import read_wav, resample
from evalkit.types import Audio, ScoringItem, SynthesisRequest, Utterance
from evalkit_metrics import _dtw
from evalkit_metrics.alignment import MCD, MCD_DB, MelDTW, mel_cepstrum
from evalkit_metrics.prosody import F0

SR = _dtw.SAMPLE_RATE
TEXT_A = "The museum opens at nine and closes early on Sundays."
TEXT_B = "Please bring your own towel because the pool does not provide one."


def _espeak(tmp, name: str, text: str, rate: int) -> tuple[Audio, str]:
    path = tmp / f"{name}.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", str(rate), "-w", str(path), "--stdin"],
                   input=text.encode(), check=True)
    return read_wav(path), str(path)


def _world(audio: Audio) -> dict[str, Audio]:
    """WORLD analysis once, resynthesis with F0 raised 3 semitones and with the log-F0
    contour mirrored between its extremes; the spectral envelope and aperiodicity stay."""
    import pyworld

    x = audio.samples.astype(np.float64)
    f0 = _dtw.track_f0(x, SR, "pyin", 5.0)  # dio doubles the Piper voice's F0 (see _dtw.py)
    t = np.arange(len(f0)) * 0.005
    sp = pyworld.cheaptrick(x, f0, t, SR, f0_floor=_dtw.F0_FLOOR)
    ap = pyworld.d4c(x, f0, t, SR)
    voiced = f0 > 0
    lf = np.log(f0[voiced])
    inverted = f0.copy()
    inverted[voiced] = np.exp(lf.min() + lf.max() - lf)

    def synth(f):
        return Audio(pyworld.synthesize(np.ascontiguousarray(f), sp, ap, SR).astype(np.float32), SR)

    return {"up3": synth(f0 * 2 ** (3 / 12)), "inverted": synth(inverted)}


def _stretch(audio: Audio, rate: float) -> Audio:
    import librosa

    return Audio(librosa.effects.time_stretch(audio.samples, rate=rate).astype(np.float32), SR)


def _noisy(audio: Audio, snr_db: float) -> Audio:
    x = audio.samples.astype(np.float64)
    noise = np.random.default_rng(7).standard_normal(len(x))
    noise *= math.sqrt(np.mean(x ** 2) / 10 ** (snr_db / 10) / np.mean(noise ** 2))
    return Audio((x + noise).astype(np.float32), SR)


@pytest.fixture(scope="module")
def clips(piper, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("signal")
    c, paths = {}, {}
    for name, text in (("piper_a", TEXT_A), ("piper_b", TEXT_B)):
        c[name] = resample(piper.synthesize([SynthesisRequest(name, text, "en")])[0], SR)
    for name, text, rate in (("es_a150", TEXT_A, 150), ("es_a175", TEXT_A, 175), ("es_b175", TEXT_B, 175)):
        raw, paths[name] = _espeak(tmp, name, text, rate)
        c[name] = resample(raw, SR)
    c["piper_a_stretch"] = _stretch(c["piper_a"], 0.85)
    c["es_a175_stretch"] = _stretch(c["es_a175"], 0.85)
    c["piper_a_noise20"] = _noisy(c["piper_a"], 20)
    for voice in ("piper_a", "es_a175"):
        for k, v in _world(c[voice]).items():
            c[f"{voice}_{k}"] = v
    c["silence"] = Audio(np.zeros(SR, np.float32), SR)
    c["short"] = Audio(c["piper_a"].samples[SR: SR + SR // 20], SR)  # 0.05 s of speech
    burst = np.zeros(SR, np.float32)
    burst[8000:8320] = c["piper_a"].samples[SR: SR + 320]  # 0.02 s of sound in 1 s of silence
    c["burst"] = Audio(burst, SR)
    c["noise_only"] = Audio((np.random.default_rng(3).standard_normal(SR * 2) * 0.05).astype(np.float32), SR)
    c["paths"] = paths
    return c


# (case, output clip, reference clip or None)
CASES = [
    ("piper identical", "piper_a", "piper_a"),
    ("espeak identical", "es_a175", "es_a175"),
    ("piper stretch 0.85x", "piper_a_stretch", "piper_a"),
    ("espeak stretch 0.85x", "es_a175_stretch", "es_a175"),
    ("espeak -s150 vs -s175", "es_a150", "es_a175"),
    ("espeak other sentence", "es_b175", "es_a175"),
    ("piper other sentence", "piper_b", "piper_a"),
    ("piper WORLD +3 st", "piper_a_up3", "piper_a"),
    ("espeak WORLD +3 st", "es_a175_up3", "es_a175"),
    ("piper WORLD inverted F0", "piper_a_inverted", "piper_a"),
    ("espeak WORLD inverted F0", "es_a175_inverted", "es_a175"),
    ("piper noise 20 dB", "piper_a_noise20", "piper_a"),
    ("noise output", "noise_only", "piper_a"),
    ("silent output", "silence", "piper_a"),
    ("silent reference", "piper_a", "silence"),
    ("0.05 s output", "short", "piper_a"),
    ("0.02 s burst in 1 s", "burst", "piper_a"),
    ("no reference", "piper_a", None),
]


@pytest.fixture(scope="module")
def metrics():
    return {"mel_dtw": MelDTW(), "mcd": MCD(), "f0": F0()}


def _score(metric, out: Audio, ref: Audio | None):
    item = ScoringItem(Utterance("u", "x"), "en", out, reference_audio=ref)
    return metric.score([item])[0]


@pytest.fixture(scope="module")
def table(clips, metrics):
    """case -> {value name: value, metric name + '_note': note}; every pair scored once."""
    out = {}
    for case, o, r in CASES:
        row = {}
        for name, metric in metrics.items():
            s = _score(metric, clips[o], clips[r] if r else None)
            row.update(s.values)
            row[f"{name}_note"] = s.note
        out[case] = row
    return out


@pytest.mark.slow
def test_identical_clip_is_perfect(table):
    for case in ("piper identical", "espeak identical"):
        v = table[case]
        assert v["mel_dtw"] == pytest.approx(0.0, abs=1e-9), case
        assert v["duration_ratio"] == 1.0
        assert v["mcd"] < 0.1
        assert v["f0_corr"] == pytest.approx(1.0, abs=1e-9)
        assert v["f0_rmse_cents"] == pytest.approx(0.0, abs=1e-9)
        assert v["vuv_error"] == 0.0


@pytest.mark.slow
def test_time_stretch_aligns(table):
    for voice in ("piper", "espeak"):
        stretched = table[f"{voice} stretch 0.85x"]
        assert stretched["mel_dtw"] < 0.7 * table[f"{voice} other sentence"]["mel_dtw"], voice
        assert stretched["duration_ratio"] == pytest.approx(1 / 0.85, abs=0.04)
    # What remains is mostly the phase vocoder's smearing, not timing: the Piper stretch
    # costs half of another sentence, espeak's buzzy source about two thirds.
    assert table["piper stretch 0.85x"]["mel_dtw"] < 0.6 * table["piper other sentence"]["mel_dtw"]
    # The Piper voice's missing fundamental lets the stretch flip some frames an octave
    # (f0_corr about 0.8); espeak's contour survives the phase vocoder intact.
    assert table["espeak stretch 0.85x"]["f0_corr"] > 0.9


@pytest.mark.slow
def test_same_sentence_at_another_rate_is_close(table):
    rate, other = table["espeak -s150 vs -s175"], table["espeak other sentence"]
    assert rate["mel_dtw"] < 0.4 * other["mel_dtw"]
    assert rate["mcd"] < 0.4 * other["mcd"]
    assert rate["mcd"] < 4.0 < 8.0 < other["mcd"]
    assert rate["duration_ratio"] == pytest.approx(175 / 150, abs=0.08)
    assert rate["f0_corr"] > 0.95


@pytest.mark.slow
def test_pitch_shift_is_300_cents_with_the_same_contour(table):
    for case in ("piper WORLD +3 st", "espeak WORLD +3 st"):
        v = table[case]
        assert v["f0_corr"] > 0.95, case
        assert v["f0_rmse_cents"] == pytest.approx(300, abs=30), case


@pytest.mark.slow
def test_inverted_contour_anticorrelates(table):
    for case in ("piper WORLD inverted F0", "espeak WORLD inverted F0"):
        assert table[case]["f0_corr"] < -0.5, case


@pytest.mark.slow
def test_noise_costs_less_than_another_sentence(table):
    noisy, other = table["piper noise 20 dB"], table["piper other sentence"]
    assert 0 < noisy["mel_dtw"] < other["mel_dtw"]
    assert 0 < noisy["mcd"] < other["mcd"]
    assert noisy["f0_corr"] > 0.9


@pytest.mark.slow
def test_unvoiced_output_keeps_vuv_error_only(table):
    v = table["noise output"]
    assert math.isnan(v["f0_corr"]) and math.isnan(v["f0_rmse_cents"])
    assert "voiced in both" in v["f0_note"]
    assert v["vuv_error"] > 0.3


@pytest.mark.slow
@pytest.mark.parametrize("case, reason", [
    ("silent output", "output is silent"),
    ("silent reference", "reference is silent"),
    ("0.05 s output", "shorter than 0.1 s"),
    ("0.02 s burst in 1 s", "after trimming"),
    ("no reference", "no reference audio"),
])
def test_unscorable_pairs_are_nan_with_a_note(table, metrics, case, reason):
    v = table[case]
    for name, metric in metrics.items():
        assert all(math.isnan(v[k]) for k in metric.higher_is_better), (case, name)
        assert reason in v[f"{name}_note"], (case, name, v[f"{name}_note"])


def test_metric_attributes(metrics):
    for m in metrics.values():
        assert m.sample_rate == SR
        assert m.needs_reference and not m.needs_transcript
    assert metrics["f0"].higher_is_better == {"f0_corr": True, "f0_rmse_cents": False, "vuv_error": False}
    with pytest.raises(ValueError):
        F0(f0_method="crepe")
    with pytest.raises(ValueError):
        MCD(sample_rate=8000)


@pytest.mark.slow
def test_other_f0_trackers_selectable(clips):
    for method in ("dio", "harvest"):
        v = _score(F0(f0_method=method), clips["es_a175"], clips["es_a175"]).values
        assert v == {"f0_corr": pytest.approx(1.0), "f0_rmse_cents": 0.0, "vuv_error": 0.0}, method
    # The same sentence at two rates, where dio is known to work (a strong fundamental).
    assert _score(F0(f0_method="dio"), clips["es_a150"], clips["es_a175"]).values["f0_corr"] > 0.95


# ---- cross-checks against peer libraries ------------------------------------------------

def _features(clips, o, r):
    return _dtw.log_mel(_dtw.trim(clips[r].samples.astype(np.float64))), \
        _dtw.log_mel(_dtw.trim(clips[o].samples.astype(np.float64)))


@pytest.mark.slow
@pytest.mark.parametrize("o, r", [("es_a150", "es_a175"), ("piper_a_stretch", "piper_a")])
def test_exact_dtw_equals_dtw_python_symmetric1(clips, o, r):
    from dtw import dtw, symmetric1

    ref, out = _features(clips, o, r)
    ours = _dtw.align(ref, out, "exact")
    peer = dtw(ref, out, dist_method="euclidean", step_pattern=symmetric1, distance_only=True)
    assert ours.normalized == pytest.approx(peer.distance / (len(ref) + len(out)), rel=1e-9)
    # The path is a real one: monotone, end to end, and its local distances sum to the cost.
    steps = np.diff(ours.path, axis=0)
    assert tuple(ours.path[0]) == (0, 0) and tuple(ours.path[-1]) == (len(ref) - 1, len(out) - 1)
    assert set(map(tuple, steps)) <= {(1, 1), (1, 0), (0, 1)}
    local = np.linalg.norm(ref[ours.path[:, 0]] - out[ours.path[:, 1]], axis=1)
    assert local.sum() == pytest.approx(ours.total, rel=1e-9)
    assert _score(MelDTW(), clips[o], clips[r]).values["mel_dtw"] == pytest.approx(ours.normalized, rel=1e-12)


@pytest.mark.slow
def test_fastdtw_radius_10_within_2_percent_of_exact(clips):
    exact = _score(MelDTW(), clips["es_a150"], clips["es_a175"]).values["mel_dtw"]
    fast = _score(MelDTW(dtw="fast", radius=10), clips["es_a150"], clips["es_a175"]).values["mel_dtw"]
    assert exact <= fast <= 1.02 * exact


@pytest.mark.slow
def test_mel_cepstrum_equals_pysptk_sp2mc(clips):
    import pysptk
    import pyworld

    x = clips["piper_a"].samples.astype(np.float64)
    _, sp, _ = pyworld.wav2world(x, SR)
    for order, alpha in ((23, 0.42), (13, 0.65)):
        assert np.abs(mel_cepstrum(sp, order, alpha) - pysptk.sp2mc(sp, order, alpha)).max() < 1e-8


@pytest.mark.slow
def test_pymcd_is_reproduced_from_its_settings(clips):
    """pymcd's 'dtw' mode = our pieces with its settings: 22.05 kHz, WORLD at 5 ms with a
    512-point FFT, 13th order, alpha 0.65, c0 kept in the distance, fastdtw radius 1 on
    c1..c13, mean over the path; and pysptk.mcep(itype=3) given WORLD's power spectrum P
    as an amplitude, which makes its cepstrum that of log(P**2 + 1e-8)."""
    import librosa
    import pyworld
    from pymcd.mcd import Calculate_MCD

    ref_path, syn_path = clips["paths"]["es_a175"], clips["paths"]["es_a150"]
    peer = Calculate_MCD(MCD_mode="dtw").calculate_mcd(ref_path, syn_path)

    def mcep(path):
        x, _ = librosa.load(path, sr=22050, mono=True)
        _, sp, _ = pyworld.wav2world(x.astype(np.float64), fs=22050, frame_period=5.0, fft_size=512)
        return mel_cepstrum(sp ** 2 + 1e-8, 13, 0.65)

    ref, syn = mcep(ref_path), mcep(syn_path)
    path = _dtw.align(ref[:, 1:], syn[:, 1:], "fast", radius=1).path
    ours = MCD_DB * np.linalg.norm(ref[path[:, 0]] - syn[path[:, 1]], axis=1).mean()
    assert ours == pytest.approx(peer, rel=1e-9)
