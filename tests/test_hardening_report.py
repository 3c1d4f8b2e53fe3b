"""Hardening II, reports: a report copies only the runs' own audio and reference audio that provably
is what the run was scored against; no local absolute gates path in a report; an incomparable report
never replaces a verdict; no Δ % of a near-zero baseline; a key without a direction (duration_ratio)
is compared but never regresses.

Two real runs, made once for the module with the real CLI: espeak (the reference audio) and Piper
scored against it with mel_dtw (no ASR needed), logged to a real sqlite MLflow store. Every other
run folder here is a copy of the Piper run, edited the way a colleague's folder could be.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile
from conftest import run_cli
from mlflow.tracking import MlflowClient

from evalkit import compare as cmp
from evalkit import gates as gates_mod
from evalkit import report as report_mod
from evalkit.record import ReferenceInfo, RunRecord
from evalkit.runs import LoadedRun
from evalkit.types import Row

LIMIT = 3


def _ok(proc, what: str):
    assert proc.returncode == 0, f"{what}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc


@pytest.fixture(scope="module")
def made(tmp_path_factory, private_cache):
    root = tmp_path_factory.mktemp("hardening-report")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    common = ("--suite", "en-base", "--limit", str(LIMIT), "--tracking-uri", uri, "--workers", "0")
    _ok(run_cli("run", "espeak:en-us", *common, "--metrics", "dnsmos", "--out", str(root / "refs")), "reference run")
    _ok(run_cli("run", "piper:joe", *common, "--metrics", "mel_dtw", "--reference-run", str(root / "refs"),
                "--out", str(root / "piper")), "piper run")
    summary = json.loads((root / "piper" / "summary.json").read_text())
    ids = [r["id"] for r in read_rows(root / "piper")]
    assert len(ids) == LIMIT and all((root / "refs" / "audio" / f"{u}.wav").is_file() for u in ids)
    return SimpleNamespace(root=root, uri=uri, refs=root / "refs", piper=root / "piper", ids=ids,
                           run_id=summary["tracking"]["run_id"], summary=summary)


def read_rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "utterances.jsonl").read_text().splitlines() if line]


def write_rows(folder: Path, rows: list[dict]) -> None:
    (folder / "utterances.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def copy_run(src: Path, dest: Path, *, shift: dict[str, float] | None = None, summary_edit=None) -> Path:
    """A copy of a run folder, not logged to MLflow (reports on it stay local), optionally with
    per-utterance values shifted and its summary edited."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, dest, symlinks=True)
    summary = json.loads((dest / "summary.json").read_text())
    summary["tracking"]["run_id"] = None
    if summary_edit:
        summary_edit(summary)
    (dest / "summary.json").write_text(json.dumps(summary))
    if shift:
        rows = read_rows(dest)
        for r in rows:
            for key, by in shift.items():
                r[key] += by
        write_rows(dest, rows)
    return dest


