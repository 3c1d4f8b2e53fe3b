"""evalkit calibrate: a deterministic model (espeak, Whisper) gives zero spread and gates of 0; a seeded
stochastic one gives a spread its gates absorb, and a metric that is not deterministic on identical
audio is named; the gates file passes `evalkit report` for another repeat and fails a clearly degraded
run. Everything in process (the session's Whisper is reused), on a few utterances."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import zlib
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import run_in_process

from evalkit import calibrate as cal
from evalkit import gates as gates_mod
from evalkit import runner
from evalkit.adapters.espeak import EspeakAdapter
from evalkit.protocols import Metric
from evalkit.types import Audio, Score

HERE = __name__  # plug-ins below are loaded by reference, "test_calibrate:Name"


class NoisyTones:
    """A stochastic TTS stand-in: a tone per sentence (its level set by the text's length), with a
    level drawn from the request's seed for the whole run and noise per utterance: the same seed
    gives the same clips, another seed others. MODEL is noisy-tones:GAIN; a gain below 1 is a
    clearly degraded (quieter) model."""

    name = "noisy-tones"
    batch_size = 4

    def __init__(self, model: str, device: str = "cpu") -> None:
        self.model = model
        self.gain = float(model.partition(":")[2] or 1.0)

    @classmethod
    def claims(cls, model: str) -> bool:
        return model.startswith("noisy-tones")

    def synthesize(self, requests):
        t = np.arange(8000) / 16000
        out = []
        for r in requests:
            rng = np.random.default_rng([r.seed, zlib.crc32(r.utterance_id.encode())])
            run_level = 1 + 0.03 * np.random.default_rng(r.seed).standard_normal()
            amp = self.gain * run_level * (0.2 + 0.01 * (len(r.text) % 20))
            x = amp * np.sin(2 * np.pi * 220 * t) * (1 + 0.15 * rng.standard_normal(t.size))
            out.append(Audio(np.clip(x, -1, 1).astype(np.float32), 16000))
        return out

    def describe(self):
        return {"model": self.model, "model_sha256": "", "sample_rate": "16000", "device": "cpu",
                "adapter_version": "1"}

    def close(self) -> None:
        pass


class Level(Metric):
    """RMS level in dB: deterministic."""

    name = "level"
    version = "1"
    sample_rate = 16000
    higher_is_better = {"level_db": True}
    headline = "level_db"

    def score(self, items):
        return [Score({"level_db": 20 * math.log10(float(np.sqrt(np.mean(i.audio.samples.astype(float) ** 2))))})
                for i in items]


class Jitter(Metric):
    """Peak level plus a little unseeded noise: not deterministic on purpose."""

    name = "jitter"
    version = "1"
    sample_rate = 16000
    higher_is_better = {"jitter": False}

    def score(self, items):
        return [Score({"jitter": float(np.abs(i.audio.samples).max()) + random.random() * 1e-3}) for i in items]


class Garbled(EspeakAdapter):
    """espeak reading every word backwards: clearly less intelligible, deterministically."""

    def synthesize(self, requests):
        flipped = [dataclasses.replace(r, text=" ".join(w[::-1] for w in r.text.split())) for r in requests]
        return super().synthesize(flipped)


def write_suite(folder: Path, n: int = 5) -> Path:
    folder.mkdir()
    (folder / "suite.yaml").write_text("name: tones\nversion: 1\nlanguage: en\ndescription: tones\n"
                                       "utterances: u.jsonl\n")
    texts = ["A short one.", "Somewhat longer than that.", "Three words here.", "Fourth sentence, with a comma.",
             "The fifth and last."][:n]
    (folder / "u.jsonl").write_text("".join(json.dumps({"id": f"t{i}", "text": t, "tags": ["plain"]}) + "\n"
                                            for i, t in enumerate(texts)))
    return folder


def quiet(lines: list[str]):
    return lambda: nullcontext(runner.pipeline.Progress()), lines.append


def report(capsys, candidate: Path, baseline: Path, gates: Path, out: Path) -> tuple[int, str]:
    """`evalkit report --gates FILE --fail-on-regression`, in this process."""
    code, out_text, err_text = run_in_process(capsys, "report", "--candidate", str(candidate), "--baseline",
                                              str(baseline), "--gates", str(gates), "--fail-on-regression",
                                              "--out", str(out))
    return code, out_text + err_text


def test_round_up_never_goes_below_its_value():
    assert cal.round_up(0.0) == 0.0
    assert cal.round_up(0.006133) == 0.0062
    assert cal.round_up(0.0062) == 0.0062
    assert cal.round_up(1.04) == 1.1
    for v in np.random.default_rng(0).uniform(1e-5, 10, 200):
        assert v <= cal.round_up(float(v)) <= v * 1.11


def test_fresh_cache_hides_earlier_values_but_shares_models(tmp_path, monkeypatch):
    from evalkit import cache as cache_mod

    monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path / "real"))
    cache_mod.JsonCache("scores").put("ab" * 32, {"v": 1})
    (cache_mod.cache_dir("models") / "whisper").mkdir()
    with cal.fresh_cache(tmp_path / "fresh"):
        assert cache_mod.JsonCache("scores").get("ab" * 32) is None
        assert (cache_mod.cache_dir("models") / "whisper").is_dir()
    assert cache_mod.JsonCache("scores").get("ab" * 32) == {"v": 1}


def test_a_seeded_stochastic_model_spreads_and_its_gates_absorb_it(tmp_path, capsys):
    suite = write_suite(tmp_path / "suite")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    base = runner.RunConfig(suite=str(suite), model="noisy-tones:1", adapter=f"{HERE}:NoisyTones",
                            metrics=(f"{HERE}:Level", f"{HERE}:Jitter"), workers=0, tracking_uri=uri)
    lines: list[str] = []
    progress, say = quiet(lines)
    result = cal.calibrate(cal.CalibrateConfig(base, 3, tmp_path / "cal"), progress, say)
    level = next(k for k in result.keys if k.key == "level_db")
    jitter = next(k for k in result.keys if k.key == "jitter")
    # Another seed, another clip: the run means move, a little.
    assert level.n == 5 and level.sd > 0 and level.range > 0 and level.utterance_sd_max > 0
    assert level.deterministic and level.headline and level.detectable > 0
    assert level.gate is not None and level.gate >= level.detectable and level.gate >= level.largest_delta
    assert not jitter.deterministic and "identical audio" in (jitter.nondeterminism or "")
    assert jitter.gate is None  # not a headline key: listed, not gated
    assert result.asr_deterministic is None  # nothing was transcribed
    assert result.identical_audio == 5  # repeat 1 and its re-score hold the same clips
    assert len(result.pairs) == 6 and all(p.status == "pass" for p in result.pairs)
    # The file is the suite-header syntax, and gates reads it.
    text = result.gates_file.read_text()
    assert yaml.safe_load(text)["gates"] == {"level_db": {"max_abs": level.gate}, "default": "none"}
    assert "#   jitter: {max_abs:" in text and "6 of 6 ordered repeat pairs pass" in text
    assert gates_mod.from_file(result.gates_file).per_key["level_db"].max_abs == level.gate
    doc = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    assert {k["key"] for k in doc["keys"]} == {"level_db", "jitter"}
    summaries = [json.loads((p / "summary.json").read_text()) for p in result.repeats]
    assert [s["params"].get("seed", 0) for s in summaries] == [0, 1, 2]
    assert {s["tracking"]["experiment"] for s in summaries} == {"evalkit-calibrate-tones"}
    assert len({s["tags"][cal.CALIBRATION_TAG] for s in summaries}) == 1

    # The gates pass another repeat (a fourth seed) and fail a clearly degraded model.
    again = runner.run(dataclasses.replace(base, seed=7, out_dir=tmp_path / "again"))
    worse = runner.run(dataclasses.replace(base, model="noisy-tones:0.5", out_dir=tmp_path / "worse"))
    code, text = report(capsys, again.out_dir, result.repeats[0], result.gates_file, tmp_path / "r1")
    assert code == 0 and "verdict: pass" in text, text
    code, text = report(capsys, worse.out_dir, result.repeats[0], result.gates_file, tmp_path / "r2")
    assert code == 1 and "verdict: regressed" in text and "level_db" in text, text

    # The same command again (as after an interruption) keeps what finished: nothing is re-run.
    lines.clear()
    second = cal.calibrate(cal.CalibrateConfig(base, 3, tmp_path / "cal"), progress, say)
    assert sum("finished before, kept" in line for line in lines) == 4, lines
    assert second.calibration_id == result.calibration_id
    assert [k.means for k in second.keys] == [k.means for k in result.keys]


def test_a_gate_that_would_fire_on_a_repeat_pair_is_raised(tmp_path, monkeypatch):
    """Verification, not construction: gates written too tight are caught on the repeat pairs."""
    suite = write_suite(tmp_path / "suite", 4)
    base = runner.RunConfig(suite=str(suite), model="noisy-tones:1", adapter=f"{HERE}:NoisyTones",
                            metrics=(f"{HERE}:Level",), workers=0, tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    monkeypatch.setattr(cal, "Z95", 0.0)  # no noise floor: the gate starts at the largest delta...
    real = cal._spread

    def tight(*args, **kwargs):
        s = real(*args, **kwargs)
        return dataclasses.replace(s, gate=0.0 if s.gate is not None else None)  # ...or here, at nothing

    monkeypatch.setattr(cal, "_spread", tight)
    lines: list[str] = []
    result = cal.calibrate(cal.CalibrateConfig(base, 2, tmp_path / "cal"), *quiet(lines))
    level = result.keys[0]
    assert level.gate is not None and level.gate > 0 and all(p.status == "pass" for p in result.pairs)
    assert level.gate >= level.largest_delta


def test_bad_input_is_refused_before_any_work(tmp_path):
    from test_correlate import evalkit

    code, _, stderr = evalkit("calibrate", "--suite", "en-base", "espeak:en-us", "--repeats", "1")
    assert code == 2 and "--repeats" in stderr
    code, _, stderr = evalkit("calibrate", "--suite", "no-such-suite", "espeak:en-us", "--repeats", "2",
                              "--out", str(tmp_path / "c"))
    assert code == 2 and len(stderr.strip().splitlines()) == 1 and not (tmp_path / "c").exists(), stderr


@pytest.mark.slow
def test_espeak_is_deterministic_its_gates_pass_a_repeat_and_fail_a_degraded_run(tmp_path, asr, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    base = runner.RunConfig(suite="en-base", model="espeak:en-us", metrics=("intelligibility",), limit=3, workers=0,
                            tracking_uri=uri)
    lines: list[str] = []
    result = cal.calibrate(cal.CalibrateConfig(base, 2, tmp_path / "cal"), *quiet(lines))
    assert result.asr_deterministic is True and result.identical_audio == 3
    measured = [k for k in result.keys if k.n]  # a key NaN on every utterance (not applicable) measures nothing
    assert {"cer", "wer"} <= {k.key for k in measured}
    for k in measured:
        assert k.deterministic, k
        assert k.sd == 0 and k.range == 0 and k.utterance_sd_max == 0 and k.detectable == 0, k
    cer = next(k for k in result.keys if k.key == "cer")
    assert cer.headline and cer.gate == 0.0
    assert all(p.status == "pass" for p in result.pairs)
    # Every repeat and the re-score transcribed anew: nothing came from a cache.
    for folder in [*result.repeats, result.rescore]:
        assert json.loads((folder / "summary.json").read_text())["cache"]["transcripts_cached"] == 0

    again = runner.run(dataclasses.replace(base, out_dir=tmp_path / "again"))
    worse = runner.run(dataclasses.replace(base, adapter=f"{HERE}:Garbled", out_dir=tmp_path / "worse"))
    code, text = report(capsys, again.out_dir, result.repeats[0], result.gates_file, tmp_path / "r1")
    assert code == 0 and "verdict: pass" in text, text
    code, text = report(capsys, worse.out_dir, result.repeats[0], result.gates_file, tmp_path / "r2")
    assert code == 1 and "verdict: regressed" in text and "cer" in text, text


def test_the_seed_is_recorded_only_when_set():
    """run.json of a seed-0 run reads as before the field existed (its resume and evaluation key
    unchanged); another seed is part of both."""
    plain = runner.RunConfig(suite="en-base", model="espeak:en-us")
    seeded = dataclasses.replace(plain, seed=2)
    assert "seed" not in runner._config_dict(plain) and runner._config_dict(seeded)["seed"] == 2
    assert runner._config_from_dict(runner._config_dict(seeded)).seed == 2
    assert runner._comparable(runner._config_dict(plain)) != runner._comparable(runner._config_dict(seeded))
