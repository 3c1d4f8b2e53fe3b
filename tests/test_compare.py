"""Paired statistics, gates, comparability and run lookup: known answers, no models."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from evalkit import compare as cmp
from evalkit import gates as gates_mod
from evalkit import runs
from evalkit.errors import EvalkitError
from evalkit.record import MetricInfo, RunRecord
from evalkit.types import Row

ROOT = Path(__file__).resolve().parents[1]


def fake_run(cer, dnsmos=None, *, ids=None, digest="suite-1", asr="asr-1", textnorm="2", version="2",
             failures=None, source="run") -> runs.LoadedRun:
    """A run as load_run returns it: per-utterance rows plus the summary fields compare reads."""
    ids = ids or [f"u{i:02d}" for i in range(len(cer))]
    dnsmos = dnsmos if dnsmos is not None else [3.0] * len(cer)
    failures = failures or {}
    rows = [{"id": uid, "text": f"text {uid}", "cer": c, "dnsmos_ovrl": d, "char_sub": 1.0,
             "failure": failures.get(uid), "notes": None} for uid, c, d in zip(ids, cer, dnsmos, strict=True)]
    summary = {
        "run_id": "0" * 32, "params": {"model": "m"},
        "suite": {"name": "t", "digest": digest},
        "tags": {"evalkit.asr_settings_digest": asr, "evalkit.asr_model": "base", "evalkit.textnorm_version": textnorm},
        "metrics": {"intelligibility": {"version": version, "higher_is_better": {"cer": False, "char_sub": False}},
                    "dnsmos": {"version": "1", "higher_is_better": {"dnsmos_ovrl": True}}},
        "aggregates": {"cer/mean": float(np.nanmean(np.array(cer, dtype=float))), "char_sub/sum": 5.0,
                       "dnsmos_ovrl/mean": 3.0},
    }
    return runs.LoadedRun(RunRecord.from_json(summary), [Row.from_json(r) for r in rows], None, None, source)


def by_key(result):
    return {m.key: m for m in result.metrics}


BASE = [0.0, 0.02, 0.05, 0.01, 0.0, 0.03, 0.1, 0.0]


def test_bootstrap_known_answers():
    assert cmp.bootstrap_ci(np.zeros(20)) == (0.0, 0.0)
    low, high = cmp.bootstrap_ci(np.full(30, 0.1))
    assert low == pytest.approx(0.1) and high == pytest.approx(0.1)
    d = np.random.default_rng(1).normal(size=37)
    assert cmp.bootstrap_ci(d) == cmp.bootstrap_ci(d)  # seeded: the same runs, the same CI
    assert math.isnan(cmp.bootstrap_ci([])[0])


def test_bootstrap_blocks_do_not_change_the_answer(monkeypatch):
    d = np.random.default_rng(3).normal(size=41)
    whole = cmp.bootstrap_ci(d)
    monkeypatch.setattr(cmp, "_INDEX_BUDGET", 100)  # many small blocks, as for a huge suite
    assert cmp.bootstrap_ci(d) == whole


def test_bootstrap_agrees_with_scipy_percentile_bootstrap():
    d = np.random.default_rng(2).normal(0.3, 1.0, size=200)
    ours = cmp.bootstrap_ci(d, resamples=20000)
    ref = stats.bootstrap((d,), np.mean, n_resamples=20000, method="percentile",
                          rng=np.random.default_rng(5)).confidence_interval
    assert ours[0] == pytest.approx(ref.low, abs=0.01) and ours[1] == pytest.approx(ref.high, abs=0.01)


def test_wilcoxon_matches_scipy():
    rng = np.random.default_rng(4)
    b = rng.uniform(0, 0.2, size=25)
    c = b + rng.normal(0.02, 0.03, size=25)
    assert cmp.wilcoxon_p(c, b) == pytest.approx(stats.wilcoxon(c, b).pvalue)
    assert cmp.wilcoxon_p(b, b) == 1.0  # scipy refuses all-zero differences
    assert math.isnan(cmp.wilcoxon_p([], []))


def test_direction_aware_deltas_and_counts_left_out():
    base = fake_run(BASE, [3.0] * 8)
    cand = fake_run([v + 0.1 for v in BASE], [3.5] * 8)
    result = cmp.compare(cand, base)
    m = by_key(result)
    assert set(m) == {"cer", "dnsmos_ovrl"}  # char_sub is a count: summed, never compared
    assert m["cer"].delta == pytest.approx(0.1) and m["cer"].ci_low == pytest.approx(0.1)
    assert m["cer"].direction == "worse" and m["cer"].worsening == pytest.approx(0.1)
    assert m["dnsmos_ovrl"].direction == "better" and m["dnsmos_ovrl"].worsening == pytest.approx(-0.5)
    same = cmp.compare(base, base)
    assert all(d.direction == "same" and d.delta == 0 and (d.ci_low, d.ci_high) == (0, 0) and d.p_value == 1
               for d in same.metrics)


def test_pairs_by_id_not_by_position():
    base = fake_run([0.1, 0.2, 0.3], ids=["a", "b", "c"])
    cand = fake_run([0.3, 0.1, 0.5], ids=["c", "a", "d"])  # reordered; b and d unpaired
    result = cmp.compare(cand, base)
    cer = by_key(result)["cer"]
    assert result.paired == 2 and (result.only_candidate, result.only_baseline) == (1, 1)
    assert {(uid, c, b) for uid, c, b in cer.pairs} == {("a", 0.1, 0.1), ("c", 0.3, 0.3)}
    assert any("2 paired utterances" in n for n in result.notes)


def test_new_failures():
    base = fake_run([0.0, 0.0, 0.0], failures={"u02": "synthesis failed: boom"})
    cand = fake_run([0.0, math.nan, 0.0], failures={"u00": "audio is silent", "u02": "synthesis failed: boom"})
    result = cmp.compare(cand, base)
    failed = {f.utterance_id: f.reason for f in result.new_failures}
    assert failed == {"u00": "audio is silent", "u01": "no value for cer"}  # u02 failed in both


@pytest.mark.parametrize("change, reason", [
    ({"digest": "suite-2"}, "suite digests differ"),
    ({"asr": "asr-2"}, "ASR settings differ"),
    ({"textnorm": "3"}, "text normalizer versions differ"),
    ({"version": "3"}, "metric intelligibility versions differ"),
])
def test_incomparable_reasons(change, reason):
    base, cand = fake_run(BASE), fake_run(BASE, **change)
    result = cmp.compare(cand, base)
    assert isinstance(result, cmp.Incomparable)
    assert len(result.reasons) == 1 and reason in result.reasons[0]
    forced = cmp.compare(cand, base, force=True)
    assert isinstance(forced, cmp.Comparison) and forced.reasons == result.reasons
    assert gates_mod.judge(forced, gates_mod.BUILTIN).status == "incomparable"


def test_asr_reason_says_why_it_matters():
    (reason,) = cmp.compare(fake_run(BASE, asr="x"), fake_run(BASE)).reasons
    assert "changes CER on every utterance" in reason


def test_nothing_shared_is_incomparable():
    result = cmp.compare(fake_run([0.1], ids=["a"]), fake_run([0.1], ids=["b"]))
    assert isinstance(result, cmp.Incomparable) and "no utterance id" in result.reasons[0]
    other_metrics = fake_run([0.1])
    other_metrics = dataclasses.replace(other_metrics, summary=dataclasses.replace(
        other_metrics.summary, metrics={"pesq": MetricInfo("1", 16000, {"pesq_wb": True})}))
    result = cmp.compare(other_metrics, fake_run([0.1]))
    assert isinstance(result, cmp.Incomparable) and result.reasons == ("no metric value key is in both runs",)


CER_GATE = gates_mod.Gates({"cer": gates_mod.Gate(max_abs=0.01)}, None, "test")


def verdict(cand_cer, base_cer=BASE, gates=CER_GATE, **kw):
    return gates_mod.judge(cmp.compare(fake_run(cand_cer, **kw), fake_run(base_cer)), gates)


def test_gate_sure_but_tolerated_passes():
    v = verdict([b + 0.005 for b in BASE])
    assert v.metrics["cer"].significant and not v.metrics["cer"].breaks_gate and v.status == "pass"


def test_gate_broken_but_unsure_passes():
    noisy = [b + d for b, d in zip(BASE, [1.0, -0.9, 0.8, -0.7, 0.6, -0.5, 0.4, -0.3], strict=True)]
    v = verdict(noisy)
    assert v.metrics["cer"].breaks_gate and not v.metrics["cer"].significant and v.status == "pass"


def test_gate_sure_and_broken_regresses():
    v = verdict([b + 0.05 for b in BASE])
    assert v.status == "regressed" and v.metrics["cer"].regressed
    assert v.reasons[0].startswith("cer: ") and "max_abs 0.01" in v.reasons[0]


def test_new_failure_regresses_whatever_the_gates():
    v = verdict(BASE, gates=gates_mod.Gates({}, None, "none"), failures={"u03": "synthesis failed: x"})
    assert v.status == "regressed" and v.reasons == ("new failure: u03: synthesis failed: x",)


def test_gate_limits_the_looser_applies():
    g = gates_mod.Gate(max_abs=0.01, max_rel=0.5)
    assert g.allowed(0.1) == pytest.approx(0.05) and g.allowed(0.0) == pytest.approx(0.01)
    assert gates_mod.Gate(max_rel=0.1).allowed(0.0) == 0.0


def test_builtin_default_and_report_only():
    worse = [b + 0.05 for b in BASE]
    assert verdict(worse, gates=gates_mod.BUILTIN).status == "regressed"
    only_dnsmos = gates_mod.parse({"dnsmos_ovrl": {"max_abs": 0.1}, "default": "none"}, "t")
    v = verdict(worse, gates=only_dnsmos)
    assert v.status == "pass" and v.metrics["cer"].gate is None


def test_gate_files_yaml_toml_and_suite_header(tmp_path):
    (tmp_path / "g.yaml").write_text("gates:\n  cer: {max_abs: 0.01, max_rel: 0.1}\n  default: none\n")
    (tmp_path / "g.toml").write_text("[gates]\ncer = { max_abs = 0.01, max_rel = 0.1 }\n")
    for name in ("g.yaml", "g.toml"):
        g = gates_mod.from_file(tmp_path / name)
        assert g.per_key == {"cer": gates_mod.Gate(0.01, 0.1)} and g.default is None
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "suite.yaml").write_text("name: s\nversion: 1\nlanguage: en\ndescription: d\nutterances: u.jsonl\n"
                                      "gates:\n  dnsmos_ovrl: {max_abs: 0.2}\n")
    g = gates_mod.resolve(None, suite)
    assert g.per_key == {"dnsmos_ovrl": gates_mod.Gate(max_abs=0.2)} and "suite.yaml" in g.source
    assert gates_mod.resolve(tmp_path / "g.toml", suite).per_key["cer"].max_rel == 0.1  # a file wins
    assert gates_mod.resolve(None, None) is gates_mod.BUILTIN


@pytest.mark.parametrize("text, message", [
    ("cer: {max_abss: 0.01}", "unknown key(s) max_abss"),
    ("cer: {max_abs: -1}", "must be a number >= 0"),
    ("cer: {}", "give max_abs and/or max_rel"),
    ("cer: 0.01", "must be a mapping"),
    ("[1, 2]", "gates must be a mapping"),
])
def test_bad_gates_fail_loud(tmp_path, text, message):
    (tmp_path / "g.yaml").write_text(text)
    with pytest.raises(EvalkitError, match=message.replace("(", r"\(").replace(")", r"\)")):
        gates_mod.from_file(tmp_path / "g.yaml")


def test_run_specs_fail_with_one_clear_line(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(EvalkitError, match="neither a run folder"):
        runs.load_run("no/such/run", uri)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvalkitError, match="not a finished evalkit run folder"):
        runs.load_run(str(tmp_path / "empty"), uri)
    with pytest.raises(EvalkitError, match="not found at"):
        runs.load_run("0123456789abcdef0123456789abcdef", uri)
    with pytest.raises(EvalkitError, match="no run is tagged as baseline 'nightly'"):
        runs.load_run("tag:nightly", uri)
    with pytest.raises(EvalkitError, match="no MLflow experiment named 'nope'"):
        runs.load_run("latest:nope", uri)
    with pytest.raises(EvalkitError, match="baseline name"):
        runs.load_run("tag:bad name'", uri)


def test_nightly_workflow_template_is_a_valid_github_workflow():
    path = ROOT / "docs" / "nightly.yml"
    proc = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                           str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wf = yaml.safe_load(path.read_text())
    triggers = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "schedule" in triggers and "workflow_dispatch" in triggers
    steps = wf["jobs"]["evaluate"]["steps"]
    commands = " ".join(s.get("run", "") for s in steps)
    assert "scripts/setup.sh" in commands and "evalkit sweep --suite" in commands
    assert "--baseline \"tag:$BASELINE\"" in commands and "--fail-on-regression" in commands
    assert "GITHUB_STEP_SUMMARY" in commands
    upload = next(s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact"))
    assert upload["if"] == "always()" and "reports/nightly" in upload["with"]["path"]
    cache = next(s for s in steps if str(s.get("uses", "")).startswith("actions/cache"))
    assert ".venv" in cache["with"]["path"] and "~/.cache/evalkit" in cache["with"]["path"]
    assert "constraints.txt" in cache["with"]["key"]
    assert steps.index(cache) < next(i for i, s in enumerate(steps) if "scripts/setup.sh" in s.get("run", ""))


def test_nightly_job_summary_links_the_mlflow_run(tmp_path):
    """The summary step, run as the job runs it: the report's Markdown, then a link to the run."""
    wf = yaml.safe_load((ROOT / "docs" / "nightly.yml").read_text())
    post = next(s for s in wf["jobs"]["evaluate"]["steps"] if s.get("name") == "Post the summary")
    (tmp_path / "runs" / "nightly").mkdir(parents=True)
    (tmp_path / "runs" / "nightly" / "summary.json").write_text(json.dumps({"tracking": {"run_id": "ab" * 16}}))
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").symlink_to(sys.executable)
    summary = tmp_path / "step-summary.md"
    env = {**os.environ, "GITHUB_STEP_SUMMARY": str(summary), "MLFLOW_UI_URL": "https://mlflow.example.org"}
    proc = subprocess.run(["bash", "-e", "-c", post["run"]], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = summary.read_text().splitlines()
    assert lines[0] == "No report was written; see the step logs."
    assert lines[-1] == f"MLflow run: [{'ab' * 16}](https://mlflow.example.org/#/runs/{'ab' * 16})"


def test_named_baselines_are_per_suite(tmp_path):
    """`nightly` of ko-base and `nightly` of en-base are different runs; setting one moves only it."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("e", artifact_location=(tmp_path / "art").as_uri())

    def logged(suite: str) -> runs.LoadedRun:
        run_id = client.create_run(exp, tags={"evalkit.suite": suite}).info.run_id
        summary = RunRecord.from_json({"run_id": run_id, "suite": {"name": suite}})
        return runs.LoadedRun(summary, [], None, run_id, f"mlflow:{run_id}", uri)

    ko1, en, ko2 = logged("ko-base"), logged("en-base"), logged("ko-base")
    assert runs.set_baseline(ko1, "nightly", uri) == []
    assert runs.set_baseline(en, "nightly", uri) == []
    assert runs.find_baseline("nightly", uri, "ko-base") == ko1.mlflow_run_id
    assert runs.find_baseline("nightly", uri, "en-base") == en.mlflow_run_id
    assert runs.set_baseline(ko2, "nightly", uri) == [ko1.mlflow_run_id]
    assert runs.find_baseline("nightly", uri, "ko-base") == ko2.mlflow_run_id
    assert runs.find_baseline("nightly", uri, "en-base") == en.mlflow_run_id
    with pytest.raises(EvalkitError, match="no run of suite 'zh-base' is tagged as baseline 'nightly'"):
        runs.find_baseline("nightly", uri, "zh-base")
