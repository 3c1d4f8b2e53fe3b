"""`evalkit sweep`: which checkpoints at which steps, bad input, and, on real parts (Piper audio
degraded by a strength stored in each checkpoint, Whisper base, a real sqlite MLflow store), the
curves over training, the parent run's history, skipping what was evaluated, and --watch."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_in_process
from mlflow.tracking import MlflowClient

from evalkit import progress, record, runner, sweep
from evalkit.errors import EvalkitError

SUITE = "en-base"
LIMIT = 3
STRENGTHS = {1000: 0.0, 2000: 0.05, 3000: 0.3}  # noise standard deviation per training step


# --- which checkpoints, at which steps (no model is loaded) ---------------------------------


def _touch(path: Path, data: bytes = b"x") -> str:
    path.write_bytes(data)
    return str(path)


def test_a_folder_gives_its_checkpoints_in_natural_order_without_temporary_files(tmp_path):
    for name in ("ckpt-200.pt", "ckpt-1000.pt", "ckpt-30.ckpt", "notes.txt", ".ckpt-5.pt", "ckpt-9.pt.tmp",
                 "ckpt-40.pt.evalkit.yaml", "voice.onnx.json"):
        _touch(tmp_path / name)
    found = [Path(m).name for m in sweep.expand((str(tmp_path),))]
    assert found == ["ckpt-30.ckpt", "ckpt-200.pt", "ckpt-1000.pt"]


def test_a_glob_and_a_folder_naming_one_file_give_it_once(tmp_path):
    _touch(tmp_path / "a-1.pt")
    _touch(tmp_path / "b-2.pt")
    found = sweep.expand((str(tmp_path / "*.pt"), str(tmp_path)))
    assert [Path(m).name for m in found] == ["a-1.pt", "b-2.pt"]


def test_empty_folders_and_globs_matching_nothing_are_refused(tmp_path):
    with pytest.raises(EvalkitError, match="no checkpoint in this folder"):
        sweep.expand((str(tmp_path),))
    with pytest.raises(EvalkitError, match="matches no checkpoint file"):
        sweep.expand((str(tmp_path / "*.pt"),))
    assert sweep.expand((str(tmp_path),), quiet_empty=True) == []  # a --watch waits instead


def test_the_step_comes_from_the_checkpoint_then_its_sidecar_then_its_name(tmp_path, tiny_tts):
    import torch

    keyed = tmp_path / "last.pt"
    tiny_tts.save_degraded(keyed, 0.1, step=1234, step_key="global_step")
    assert sweep.step_of(str(keyed)) == (1234, "checkpoint key global_step")
    epoch = tmp_path / "e.pt"
    torch.save({"epoch": torch.tensor(7), "step": "not a number"}, epoch)
    assert sweep.step_of(str(epoch)) == (7, "checkpoint key epoch")
    side = tmp_path / "model.pt"
    tiny_tts.save_degraded(side, 0.1)
    (tmp_path / "model.pt.evalkit.yaml").write_text("step: 4500\n")
    assert sweep.step_of(str(side)) == (4500, "sidecar model.pt.evalkit.yaml")
    # A checkpoint that needs unpickling tells nothing by itself (nothing in it runs): its name does.
    pickled = tmp_path / "run3-step-800.pt"
    tiny_tts.save_checkpoint(pickled, trainer=tiny_tts.TrainerState(step=5))
    assert sweep.step_of(str(pickled)) == (800, "file name")
    assert sweep.step_of("espeak:en") is None


def test_steps_given_must_match_the_models_and_be_distinct(tmp_path):
    a, b = _touch(tmp_path / "a.pt"), _touch(tmp_path / "b.pt")
    with pytest.raises(EvalkitError, match=r"--steps gives 1 step\(s\) for 2 model\(s\)"):
        sweep.checkpoints([a, b], (10,))
    with pytest.raises(EvalkitError, match="both have step 10"):
        sweep.checkpoints([a, b], (10, 10))
    assert [(Path(c.model).name, c.step) for c in sweep.checkpoints([a, b], (20, 10))] == [("b.pt", 10), ("a.pt", 20)]
    with pytest.raises(EvalkitError, match="cannot tell the training step of .*give --steps"):
        sweep.checkpoints([a], None)
    two = [_touch(tmp_path / "x-5.pt"), _touch(tmp_path / "y-5.pt")]
    with pytest.raises(EvalkitError, match="both have step 5 .file name; file name."):
        sweep.checkpoints(two, None)


@pytest.mark.parametrize("case", ["empty folder", "glob", "steps length", "same step", "no suite"])
def test_bad_input_is_one_line_and_exit_2_before_any_work(tmp_path, capsys, case):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    args = {
        "empty folder": ["--suite", SUITE, str(folder)],
        "glob": ["--suite", SUITE, str(folder / "*.ckpt")],
        "steps length": ["--suite", SUITE, "--steps", "1,2,3", _touch(folder / "a.pt"), _touch(folder / "b.pt")],
        "same step": ["--suite", SUITE, _touch(folder / "a-7.pt"), _touch(folder / "b-7.pt")],
        "no suite": [_touch(folder / "a-1.pt")],
    }[case]
    code, out, err = run_in_process(capsys, "sweep", "--out", str(tmp_path / "out"), *args)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err + out
    assert not (tmp_path / "out").exists()  # nothing was started


# --- on real parts --------------------------------------------------------------------------


def _family(folder: Path, tiny_tts) -> dict[int, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for step, strength in STRENGTHS.items():
        out[step] = folder / f"ckpt-{step // 1000}.pt"  # the step is in the checkpoint, not the name
        tiny_tts.save_degraded(out[step], strength, step=step)
    return out


@contextlib.contextmanager
def _quiet():
    yield progress.Progress()


def _config(models, out: Path, uri: str, **kw) -> sweep.SweepConfig:
    run = runner.RunConfig(suite="", model="", limit=LIMIT, tracking_uri=uri, workers=0,
                           metrics=("intelligibility", "dnsmos"))
    return sweep.SweepConfig(suites=(SUITE,), models=tuple(models), run=run, out_dir=out, **kw)


@pytest.fixture(scope="module")
def swept(tmp_path_factory, tiny_tts, asr):
    """Three checkpoints getting worse with the step and one that does not load, swept twice
    (the second time into another folder: everything already evaluated is skipped)."""
    root = tmp_path_factory.mktemp("sweep")
    ckpts = _family(root / "ckpts", tiny_tts)
    broken = root / "ckpts" / "ckpt-9.pt"
    broken.write_bytes(b"PK\x03\x04 not really a checkpoint")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    lines: list[str] = []
    first = sweep.sweep(_config([str(root / "ckpts")], root / "first", uri), _quiet, lines.append)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(f"evalkit-{SUITE}")
    runs_after_first = {r.info.run_id for r in client.search_runs([exp.experiment_id])}
    second = sweep.sweep(_config([str(root / "ckpts")], root / "second", uri), _quiet, lines.append)
    runs_after_second = {r.info.run_id for r in client.search_runs([exp.experiment_id])}
    return {"first": first, "second": second, "client": client, "exp": exp, "ckpts": ckpts, "broken": broken,
            "lines": lines, "runs": (runs_after_first, runs_after_second), "uri": uri}


@pytest.mark.slow
def test_curves_over_the_step_follow_the_degradation(swept):
    done = [e for e in swept["first"].entries if e.status == "done"]
    assert [e.step for e in done] == sorted(STRENGTHS)
    agg = [record.load_summary(swept["first"].out_dir / e.run_dir).aggregates for e in done]
    dnsmos = [a["dnsmos_ovrl/mean"] for a in agg]
    assert dnsmos[0] > dnsmos[1] > dnsmos[2], dnsmos  # more noise, worse quality, at every step
    cer = [a["cer/mean"] for a in agg]
    assert cer[-1] > cer[0], cer  # the noisiest checkpoint is the hardest to understand


@pytest.mark.slow
def test_an_unloadable_checkpoint_is_recorded_and_the_sweep_goes_on(swept):
    entries = swept["first"].entries
    failed = [e for e in entries if e.status == "failed"]
    assert [Path(e.model).name for e in failed] == ["ckpt-9.pt"]
    assert "not a readable PyTorch checkpoint" in failed[0].reason
    saved = json.loads((swept["first"].out_dir / sweep.SWEEP_FILE).read_text())
    # In step order (its step, 9, comes from its name), and the failure did not stop the rest.
    assert [(c["step"], c["status"]) for c in saved["checkpoints"]] == [(9, "failed"), (1000, "done"),
                                                                         (2000, "done"), (3000, "done")]


@pytest.mark.slow
def test_the_parent_run_holds_one_point_per_step_for_every_aggregate(swept):
    client, result = swept["client"], swept["first"]
    parent = client.get_run(result.parent_run_id)
    done = [e for e in result.entries if e.status == "done"]
    children = {e.step: client.get_run(e.mlflow_run_id) for e in done}
    for step, child in children.items():
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["evalkit.step"] == str(step)
    keys = set(children[1000].data.metrics)
    assert "cer/mean/tag/numbers" in keys or any("/tag/" in k for k in keys)
    assert {k.removeprefix(f"{SUITE}/") for k in parent.data.metrics} == keys
    for key in keys:
        history = client.get_metric_history(parent.info.run_id, f"{SUITE}/{key}")
        assert sorted(m.step for m in history) == sorted(STRENGTHS), key
        for m in history:
            expected = children[m.step].data.metrics[key]
            assert m.value == pytest.approx(expected, nan_ok=True), key


@pytest.mark.slow
def test_per_tag_corpus_cer_is_recomputed_from_the_counts(swept):
    result = swept["first"]
    entry = next(e for e in result.entries if e.step == 3000)
    summary, rows = record.load(result.out_dir / entry.run_dir)
    assert summary.by_tag
    for tag, agg in summary.by_tag.items():
        mine = [r for r in rows if tag in r.tags and r.failure is None]
        edits = sum(r.values["char_sub"] + r.values["char_del"] + r.values["char_ins"] for r in mine)
        chars = sum(r.values["char_ref_len"] for r in mine)
        assert agg["cer/corpus"] == pytest.approx(edits / chars), tag
        assert agg["utterances/count"] == len([r for r in rows if tag in r.tags])
        assert agg["cer/mean"] == pytest.approx(sum(r.values["cer"] for r in mine) / len(mine))


@pytest.mark.slow
def test_checkpoints_are_logged_models_ranked_per_suite(swept):
    client, exp = swept["client"], swept["exp"]
    models = client.search_logged_models(
        [exp.experiment_id], datasets=[{"dataset_name": SUITE}],
        order_by=[{"field_name": "metrics.dnsmos_ovrl/mean", "ascending": False, "dataset_name": SUITE}])
    assert [m.name for m in models] == ["ckpt-1_pt", "ckpt-2_pt", "ckpt-3_pt"]  # best quality first
    for m in models:
        assert m.tags["mlflow.model.isExternal"] == "true"  # no weights were uploaded
        sha = hashlib.sha256(swept["ckpts"][int(m.tags["evalkit.step"])].read_bytes()).hexdigest()
        assert m.tags["evalkit.model_sha256"] == sha


@pytest.mark.slow
def test_a_restarted_sweep_evaluates_nothing_twice(swept):
    first, second = swept["runs"]
    assert second == first  # no new MLflow run: no duplicate, no work
    entries = swept["second"].entries
    assert sorted((e.step, e.status) for e in entries) == [(9, "failed"), (1000, "skipped"), (2000, "skipped"),
                                                          (3000, "skipped")]
    assert swept["second"].parent_run_id == swept["first"].parent_run_id  # the same curves, found by name
    history = swept["client"].get_metric_history(swept["first"].parent_run_id, f"{SUITE}/cer/mean")
    assert len(history) == len(STRENGTHS)  # and no second point per step


@pytest.mark.slow
def test_watch_takes_a_checkpoint_written_later_and_never_a_half_written_one(tmp_path, tiny_tts):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    tiny_tts.save_degraded(folder / "ckpt-1.pt", 0.0, step=100)
    whole = tmp_path / "staging.pt"
    tiny_tts.save_degraded(whole, 0.2, step=200)
    data = whole.read_bytes()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "watched"
    env = {**os.environ, "EVALKIT_PROGRESS": "lines"}
    proc = subprocess.Popen([sys.executable, "-m", "evalkit", "sweep", "--suite", SUITE, str(folder), "--watch",
                             "--poll", "0.5", "--max-checkpoints", "2", "--limit", "2", "--metrics", "intelligibility",
                             "--tracking-uri", uri, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        record_file = out / sweep.SWEEP_FILE

        def entries() -> list[dict]:
            with contextlib.suppress(OSError, ValueError):
                return json.loads(record_file.read_text())["checkpoints"]
            return []

        deadline = time.monotonic() + 300
        while not any(e["status"] == "done" for e in entries()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.5)
        half = folder / "ckpt-2.pt"
        half.write_bytes(data[: len(data) // 2])  # training is still writing it
        time.sleep(4)  # several polls: it stays unchanged, but does not load
        assert [e["step"] for e in entries()] == [100]
        with half.open("ab") as f:
            f.write(data[len(data) // 2:])
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    final = entries()
    assert [(e["step"], e["status"]) for e in final] == [(100, "done"), (200, "done")]
    summary = record.load_summary(out / final[1]["run_dir"])
    assert summary.model["model_sha256"] == hashlib.sha256(data).hexdigest()  # the whole file, not half
    assert "watching" in stderr and "evaluate:" in stderr  # progress lines, not a silent wait
    assert math.isfinite(summary.aggregates["cer/mean"])


def test_the_nightly_judges_the_newest_checkpoint_evaluated_tonight(tmp_path):
    """The nightly template's step, run as the job runs it, on a sweep record with a skipped
    (evaluated on an earlier night), a failed and two new checkpoints."""
    import yaml

    wf = yaml.safe_load((Path(__file__).resolve().parents[1] / "docs" / "nightly.yml").read_text())
    steps = wf["jobs"]["evaluate"]["steps"]
    sweep_step = next(s for s in steps if "evalkit sweep --suite" in s.get("run", ""))
    assert "--name" in sweep_step["run"] and "rm -rf runs/nightly" in sweep_step["run"]
    newest = next(s for s in steps if s.get("id") == "newest")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").symlink_to(sys.executable)
    output = tmp_path / "github-output"

    def newest_run_dir(entries: list[dict]) -> str:
        (tmp_path / "runs" / "nightly").mkdir(parents=True, exist_ok=True)
        (tmp_path / "runs" / "nightly" / "sweep.json").write_text(json.dumps({"checkpoints": entries}))
        output.write_text("")
        proc = subprocess.run(["bash", "-e", "-c", newest["run"]], cwd=tmp_path, capture_output=True, text=True,
                              env={**os.environ, "GITHUB_OUTPUT": str(output)})
        assert proc.returncode == 0, proc.stderr
        return output.read_text().strip().removeprefix("run_dir=")

    entries = [{"step": 3000, "status": "skipped", "run_dir": None},
               {"step": 5000, "status": "done", "run_dir": "ko-base-step00005000"},
               {"step": 6000, "status": "failed", "run_dir": None},
               {"step": 4000, "status": "done", "run_dir": "ko-base-step00004000"}]
    assert newest_run_dir(entries) == "runs/nightly/ko-base-step00005000"
    assert newest_run_dir(entries[:1]) == ""  # nothing new tonight: nothing to judge


def test_the_default_name_is_one_check_name_accepts(tmp_path):
    for folder, expected in (("체크포인트", "sweep"), ("run 3 (ko)", "run-3-ko"), ("_private", "private")):
        (tmp_path / folder).mkdir()
        name = sweep.default_name((str(tmp_path / folder),))
        assert name == expected
        assert sweep.check_name(name, "--name") == name


def test_a_limited_run_has_its_own_evaluation_key(asr):
    """The suite digest is the whole suite's: without the limit in the key, a --limit smoke run
    would let a full nightly skip every checkpoint and chart eight utterances as the suite."""
    base = runner.RunConfig(suite=SUITE, model="espeak:en-us", metrics=("intelligibility",), workers=0)
    keys = {limit: runner.prepare(dataclasses.replace(base, limit=limit)).key for limit in (None, 2, 3)}
    assert len(set(keys.values())) == 3
    assert runner.prepare(dataclasses.replace(base, limit=2)).key == keys[2]  # and stable
