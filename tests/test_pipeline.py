"""The pipeline on real espeak audio and real Whisper, with one sentence made to fail."""

import math

import numpy as np
import pytest

from evalkit import pipeline
from evalkit.types import Audio, Row, Suite, Utterance
from evalkit_metrics.intelligibility import Intelligibility


class Flaky:
    """The real espeak adapter, except that it raises on one text and returns NaN on another."""

    name = "flaky"
    batch_size = 4

    def __init__(self, inner):
        self.inner = inner

    def synthesize(self, requests):
        if any(r.text == "Explode here." for r in requests):
            raise RuntimeError("model crashed on this sentence")
        out = self.inner.synthesize(requests)
        return [Audio(np.full(1000, np.nan, np.float32), a.sample_rate) if r.text == "Give me NaN." else a
                for r, a in zip(requests, out)]


def test_failures_are_isolated(tmp_path, espeak_en, asr):
    texts = ["Good morning.", "Explode here.", "Give me NaN.", "See you tomorrow."]
    suite = Suite("t", "1", "en", "test", tuple(Utterance(f"u{i}", t) for i, t in enumerate(texts)), "d", "mem")
    rows = pipeline.evaluate(suite, Flaky(espeak_en), asr, [Intelligibility()], tmp_path).rows
    by_id = {r.utterance_id: r for r in rows}
    assert [r.utterance_id for r in rows] == ["u0", "u1", "u2", "u3"]
    assert "model crashed" in by_id["u1"].failure
    assert "NaN" in by_id["u2"].failure
    for ok in ("u0", "u3"):
        assert by_id[ok].failure is None
        assert by_id[ok].values["cer"] < 0.5
        assert (tmp_path / by_id[ok].audio_path).is_file()
        assert by_id[ok].values["rtf"] > 0
    assert "cer" not in by_id["u1"].values
    agg = pipeline.aggregate(rows)
    assert agg["failures/count"] == 2 and agg["utterances/count"] == 4


def test_aggregate_ignores_nan_and_knows_percentiles():
    rows = [Row(f"u{i}", "x", (), {"cer": v}) for i, v in enumerate([0.0, 0.1, 0.2, 0.3, math.nan])]
    agg = pipeline.aggregate(rows)
    assert agg["cer/mean"] == pytest.approx(0.15)
    assert agg["cer/median"] == pytest.approx(0.15)
    assert agg["cer/p90"] == pytest.approx(0.27)
    assert agg["failures/count"] == 0


class SaysSomethingElse:
    """Real Piper speech of a given text, whatever the suite asked for: a model that drops a word."""

    name = "says-something-else"
    batch_size = 1

    def __init__(self, piper, spoken: dict[str, str]):
        self.piper, self.spoken = piper, spoken

    def synthesize(self, requests):
        from evalkit.types import SynthesisRequest

        return self.piper.synthesize([SynthesisRequest(r.utterance_id, self.spoken[r.utterance_id], r.language)
                                      for r in requests])


def test_known_answers_on_real_audio(tmp_path, piper, asr):
    """Identical speech scores 0; speech with one word left out scores exactly one deletion."""
    full = "The old man sat on the red bench in the park."
    suite = Suite("t", "1", "en", "test", (Utterance("same", full), Utterance("dropped", full)), "d", "mem")
    adapter = SaysSomethingElse(piper, {"same": full, "dropped": full.replace(" red", "")})
    rows = {r.utterance_id: r for r in pipeline.evaluate(suite, adapter, asr, [Intelligibility()], tmp_path).rows}
    assert rows["same"].values["cer"] == 0.0 and rows["same"].values["wer"] == 0.0
    dropped = rows["dropped"].values
    assert (dropped["word_sub"], dropped["word_del"], dropped["word_ins"]) == (0, 1, 0)
    assert dropped["wer"] == pytest.approx(1 / len(full.split()))
    assert dropped["char_del"] == 4 and dropped["cer"] == pytest.approx(4 / len("the old man sat on the red bench in the park"))
