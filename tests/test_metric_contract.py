"""The declared metric contract: defaults from the base class, plug-ins without it, key
collisions refused, and metric options from the command line down to the values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from fakes import Tones
from test_e2e import run_in_process

from evalkit import metric_loading, pipeline, plugins, runner, stages, workers
from evalkit.errors import EvalkitError
from evalkit.protocols import Metric, declared
from evalkit.types import Audio, Score, ScoringItem, Suite, Utterance
from evalkit_metrics.alignment import MCD, MelDTW
from evalkit_metrics.intelligibility import Intelligibility
from evalkit_metrics.prosody import F0

HERE = __name__  # plug-ins below are loaded by reference, "test_metric_contract:Name"


class Bare:
    """A plug-in written to the attribute contract alone: no base class, only what is required."""

    name = "bare"
    version = "1"
    sample_rate = 16000
    higher_is_better = {"bare_peak": True}

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def score(self, items):
        return [Score({"bare_peak": self.scale * float(np.abs(i.audio.samples).max())}) for i in items]


class Typed(Metric):
    """Every convertible parameter type, and one that is not."""

    name = "typed"
    version = "1"
    sample_rate = 16000
    higher_is_better = {"typed": None}

    def __init__(self, n: int = 1, x: float = 0.5, flag: bool = False, word: str = "a", anything=None,
                 pair: tuple = (1, 2)) -> None:
        if n < 0:
            raise ValueError(f"n must not be negative, got {n}")
        self.n, self.x, self.flag, self.word, self.anything, self.pair = n, x, flag, word, anything, pair
        self.options = {"n": n, "x": x, "flag": flag, "word": word}

    def score(self, items):
        return [Score({"typed": float(self.n)}) for _ in items]


def _named(name: str, keys: dict, **attrs) -> type:
    return type(name, (), {"name": name.lower(), "version": "1", "sample_rate": 16000, "higher_is_better": keys,
                           "score": lambda self, items: [Score(dict.fromkeys(keys, 0.0)) for _ in items], **attrs})


TextKey = _named("TextKey", {"text": None})
Rtf = _named("Rtf", {"rtf": False})
Cer = _named("Cer", {"cer": False})
Aligns = _named("Aligns", {"aligns": False}, alignments=("transcript",))
Headless = _named("Headless", {"h": False}, headline="cer")
NoVersion = type("NoVersion", (), {"name": "noversion", "sample_rate": 16000, "higher_is_better": {"v": True},
                                   "score": lambda self, items: []})


def load(*names: str, options=None, refs: bool = True) -> list[Metric]:
    return runner.load_metrics(names, refs, options=options)


# --- the contract ---------------------------------------------------------------------------


def test_every_installed_metric_derives_from_the_base_class_and_passes_the_checks():
    metrics = runner.load_metrics(None, have_references=True, have_prompts=True)
    assert {m.name for m in metrics} == {name for name, _, _ in plugins.load_all(plugins.METRICS)}
    assert {"intelligibility", "f0", "mel_dtw"} <= {m.name for m in metrics}
    for m in metrics:
        assert isinstance(m, Metric) and m.implementation() is m, m.name  # never wrapped
        assert m.headline is None or m.headline in m.higher_is_better


def test_intelligibility_declares_the_alignment_column_it_really_writes():
    m = Intelligibility()
    item = ScoringItem(Utterance("u", "a cat"), "en", Audio(np.zeros(160, np.float32), 16000),
                       reference_text_norm="a cat", transcript_norm="a bat")
    score = m.score([item])[0]
    assert set(score.texts) == set(m.alignments) == {"cer_alignment"}
    assert score.texts["cer_alignment"] == "a [c→b]at"
    assert m.headline == "cer" and score.values["cer"] == pytest.approx(1 / 5)  # one of 5 characters


def test_a_plugin_without_the_base_class_loads_with_every_default():
    (m,) = load(f"{HERE}:Bare")
    assert isinstance(m, Metric) and isinstance(m.implementation(), Bare)
    assert (m.name, m.version, m.sample_rate, dict(m.higher_is_better)) == ("bare", "1", 16000, {"bare_peak": True})
    assert (m.needs_transcript, m.needs_reference, m.accepts_speaker_prompt, m.process_safe) == (False,) * 4
    assert (m.counts, dict(m.corpus), dict(m.options), m.alignments, m.headline) == ((), {}, {}, (), None)
    assert declared(m) is m


def test_a_plugin_without_the_base_class_scores_and_caches_as_itself(tmp_path, monkeypatch):
    """Through the whole pipeline: its values, from its own score; its cache key is its own class
    and settings, so a run with another setting recomputes and one with the same setting does not."""
    monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path / "cache"))
    suite = Suite("t", "1", "en", "test", (Utterance("a", "Hi."), Utterance("b", "Good evening.")), "d", "mem")

    def run(n: int, **options) -> pipeline.Evaluation:
        metrics = load(f"{HERE}:Bare", options={f"{HERE}:Bare": options} if options else None)
        return pipeline.evaluate(suite, Tones(), None, metrics, tmp_path / f"run{n}", workers=0)

    first = run(1)
    peaks = {r.utterance_id: r.values["bare_peak"] for r in first.rows}
    assert peaks["b"] > peaks["a"] > 0  # the longer text is the louder tone
    again, doubled = run(2), run(3, scale="2")
    assert (again.counts.scores_cached, again.counts.scores_computed) == (2, 0)
    assert (doubled.counts.scores_cached, doubled.counts.scores_computed) == (0, 2)
    assert {r.utterance_id: r.values["bare_peak"] for r in doubled.rows} == pytest.approx(
        {k: 2 * v for k, v in peaks.items()})


def test_a_plugin_missing_a_required_attribute_is_refused():
    with pytest.raises(EvalkitError, match="NoVersion does not declare version"):
        load(f"{HERE}:NoVersion")


@pytest.mark.parametrize("names, message", [
    ((f"{HERE}:TextKey",), "metric textkey writes 'text', a column evalkit reserves"),
    ((f"{HERE}:Rtf",), "metric rtf writes 'rtf', a column evalkit reserves"),
    ((f"{HERE}:Aligns",), "metric aligns writes 'transcript', a column evalkit reserves"),
    (("intelligibility", f"{HERE}:Cer"), "metrics intelligibility and cer both write 'cer'"),
    ((f"{HERE}:Headless",), "headline names 'cer' \\(not a value key\\)"),
])
def test_key_collisions_and_bad_declarations_are_refused_with_one_line(names, message):
    with pytest.raises(EvalkitError, match=message) as info:
        load(*names)
    assert "\n" not in str(info.value)


def test_a_metric_named_twice_loads_once():
    assert [m.name for m in load("f0", "mel_dtw", "f0")] == ["f0", "mel_dtw"]


# --- options --------------------------------------------------------------------------------


def test_options_parse_by_metric_and_key():
    parsed = metric_loading.parse_options(["f0.f0_method=dio", "mel_dtw.dtw=fast", "f0.radius=5",
                                           "pkg.mod:Name.level= 3 ", "f0.f0_method=harvest"])
    assert parsed == {"f0": {"f0_method": "harvest", "radius": "5"}, "mel_dtw": {"dtw": "fast"},
                      "pkg.mod:Name": {"level": "3"}}  # a later setting wins


@pytest.mark.parametrize("spec", ["f0", "f0=dio", ".f0_method=dio", "f0.=dio", "f0.f0-method=dio"])
def test_a_malformed_option_is_refused(spec):
    with pytest.raises(EvalkitError, match="--metric-option expects NAME.KEY=VALUE"):
        metric_loading.parse_options([spec])


def test_values_convert_to_the_type_of_the_parameter_default():
    m = metric_loading.construct("typed", Typed, {"n": "7", "x": "2.5e-1", "flag": "Yes", "word": "42",
                                                  "anything": "free text"})
    assert (m.n, m.x, m.flag, m.word, m.anything) == (7, 0.25, True, "42", "free text")
    assert type(m.n) is int and type(m.x) is float and type(m.flag) is bool
    assert metric_loading.construct("typed", Typed, {"flag": "off"}).flag is False


def test_real_metrics_take_their_options():
    f0 = metric_loading.construct("f0", F0, {"f0_method": "dio", "dtw": "fast", "radius": "3"})
    assert (f0.f0_method, f0.dtw, f0.radius) == ("dio", "fast", 3)
    assert f0.options == {"f0_method": "dio", "dtw": "fast", "radius": 3, "min_voiced": 20}
    assert metric_loading.construct("mel_dtw", MelDTW, {"dtw": "fast"}).dtw == "fast"
    mcd = metric_loading.construct("mcd", MCD, {"sample_rate": "22050"})
    assert (mcd.sample_rate, mcd.order) == (22050, 34)


@pytest.mark.parametrize("cls, options, message", [
    (Typed, {"m": "1"}, "--metric-option typed.m: metric typed has no option 'm' \\(its options: n, x, flag, word"),
    (Typed, {"n": "seven"}, "--metric-option typed.n: expects an integer, got 'seven'"),
    (Typed, {"n": "1.5"}, "expects an integer"),
    (Typed, {"x": "half"}, "--metric-option typed.x: expects a number, got 'half'"),
    (Typed, {"flag": "maybe"}, "--metric-option typed.flag: expects true or false, got 'maybe'"),
    (Typed, {"pair": "1,2"}, "typed.pair: cannot be set from the command line \\(its default is a tuple\\)"),
    (Typed, {"n": "-1"}, "metric typed refused n=-1: n must not be negative"),
    (F0, {"f0_method": "crepe"}, "metric f0 refused f0_method='crepe': f0_method must be one of"),
    (MelDTW, {"dtw": "slow"}, "metric mel_dtw refused dtw='slow': dtw must be one of"),
    (MCD, {"sample_rate": "8000"}, "metric mcd refused sample_rate=8000: no mel-cepstrum order"),
    (Intelligibility, {"level": "1"}, "metric intelligibility has no option 'level' \\(its options: none\\)"),
])
def test_each_refusal_is_one_line(cls, options, message):
    with pytest.raises(EvalkitError, match=message) as info:
        metric_loading.construct(cls.name, cls, options)
    assert "\n" not in str(info.value)


def test_options_for_a_metric_not_in_the_run_are_refused():
    with pytest.raises(EvalkitError, match="--metric-option f00.f0_method: f00 is not a metric of this run "
                                           "\\(its metrics: f0, mel_dtw; choose them with --metrics\\)"):
        load("f0", "mel_dtw", options={"f00": {"f0_method": "dio"}})
    # by default a reference metric is left out of a run without references: its options too
    with pytest.raises(EvalkitError, match="f0 is not a metric of this run"):
        runner.load_metrics(None, have_references=False, options={"f0": {"f0_method": "dio"}})


def test_options_are_part_of_the_score_cache_key():
    t = np.arange(16000, dtype=np.float32) / 16000
    s = stages.State(Utterance("u", "x"), audio=Audio(0.3 * np.sin(2 * np.pi * 150 * t), 16000),
                     reference=Audio(0.3 * np.sin(2 * np.pi * 160 * t), 16000))
    keys = {label: stages.score_key(s, m, "en") for label, m in (
        ("pyin", F0()), ("pyin again", F0()), ("dio", F0(f0_method="dio")), ("fast", F0(dtw="fast")))}
    assert keys["pyin"] == keys["pyin again"]
    assert len({keys["pyin"], keys["dio"], keys["fast"]}) == 3


def test_run_config_records_options_in_a_json_round_trip():
    config = runner.RunConfig(suite="en-base", model="espeak:en-us", metrics=("f0",),
                              metric_options={"f0": {"f0_method": "dio", "radius": "5"}})
    d = json.loads(json.dumps(runner._config_dict(config)))
    assert d["metric_options"] == {"f0": {"f0_method": "dio", "radius": "5"}}
    assert runner._config_from_dict(d) == config
    # none: left out, so run.json files written before the field read as the same configuration
    plain = runner.RunConfig(suite="en-base", model="espeak:en-us")
    assert "metric_options" not in runner._config_dict(plain)
    assert runner._config_from_dict(runner._config_dict(plain)) == plain
    with pytest.raises(EvalkitError, match="metric_options must map metric names"):
        runner._config_from_dict({**d, "metric_options": {"f0": {"radius": 5}}})


def test_a_bad_option_on_the_command_line_exits_2_with_one_line(capsys, tmp_path):
    code, _, err = run_in_process(capsys, "run", "--suite", "en-base", "espeak:en-us", "--metrics", "f0",
                                  "--metric-option", "f0.f0_methd=dio", "--out", str(tmp_path / "out"))
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "metric f0 has no option 'f0_methd'" in lines[0], err
    assert not (tmp_path / "out").exists()


# --- threads --------------------------------------------------------------------------------


def test_whisper_gets_the_cores_the_metric_workers_leave():
    pooled = [F0()]
    for n in range(1, 5):
        assert pipeline.whisper_threads(pooled, n, replaying=False) == max(1, workers.cores() - n)
    assert pipeline.whisper_threads(pooled, 0, replaying=False) is None  # no pool: the backend's default
    assert pipeline.whisper_threads([Intelligibility()], 2, replaying=False) is None  # nothing to pool
    assert pipeline.whisper_threads(pooled, 1, replaying=True) is None  # a re-score starts no single worker


def test_the_asr_factory_builds_the_backend_with_its_threads():
    from evalkit.asr import resolve

    two, default = resolve("faster-whisper:base", "cpu", 2), resolve("faster-whisper:base", "cpu")
    assert (two.threads, default.threads) == (2, None)
    assert resolve("faster-whisper:base", "cpu", 2) is two  # one model per setting, reused
    assert two.describe() == default.describe()  # threads never change a transcript: not provenance


# --- end to end -----------------------------------------------------------------------------




def _rows(folder):
    return {r["id"]: r for r in map(json.loads, (folder / "utterances.jsonl").read_text().splitlines())}


@pytest.mark.slow
def test_f0_method_from_the_command_line_changes_values_params_and_cache_keys(tmp_path, capsys, monkeypatch,
                                                                              sqlite_uri, piper):
    """espeak against Piper references, scored with pyin and then with dio: different F0 values,
    the option in summary.json's params and run.json, and a cache key of its own (the same clips
    are scored again, not looked up); a re-score with the option finds exactly those values."""
    import soundfile as sf

    from evalkit import suite as suite_mod
    from evalkit.types import SynthesisRequest

    monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path / "cache"))
    refs = tmp_path / "refs"
    refs.mkdir()
    for u in suite_mod.load("en-base").utterances[:2]:
        clip = piper.synthesize([SynthesisRequest(u.id, u.text, "en")])[0]
        sf.write(refs / f"{u.id}.wav", clip.samples, clip.sample_rate)
    common = ("--suite", "en-base", "espeak:en-us", "--limit", "2", "--metrics", "f0", "--reference-run", str(refs),
              "--workers", "0", "--tracking-uri", sqlite_uri)

    def run(name: str, *extra: str) -> dict:
        code, _, err = run_in_process(capsys, "run", *common, "--out", str(tmp_path / name), *extra)
        assert code == 0, err
        return json.loads((tmp_path / name / "summary.json").read_text())

    pyin, dio = run("pyin"), run("dio", "--metric-option", "f0.f0_method=dio")
    assert json.loads(pyin["params"]["metric.f0.options"])["f0_method"] == "pyin"
    assert json.loads(dio["params"]["metric.f0.options"])["f0_method"] == "dio"
    assert json.loads((tmp_path / "dio" / "run.json").read_text())["config"]["metric_options"] == \
        {"f0": {"f0_method": "dio"}}
    assert dio["cache"]["scores_computed"] == 2 and dio["cache"]["scores_cached"] == 0
    a, b = _rows(tmp_path / "pyin"), _rows(tmp_path / "dio")
    for uid in a:
        assert (tmp_path / "pyin" / a[uid]["audio"]).read_bytes() == (tmp_path / "dio" / b[uid]["audio"]).read_bytes()
    keys = ("f0_corr", "f0_rmse_cents", "vuv_error")
    assert any(a[u][k] != b[u][k] for u in a for k in keys)  # the tracker really changed
    assert all(b[u]["vuv_error"] is not None and not math.isnan(b[u]["vuv_error"]) for u in b)

    again = run("pyin-again")  # the same clips and options: every value from the cache
    assert again["cache"]["scores_cached"] == 2 and again["cache"]["scores_computed"] == 0

    code, _, err = run_in_process(capsys, "rescore", str(tmp_path / "pyin"), "--metrics", "f0", "--metric-option",
                                  "f0.f0_method=dio", "--workers", "0", "--out", str(tmp_path / "rescored"))
    assert code == 0, err
    rescored = json.loads((tmp_path / "rescored" / "summary.json").read_text())
    assert rescored["cache"]["scores_cached"] == 2 and rescored["cache"]["scores_computed"] == 0
    assert {u: [r[k] for k in keys] for u, r in _rows(tmp_path / "rescored").items()} == \
           {u: [r[k] for k in keys] for u, r in b.items()}


def test_f0_by_dio_without_pyworld_names_the_extra_before_anything_runs(monkeypatch):
    """pyin needs only the core; dio and harvest need pyworld (the signal extra): a core install
    learns that when the metric is built, not as a failure on every utterance."""
    import sys

    from evalkit.errors import MissingExtra
    from evalkit.metric_loading import construct
    from evalkit_metrics.prosody import F0

    monkeypatch.setitem(sys.modules, "pyworld", None)
    assert construct("f0", F0, {}).options["f0_method"] == "pyin"
    with pytest.raises(MissingExtra, match=r"pyworld is not installed: pip install 'evalkit-tts\[signal\]'"):
        construct("f0", F0, {"f0_method": "dio"})
