"""The pipeline on real espeak audio and real Whisper, with one sentence made to fail."""

import math

import numpy as np
import pytest
from fakes import Tones

from evalkit import pipeline, schedule, stages
from evalkit.errors import EvalkitError
from evalkit.protocols import Metric
from evalkit.types import Audio, Row, Score, Suite, Utterance
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
                for r, a in zip(requests, out, strict=True)]


@pytest.mark.slow
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


@pytest.mark.slow
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
    normalized = "the old man sat on the red bench in the park"
    assert dropped["char_del"] == 4 and dropped["cer"] == pytest.approx(4 / len(normalized))




class Peak:
    """A metric whose computation changed between versions: version N reports N times the peak."""

    name = "peak"
    version = "1"
    sample_rate = 16000
    needs_transcript = False
    needs_reference = False
    higher_is_better = {"peak": None}

    def __init__(self):
        self._scored = 0

    def score(self, items):
        self._scored += len(items)
        return [Score({"peak": float(np.abs(i.audio.samples).max()) * int(self.version)}) for i in items]


def test_a_metric_version_bump_rescores_instead_of_reusing_the_cache(tmp_path, monkeypatch):
    """The score cache key holds the metric's version: a bump (a class attribute, so the instance's options
    are unchanged) recomputes every score, and values from the two versions never mix."""
    monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path / "cache"))
    suite = Suite("t", "1", "en", "test", (Utterance("a", "Hi."), Utterance("b", "Good evening.")), "d", "mem")

    def run(n: int) -> tuple[pipeline.Evaluation, Peak]:
        metric = Peak()
        return pipeline.evaluate(suite, Tones(), None, [metric], tmp_path / f"run{n}", workers=0), metric

    first, m1 = run(1)
    peaks = {r.utterance_id: r.values["peak"] for r in first.rows}
    assert m1._scored == 2 and (first.counts.scores_computed, first.counts.scores_cached) == (2, 0)
    assert peaks["a"] == pytest.approx(0.03, rel=1e-3) and peaks["b"] == pytest.approx(0.13, rel=1e-3)
    again, m2 = run(2)  # same version: every score comes from the cache, the metric is not called
    assert m2._scored == 0 and (again.counts.scores_computed, again.counts.scores_cached) == (0, 2)
    assert {r.utterance_id: r.values["peak"] for r in again.rows} == peaks
    monkeypatch.setattr(Peak, "version", "2")
    bumped, m3 = run(3)
    assert m3._scored == 2 and (bumped.counts.scores_computed, bumped.counts.scores_cached) == (2, 0)
    doubled = {k: 2 * v for k, v in peaks.items()}
    assert {r.utterance_id: r.values["peak"] for r in bumped.rows} == pytest.approx(doubled)


class Length(Metric):
    """Process-safe, counting its calls: where and when it scores is visible."""

    name = "length"
    version = "1"
    sample_rate = 16000
    process_safe = True
    higher_is_better = {"length": None}

    def __init__(self):
        self._calls = 0

    def score(self, items):
        self._calls += len(items)
        return [Score({"length": float(len(i.audio.samples))}) for i in items]


def _states(*seconds: float) -> list[stages.State]:
    return [stages.State(Utterance(f"u{i}", "x"), audio=Audio(np.full(int(16000 * s), 0.1, np.float32), 16000))
            for i, s in enumerate(seconds)]


def test_pooled_work_is_planned_then_started_explicitly(tmp_path, monkeypatch):
    """Planning applies the cache and scores nothing; `start` without a pool scores here; `finish`
    applies. A second plan of the same clips finds everything cached and has nothing to start."""
    monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path / "cache"))
    metric, counts, states = Length(), stages.Counts(), _states(0.5, 0.25)
    work = schedule.PooledScoring.plan(states, [metric], "en", counts)
    assert metric._calls == 0 and not any("length" in s.values for s in states)
    work.start(None)
    assert metric._calls == 2 and not work.in_flight
    work.finish(counts)
    assert [s.values["length"] for s in states] == [8000.0, 4000.0] and counts.scores_computed == 2
    again = _states(0.5, 0.25)
    cached = schedule.PooledScoring.plan(again, [metric], "en", counts)
    assert (cached.work, cached.jobs) == ([], []) and counts.scores_cached == 2
    assert [s.values["length"] for s in again] == [8000.0, 4000.0]


def test_release_drops_the_clips_and_keeps_the_row():
    (s,) = _states(0.5)
    s.reference = Audio(np.full(8000, 0.2, np.float32), 16000)
    s.audio_at(8000), s.clip_at("reference", 8000)
    row, digest = s.row(), s.digest("audio")
    s.release()
    assert (s.clip("audio"), s.clip("reference"), s.clip("prompt")) == (None, None, None)
    assert s.row() == row and s.digest("audio") == digest


def test_a_recorded_row_without_failure_or_audio_is_refused_by_name(tmp_path):
    with pytest.raises(EvalkitError, match="utterance 'u1' has no failure and no audio"):
        pipeline.recorded_audio(tmp_path, Row("u1", "x", ()))