def secret_wav(path: Path, seed: int) -> bytes:
    """A real 16-bit wav that no run made: seeded noise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(seed).uniform(-0.5, 0.5, 8000).astype(np.float32)
    soundfile.write(path, x, 16000, subtype="PCM_16")
    return path.read_bytes()


def digests_under(folder: Path) -> dict[str, Path]:
    return {hashlib.sha256(p.read_bytes()).hexdigest(): p for p in folder.rglob("*") if p.is_file()}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def players(page: str, kind: str) -> int:
    return page.count(f'src="audio/{kind}/')


# a. Only the runs' own audio, and reference audio the run was provably scored against.

@pytest.mark.slow
def test_report_copies_no_foreign_audio(made, tmp_path):
    root = tmp_path
    # The reference a summary names, pointed at a folder of <utterance id>.wav that are not the references.
    secret_refs = root / "secret-refs"
    secrets = {sha(secret_wav(secret_refs / f"{u}.wav", i)): f"ref {u}" for i, u in enumerate(made.ids)}
    # Rows naming audio outside the run: '..', an absolute path, a symlink in audio/ pointing out.
    cand = root / "runs" / "tampered"
    secrets[sha(secret_wav(root / "secret.wav", 10))] = "../../secret.wav"
    secrets[sha(secret_wav(root / "elsewhere" / "secret-abs.wav", 11))] = "absolute"
    secrets[sha(secret_wav(root / "elsewhere" / "secret-link.wav", 12))] = "symlink"

    def point_reference(s):
        s["reference"]["location"] = str(secret_refs)  # the recorded digest stays the run's

    copy_run(made.piper, cand, shift={"mel_dtw": 1.0}, summary_edit=point_reference)
    rows = read_rows(cand)
    rows[0]["audio"] = "../../secret.wav"
    assert (cand / rows[0]["audio"]).resolve() == (root / "secret.wav").resolve()  # the edit really points there
    rows[1]["audio"] = str(root / "elsewhere" / "secret-abs.wav")
    write_rows(cand, rows)
    link = cand / "audio" / Path(rows[2]["audio"]).name
    link.unlink()
    link.symlink_to(root / "elsewhere" / "secret-link.wav")

    out = root / "report"
    proc = _ok(run_cli("report", "--candidate", str(cand), "--baseline", str(made.piper), "--out", str(out),
                       "--worst-by", "mel_dtw"), "report on a tampered run")
    assert "verdict: pass" in proc.stdout  # en-base gates mel_dtw by default: none; the exit code is as usual
    copied = digests_under(out)
    leaked = {secrets[h]: str(p) for h, p in copied.items() if h in secrets}
    assert leaked == {}
    page = (out / "index.html").read_text(encoding="utf-8")
    assert players(page, "reference") == 0 and not (out / "audio" / "reference").exists()
    assert "could not be verified" in page
    assert players(page, "candidate") == 0  # every candidate row was tampered with
    # The worst utterances are listed, and the baseline's own clips are copied: the report did run.
    assert all(f"<h3>{u} " in page for u in made.ids)
    assert players(page, "baseline") == LIMIT
    own = {sha((made.piper / "audio" / f"{u}.wav").read_bytes()) for u in made.ids}
    assert own == {h for h, p in copied.items() if "baseline" in p.parts}


@pytest.mark.slow
def test_report_plays_verified_references_and_refuses_a_linked_audio_folder(made, tmp_path):
    """The control: an untouched candidate gets its clips and its real references; a baseline whose
    audio/ is a symlink to a folder of <id>.wav gets none."""
    cand = copy_run(made.piper, tmp_path / "runs" / "worse", shift={"mel_dtw": 1.0})
    base = copy_run(made.piper, tmp_path / "runs" / "linked")
    shutil.rmtree(base / "audio")
    linked = tmp_path / "linked-secrets"
    secrets = {sha(secret_wav(linked / f"{u}.wav", 20 + i)) for i, u in enumerate(made.ids)}
    (base / "audio").symlink_to(linked, target_is_directory=True)

    out = tmp_path / "report"
    _ok(run_cli("report", "--candidate", str(cand), "--baseline", str(base), "--out", str(out),
                "--worst-by", "mel_dtw"), "report")
    page = (out / "index.html").read_text(encoding="utf-8")
    copied = digests_under(out)
    assert not secrets & set(copied)
    assert players(page, "baseline") == 0
    assert players(page, "candidate") == LIMIT and players(page, "reference") == LIMIT
    refs = {sha((made.refs / "audio" / f"{u}.wav").read_bytes()) for u in made.ids}
    assert refs == {h for h, p in copied.items() if "reference" in p.parts}  # the very audio it was scored against
    assert "could not be verified" not in page


@pytest.mark.slow
def test_reference_paths_need_the_recorded_digest(made, tmp_path):
    """The same rule without the CLI: a changed wav, an emptied digest, or a wav that is a link out of
    the folder, and the references are not used."""
    from evalkit.runs import reference_paths

    summary = RunRecord.from_json(made.summary)
    assert summary.reference.kind == "folder"
    assert set(reference_paths(summary, made.ids)) == set(made.ids)
    folder = tmp_path / "refs"
    shutil.copytree(made.refs / "audio", folder)
    summary = dataclasses.replace(summary, reference=dataclasses.replace(summary.reference, location=str(folder)))
    assert set(reference_paths(summary, made.ids)) == set(made.ids)  # moved, same bytes: still the references
    outside = tmp_path / "outside.wav"
    shutil.copyfile(folder / f"{made.ids[0]}.wav", outside)
    (folder / f"{made.ids[0]}.wav").unlink()
    (folder / f"{made.ids[0]}.wav").symlink_to(outside)  # the same bytes, but outside the folder
    assert reference_paths(summary, made.ids) == {}
    (folder / f"{made.ids[0]}.wav").unlink()
    shutil.copyfile(outside, folder / f"{made.ids[0]}.wav")
    secret_wav(folder / f"{made.ids[1]}.wav", 30)  # one clip replaced
    assert reference_paths(summary, made.ids) == {}
    summary = dataclasses.replace(summary, reference=ReferenceInfo("folder", "/etc", ""))
    assert reference_paths(summary, ["passwd", "hostname"]) == {}


# b. No local absolute path of a gates file in a report.

@pytest.mark.slow
def test_report_shows_no_absolute_gates_path(made, tmp_path):
    gates = tmp_path / "private-gates-dir" / "gates.yaml"
    gates.parent.mkdir()
    gates.write_text("gates:\n  mel_dtw: {max_abs: 5}\n  default: none\n")
    cand = copy_run(made.piper, tmp_path / "runs" / "cand", shift={"mel_dtw": 0.5})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "report"
    _ok(run_cli("report", "--candidate", str(cand), "--baseline", str(made.piper), "--gates", str(gates),
                "--out", str(out), cwd=elsewhere), "report from another folder")
    for name in ("index.html", "summary.md", "comparison.json"):
        text = (out / name).read_text(encoding="utf-8")
        assert str(gates) not in text and str(gates.parent) not in text, name
    assert "gates: gates.yaml." in (out / "summary.md").read_text(encoding="utf-8")

    # Run from a folder that holds the file: the path relative to it.
    out2 = tmp_path / "report-inside"
    _ok(run_cli("report", "--candidate", str(cand), "--baseline", str(made.piper), "--gates", str(gates),
                "--out", str(out2), cwd=tmp_path), "report from the gates' parent")
    md = (out2 / "summary.md").read_text(encoding="utf-8")
    assert "gates: private-gates-dir/gates.yaml." in md.replace("\\", "") and str(gates) not in md


# c. An incomparable report does not replace a verdict.

@pytest.mark.slow
def test_incomparable_report_keeps_the_verdict(made, tmp_path):
    client = MlflowClient(tracking_uri=made.uri)
    same = copy_run(made.piper, tmp_path / "runs" / "same")
    _ok(run_cli("report", "--candidate", str(made.piper), "--baseline", str(same), "--out", str(tmp_path / "pass")),
        "passing report")
    tags = client.get_run(made.run_id).data.tags
    assert tags["evalkit.verdict"] == "pass" and tags["evalkit.report.last"] == "pass"
    baseline_source = tags["evalkit.baseline_source"]

    def other_suite(s):
        s["suite"]["digest"] = "0" * 64

    other = copy_run(made.piper, tmp_path / "runs" / "other-suite", summary_edit=other_suite)
    proc = run_cli("report", "--candidate", str(made.piper), "--baseline", str(other), "--out", str(tmp_path / "inc"))
    assert proc.returncode == 2 and "incomparable" in proc.stderr, proc.stderr
    tags = client.get_run(made.run_id).data.tags
    assert tags["evalkit.verdict"] == "pass"  # the judged verdict stands
    assert tags["evalkit.baseline_source"] == baseline_source  # and the baseline it was judged against
    assert tags["evalkit.report.last"] == "incomparable"
    kept = client.download_artifacts(made.run_id, "report/comparison.json", str(tmp_path / "dl1"))
    assert json.loads(Path(kept).read_text())["verdict"] == "pass"
    aside = client.download_artifacts(made.run_id, "report-incomparable/comparison.json", str(tmp_path / "dl2"))
    assert json.loads(Path(aside).read_text())["verdict"] == "incomparable"


# d. Δ % of a baseline near zero.

def _run(values: dict[str, list[float]], directions: dict[str, bool | None], source: str) -> LoadedRun:
    n = len(next(iter(values.values())))
    rows = [{"id": f"u{i}", "text": f"t{i}", "failure": None, "notes": None, "audio": None,
             **{k: v[i] for k, v in values.items()}} for i in range(n)]
    summary = {"run_id": source * 8, "params": {"model": source}, "tags": {},
               "suite": {"name": "s", "digest": "d", "language": "en", "version": "1"},
               "metrics": {"m": {"version": "1", "higher_is_better": dict(directions)}},
               "aggregates": {f"{k}/mean": float(np.mean(v)) for k, v in values.items()}}
    return LoadedRun(RunRecord.from_json(summary), [Row.from_json(r) for r in rows], None, None, f"test:{source}")


def _delta(base: list[float], cand: list[float], higher: bool | None = False, key: str = "cer") -> cmp.MetricDelta:
    result = cmp.compare(_run({key: cand}, {key: higher}, "c"), _run({key: base}, {key: higher}, "b"))
    (m,) = result.metrics
    return m


def test_delta_percent_not_shown_for_a_near_zero_baseline(tmp_path):
    near_zero = _delta([0, 0, 0.025, 0, 0], [0, 0.05, 0.025, 0.03, 0])  # CER 0.005 -> 0.021
    assert near_zero.baseline_mean == pytest.approx(0.005) and near_zero.candidate_mean == pytest.approx(0.021)
    assert near_zero.delta / near_zero.baseline_mean == pytest.approx(3.2)  # the +320 % of the issue
    assert report_mod.pct(near_zero) == "–" and math.isnan(near_zero.rel_delta)
    assert report_mod.pct(_delta([0.005] * 5, [0.021] * 5)) == "–"  # the same means, every utterance alike

    ordinary = _delta([0.15, 0.2, 0.25, 0.2, 0.2], [0.17, 0.22, 0.27, 0.22, 0.22])  # CER 0.2 -> 0.22
    assert report_mod.pct(ordinary) == "+10 %" and ordinary.rel_delta == pytest.approx(0.1)

    # The rule is one comparison: |baseline| against the spread of the values.
    assert cmp.relative_change(0.2, 0.02, 0.05) == pytest.approx(0.1)
    assert math.isnan(cmp.relative_change(0.005, 0.016, 0.0175))
    assert math.isnan(cmp.relative_change(0.0, 0.01, 0.0))

    # In the report: the HTML cell is empty, comparison.json says null, and the raw ratio is nowhere.
    cand = _run({"cer": [0, 0.05, 0.025, 0.03, 0]}, {"cer": False}, "c")
    base = _run({"cer": [0, 0, 0.025, 0, 0]}, {"cer": False}, "b")
    result = cmp.compare(cand, base)
    report_mod.write(tmp_path / "r", cand, base, result, gates_mod.judge(result, gates_mod.BUILTIN))
    page = (tmp_path / "r" / "index.html").read_text(encoding="utf-8")
    assert "+320" not in page and "Δ % is left out" in page
    assert json.loads((tmp_path / "r" / "comparison.json").read_text())["metrics"][0]["delta_pct"] is None


@pytest.mark.slow
def test_shown_delta_percent_never_exceeds_200():
    """A property of the rule: the spread includes the shift between the runs, so whatever the
    data, a percentage that is shown is at most ±200 %."""
    rng = np.random.default_rng(7)
    shown = 0
    for _ in range(300):
        n = int(rng.integers(2, 12))
        base = rng.exponential(rng.uniform(0.001, 1.0), n) * rng.choice([0, 1], n, p=[0.4, 0.6])
        cand = np.clip(base + rng.normal(rng.uniform(-0.2, 0.5), rng.uniform(0, 0.3), n), 0, None)
        m = _delta(list(base), list(cand))
        if math.isfinite(m.rel_delta):
            shown += 1
            assert abs(m.rel_delta) <= 2.0 + 1e-12
    assert shown > 0


# e. duration_ratio has no direction.

def test_duration_ratio_declares_no_direction():
    from evalkit_metrics.alignment import MelDTW

    assert MelDTW.higher_is_better == {"mel_dtw": False, "duration_ratio": None}


def test_no_direction_never_regresses_while_lower_is_better_does():
    base = [1.0, 0.95, 1.05, 1.0, 0.9, 1.1, 1.0, 0.98]
    cand = [v + 0.3 for v in base]  # the same change on both keys, every utterance agreeing
    directions = {"mel_dtw": False, "duration_ratio": None}
    result = cmp.compare(_run({"mel_dtw": cand, "duration_ratio": cand}, directions, "c"),
                         _run({"mel_dtw": base, "duration_ratio": base}, directions, "b"))
    m = {d.key: d for d in result.metrics}
    assert m["mel_dtw"].direction == "worse" and m["duration_ratio"].direction == "changed"
    assert m["duration_ratio"].delta == pytest.approx(0.3) and m["duration_ratio"].ci_low > 0  # compared, with CI
    strict = gates_mod.parse({"default": {"max_abs": 0}}, "t")
    v = gates_mod.judge(result, strict)
    assert v.status == "regressed" and v.metrics["mel_dtw"].regressed and not v.metrics["duration_ratio"].regressed
    assert not any(r.startswith("duration_ratio") for r in v.reasons)
    named = gates_mod.judge(result, gates_mod.parse({"duration_ratio": {"max_abs": 0}, "default": "none"}, "t"))
    assert named.status == "pass" and any("duration_ratio not applied" in n for n in named.notes)
    assert report_mod.metric_status(v, m["duration_ratio"]) == "changed"

    # The other way round is a change too, never "better".
    down = cmp.compare(_run({"duration_ratio": base}, {"duration_ratio": None}, "c"),
                       _run({"duration_ratio": cand}, {"duration_ratio": None}, "b"))
    assert down.metrics[0].direction == "changed"

    # Runs that recorded it as lower-is-better (older runs) compare as they did; a disagreement has no direction.
    old = {"mel_dtw": False, "duration_ratio": False}
    before = cmp.compare(_run({"duration_ratio": cand}, old, "c"), _run({"duration_ratio": base}, old, "b"))
    assert before.metrics[0].direction == "worse" and gates_mod.judge(before, strict).status == "regressed"
    mixed = cmp.compare(_run({"duration_ratio": cand}, directions, "c"), _run({"duration_ratio": base}, old, "b"))
    assert mixed.metrics[0].higher_is_better is None and gates_mod.judge(mixed, strict).status == "pass"


def test_most_changed_utterances_for_a_key_without_direction():
    m = _delta([1.0, 1.0, 1.0, 1.0], [1.5, 0.6, 1.1, 1.0], higher=None, key="duration_ratio")
    assert [uid for uid, _, _ in report_mod.worst_utterances(m)] == ["u0", "u1", "u2"]  # by size, both ways
    lower = _delta([1.0, 1.0, 1.0, 1.0], [1.5, 0.6, 1.1, 1.0], higher=False, key="duration_ratio")
    assert [uid for uid, _, _ in report_mod.worst_utterances(lower)] == ["u0", "u2"]  # lower-is-better: rises only


@pytest.mark.slow
def test_report_on_real_runs_shows_duration_ratio_without_direction(made, tmp_path):
    """Real run folders (the Piper run, and a copy with both mel_dtw and duration_ratio raised by
    the same amount on every utterance) through the real CLI, with a zero-tolerance default gate."""
    recorded = made.summary["metrics"]["mel_dtw"]["higher_is_better"]
    assert recorded == {"mel_dtw": False, "duration_ratio": None}  # what a real run records now
    cand = copy_run(made.piper, tmp_path / "runs" / "slower", shift={"mel_dtw": 0.5, "duration_ratio": 0.5})
    gates = tmp_path / "strict.yaml"
    gates.write_text("gates:\n  default: {max_abs: 0}\n")
    out = tmp_path / "report"
    proc = run_cli("report", "--candidate", str(cand), "--baseline", str(made.piper), "--gates", str(gates),
                   "--out", str(out), "--fail-on-regression", "--worst-by", "duration_ratio")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # mel_dtw regressed
    doc = json.loads((out / "comparison.json").read_text())
    metrics = {m["key"]: m for m in doc["metrics"]}
    assert metrics["mel_dtw"]["status"] == "regressed"
    assert metrics["duration_ratio"]["higher_is_better"] is None
    assert metrics["duration_ratio"]["direction"] == "changed" and metrics["duration_ratio"]["status"] == "changed"
    assert metrics["duration_ratio"]["delta"] == pytest.approx(0.5)
    assert [r.split(":")[0] for r in doc["reasons"]] == ["mel_dtw"]
    md = (out / "summary.md").read_text(encoding="utf-8")
    assert "duration\\_ratio ↕" in md and "duration\\_ratio ↓" not in md
    assert "### Most changed utterances (by duration\\_ratio)" in md
    assert "duration_ratio ↕" in proc.stdout and "mel_dtw ↓" in proc.stdout
    assert "duration_ratio ↕" in (out / "index.html").read_text(encoding="utf-8")


# f. The display columns come from what the metrics declare.

@pytest.mark.slow
def test_report_uses_declared_alignments_and_headline(made, tmp_path):
    """A copy of the real Piper run whose mel_dtw declares an alignment column and duration_ratio
    as its headline, through the real CLI without --worst-by; and the same copy without the
    declarations (an older run folder): no alignment column, ranked by the first key that got worse."""
    def declare(s):
        s["metrics"]["mel_dtw"]["alignments"] = ["mel_alignment"]
        s["metrics"]["mel_dtw"]["headline"] = "duration_ratio"

    def undeclare(s):
        s["metrics"]["mel_dtw"].pop("alignments", None)
        s["metrics"]["mel_dtw"].pop("headline", None)

    outs = {}
    for name, edit in (("declared", declare), ("older", undeclare)):
        base = copy_run(made.piper, tmp_path / "runs" / f"{name}-base", summary_edit=undeclare)
        cand = copy_run(made.piper, tmp_path / "runs" / name, shift={"mel_dtw": 0.5}, summary_edit=edit)
        rows = read_rows(cand)
        for r, by in zip(rows, (0.1, 0.5, 0.3), strict=True):
            r["duration_ratio"] += by
            r["mel_alignment"] = f"{r['id']} [a→<b>] [-c]"
        write_rows(cand, rows)
        outs[name] = tmp_path / f"report-{name}"
        _ok(run_cli("report", "--candidate", str(cand), "--baseline", str(base), "--out", str(outs[name])),
            f"report on the {name} run")

    md = (outs["declared"] / "summary.md").read_text(encoding="utf-8")
    assert "### Most changed utterances (by duration\\_ratio)" in md
    assert [line.split(" | ")[0][2:] for line in md.splitlines() if line.startswith("| en-base")] == \
        [made.ids[1], made.ids[2], made.ids[0]]
    page = (outs["declared"] / "index.html").read_text(encoding="utf-8")
    assert page.count("<th>ASR errors vs text</th>") == LIMIT
    edited = f'{made.ids[0]} <span class="sub" title="substituted">a→&lt;b&gt;</span> <del title="deleted">c</del>'
    assert edited in page

    md = (outs["older"] / "summary.md").read_text(encoding="utf-8")
    assert "### Worst-regressed utterances (by mel\\_dtw)" in md
    page = (outs["older"] / "index.html").read_text(encoding="utf-8")
    assert "ASR errors vs text" not in page and "class=align" not in page
