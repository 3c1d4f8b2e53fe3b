"""`evalkit sweep --executor ray`: bad input in one line, and, on a real two-node Ray cluster on
127.0.0.1 (a head and a second node, separate processes started and stopped here), a sweep of 3
degraded-piper checkpoints x 2 suites that loses an actor mid-sweep and still logs every
(model, suite) to MLflow exactly once, with the local executor's per-utterance values."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import json
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from conftest import run_in_process

from evalkit import progress, runner, sweep
from evalkit.errors import EvalkitError

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray is not installed (pip install 'evalkit-tts[ray]')")
STRENGTHS = {1000: 0.0, 2000: 0.05, 3000: 0.3}
TIMING = {"synth_seconds", "rtf"}  # wall-clock facts, never equal twice
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_line(code: int, out: str, err: str) -> str:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err + out
    return lines[0]


# --- bad input (no cluster) -------------------------------------------------------------------


@pytest.mark.parametrize("case", ["no ray", "unreachable", "watch", "address without ray", "bad address"])
def test_bad_ray_input_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, case):
    ckpt = tmp_path / "ckpt-1.pt"
    ckpt.write_bytes(b"x")
    args = ["sweep", "--suite", "en-base", "--out", str(tmp_path / "out"), str(ckpt)]
    extra, expected = {
        "no ray": (["--executor", "ray"], "pip install 'evalkit-tts[ray]'"),
        "unreachable": (["--executor", "ray", "--ray-address", f"127.0.0.1:{_free_port()}"],
                        "no Ray cluster answers there"),
        "watch": (["--executor", "ray", "--watch"], "--watch runs with --executor local only"),
        "address without ray": (["--ray-address", "127.0.0.1:6379"], "need --executor ray"),
        "bad address": (["--executor", "ray", "--ray-address", "nowhere"], "must be HOST:PORT"),
    }[case]
    if case == "no ray":
        monkeypatch.setitem(sys.modules, "ray", None)  # find_spec reads it as not installed
    started = time.monotonic()
    line = _one_line(*run_in_process(capsys, *args, *extra))
    assert expected in line
    assert time.monotonic() - started < 15  # fails fast, no minute of Ray retries
    assert not (tmp_path / "out").exists()  # nothing was started


def test_a_result_that_is_not_a_run_folder_is_refused_whole(tmp_path):
    from evalkit import sweep_ray  # ray itself is not imported by this

    def tar(members: dict[str, bytes]) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    for bad in ("../evil.txt", "/etc/evil", "audio/../../evil", "audio/x/y.wav", ".hidden"):
        with pytest.raises(EvalkitError, match="not a file of a run folder"):
            sweep_ray.unpack(tar({"summary.json": b"{}", bad: b"x"}), tmp_path / "run")
    with pytest.raises(EvalkitError, match="without summary.json"):
        sweep_ray.unpack(tar({"utterances.jsonl": b""}), tmp_path / "run")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written, nothing left behind
    sweep_ray.unpack(tar({"summary.json": b"{}", "audio/u-1.wav": b"RIFF"}), tmp_path / "run")
    assert (tmp_path / "run" / "audio" / "u-1.wav").read_bytes() == b"RIFF"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


# --- a real two-node cluster --------------------------------------------------------------------


def _session_processes(sids: set[int]) -> dict[int, str]:
    """pid -> command line of every live process in the given sessions (the cluster's own
    processes; zombies, already dead and waiting to be reaped, left out)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) in sids and fields[0] != "Z":  # stat fields 3 and 6: the state, the session id
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return found


@dataclasses.dataclass
class Cluster:
    address: str
    env: dict[str, str]
    sids: set[int]


def _ray_status_nodes(address: str, env: dict) -> int:
    proc = subprocess.run([RAY, "status", "--address", address], capture_output=True, text=True, env=env, timeout=60)
    active = proc.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
    return sum(1 for line in active.splitlines() if "node_" in line)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, tiny_tts):
    """A head and a second node, 1 CPU each, as `ray start --block` processes in sessions of their
    own: teardown kills exactly those sessions (never `ray stop`, which stops every Ray of the machine)."""
    root = tmp_path_factory.mktemp("ray")  # short: Ray's socket paths must stay under 107 characters
    port = _free_port()
    env = {**os.environ, "RAY_TMPDIR": str(root), "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32), "EVALKIT_PROGRESS": "off", "HF_HUB_OFFLINE": "1",
           # the actors' own cache: nothing they compute comes from the local sweep's
           "EVALKIT_CACHE": str(tmp_path_factory.mktemp("ray-cache"))}
    common = ["--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--num-gpus", "0",
              "--disable-usage-stats"]
    procs = []
    logs = [open(root / "head.log", "w"), open(root / "node.log", "w")]  # noqa: SIM115 (closed in teardown)
    try:
        procs.append(subprocess.Popen([RAY, "start", "--head", "--port", str(port), "--include-dashboard", "false",
                                       "--temp-dir", str(root), *common], env=env, stdout=logs[0],
                                      stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + 90
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert procs[0].poll() is None and time.monotonic() < deadline, (root / "head.log").read_text()
            time.sleep(0.3)
        procs.append(subprocess.Popen([RAY, "start", "--address", f"127.0.0.1:{port}", *common], env=env,
                                      stdout=logs[1], stderr=subprocess.STDOUT, start_new_session=True))
        while _ray_status_nodes(f"127.0.0.1:{port}", env) < 2:
            assert procs[1].poll() is None and time.monotonic() < deadline, (root / "node.log").read_text()
            time.sleep(1)
        yield Cluster(f"127.0.0.1:{port}", env, {p.pid for p in procs})
    finally:
        sids = {p.pid for p in procs}
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 8
        while _session_processes(sids) and time.monotonic() < deadline:
            time.sleep(0.3)
        for pid in _session_processes(sids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)
        for f in logs:
            f.close()
        deadline = time.monotonic() + 10
        while _session_processes(sids) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert not _session_processes(sids), f"Ray processes outlived the test: {_session_processes(sids)}"


def _family(folder: Path, tiny_tts) -> None:
    folder.mkdir(parents=True)
    for step, strength in STRENGTHS.items():
        tiny_tts.save_degraded(folder / f"ckpt-{step // 1000}.pt", strength, step=step)


def _tiny_suite(folder: Path) -> str:
    folder.mkdir(parents=True)
    (folder / "suite.yaml").write_text("name: two\nversion: 1\nlanguage: en\ndescription: two sentences\n"
                                       "utterances: u.jsonl\n")
    (folder / "u.jsonl").write_text('{"id": "two-1", "text": "The cat sat on the mat."}\n'
                                    '{"id": "two-2", "text": "It rained all day in May."}\n')
    return str(folder)


def _rows(run_dir: Path) -> dict[str, dict]:
    rows = {}
    for line in (run_dir / "utterances.jsonl").read_text().splitlines():
        row = json.loads(line)
        rows[row["id"]] = {k: v for k, v in row.items() if k not in TIMING}
    return rows


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


@contextlib.contextmanager
def _quiet():
    yield progress.Progress()


def _kill_an_actor_midway(cmd: list[str], cluster: Cluster, task: str, progressed) -> None:
    """Run `cmd` (an evalkit command on the cluster); once `progressed()` and an actor is in the
    middle of `task` (its process title), SIGKILL that actor. The command must still succeed, and
    say it retried."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cluster.env)
    killed = None
    try:
        deadline = time.monotonic() + 400
        while killed is None and proc.poll() is None and time.monotonic() < deadline:
            busy = [pid for pid, cmdline in _session_processes(cluster.sids).items() if cmdline.startswith(task)]
            if busy and progressed():
                os.kill(busy[0], signal.SIGKILL)
                killed = busy[0]
            time.sleep(0.05)
        _, stderr = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert killed is not None, f"no actor was caught in the middle of {task} to kill\n{stderr}"
    assert proc.returncode == 0, stderr
    assert "its Ray actor died" in stderr and "retrying on another actor" in stderr, stderr


@needs_ray
@pytest.mark.slow
def test_a_sweep_on_two_nodes_survives_a_killed_actor_and_logs_each_run_once(tmp_path, tiny_tts, asr, cluster):
    from mlflow.tracking import MlflowClient

    _family(tmp_path / "ckpts", tiny_tts)
    suites = ("en-base", _tiny_suite(tmp_path / "two"))
    # The local executor first, in this process (the session's Whisper), into a store of its own.
    run = runner.RunConfig(suite="", model="", limit=2, tracking_uri=f"sqlite:///{tmp_path / 'local.db'}",
                           workers=0, metrics=("intelligibility",))
    local = sweep.sweep(sweep.SweepConfig(suites=suites, models=(str(tmp_path / "ckpts"),), run=run,
                                          out_dir=tmp_path / "local"), _quiet, lambda _: None)
    assert [e.status for e in local.entries] == ["done"] * 6

    uri = f"sqlite:///{tmp_path / 'ray.db'}"
    out = tmp_path / "ray-sweep"
    cmd = [sys.executable, "-m", "evalkit", "sweep", *[a for s in suites for a in ("--suite", s)],
           str(tmp_path / "ckpts"), "--limit", "2", "--metrics", "intelligibility", "--workers", "0",
           "--tracking-uri", uri, "--out", str(out), "--executor", "ray", "--ray-address", cluster.address]
    def one_done() -> bool:  # mid-sweep: a (checkpoint, suite) is done
        with contextlib.suppress(OSError, ValueError):
            return any(e["status"] == "done" for e in json.loads((out / sweep.SWEEP_FILE).read_text())["checkpoints"])
        return False

    _kill_an_actor_midway(cmd, cluster, "ray::EvalActor.evaluate", one_done)

    entries = json.loads((out / sweep.SWEEP_FILE).read_text())["checkpoints"]
    assert sorted((e["suite"], e["step"], e["status"]) for e in entries) == sorted(
        (s, step, "done") for s in suites for step in STRENGTHS)

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("evalkit-sweeps")
    children = [r for r in client.search_runs([exp.experiment_id]) if "evalkit.sweep_member" in r.data.tags]
    seen = sorted((r.data.tags["evalkit.suite"], r.data.tags["evalkit.step"]) for r in children)
    assert seen == sorted((s, str(step)) for s in ("en-base", "two") for step in STRENGTHS)  # each exactly once
    assert all(r.info.status == "FINISHED" for r in children)

    for entry in local.entries:
        assert entry.run_dir is not None
        mine, theirs = _rows(tmp_path / "local" / entry.run_dir), _rows(out / entry.run_dir)
        assert mine.keys() == theirs.keys() and mine, entry.run_dir
        for uid in mine:
            assert mine[uid].keys() == theirs[uid].keys(), uid
            different = [k for k in mine[uid] if not _same(mine[uid][k], theirs[uid][k])]
            assert not different, (entry.run_dir, uid, different)


@needs_ray
@pytest.mark.slow
def test_device_cuda_on_a_cluster_without_gpus_is_one_line(tmp_path, cluster):
    ckpt = tmp_path / "ckpt-1.pt"
    ckpt.write_bytes(b"x")
    proc = subprocess.run([sys.executable, "-m", "evalkit", "sweep", "--suite", "en-base", str(ckpt), "--device",
                           "cuda", "--executor", "ray", "--ray-address", cluster.address, "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, env=cluster.env, timeout=120)
    line = _one_line(proc.returncode, proc.stdout, proc.stderr)
    assert "--device cuda: the Ray cluster at" in line and "has no GPU" in line
    assert not (tmp_path / "o").exists()


# --- evalkit run --executor ray: one suite in shards ---------------------------------------------


def test_shards_are_contiguous_cover_every_utterance_once_and_stay_small():
    from evalkit import run_ray

    ids = [f"u{i:03d}" for i in range(10)]
    parts = run_ray.shards(ids, 2)
    assert [len(p) for p in parts] == [3, 3, 3, 1]  # 4 wanted (2 per actor): 10 / 4 rounds up to 3 each
    assert [u for p in parts for u in p] == ids
    assert run_ray.shards(ids[:3], 4) == [["u000"], ["u001"], ["u002"]]  # never an empty shard
    assert run_ray.shards(ids, 1) == [ids]  # a lone actor: one shard, nothing to even out
    many = [f"u{i:04d}" for i in range(1000)]
    big = run_ray.shards(many, 1)
    assert max(len(p) for p in big) <= run_ray.MAX_SHARD and [u for p in big for u in p] == many
    assert run_ray.shards([], 3) == []


@pytest.mark.parametrize("case", ["no ray", "unreachable", "address without ray", "bad address", "bad executor"])
def test_bad_ray_input_to_run_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, case):
    args = ["run", "--suite", "en-base", "espeak:en-us", "--limit", "1", "--out", str(tmp_path / "out")]
    extra, expected = {
        "no ray": (["--executor", "ray"], "pip install 'evalkit-tts[ray]'"),
        "unreachable": (["--executor", "ray", "--ray-address", f"127.0.0.1:{_free_port()}"],
                        "no Ray cluster answers there"),
        "address without ray": (["--ray-address", "127.0.0.1:6379"], "need --executor ray"),
        "bad address": (["--executor", "ray", "--ray-address", "nowhere"], "must be HOST:PORT"),
        "bad executor": (["--executor", "slurm"], "--executor must be local or ray"),
    }[case]
    if case == "no ray":
        monkeypatch.setitem(sys.modules, "ray", None)  # find_spec reads it as not installed
    line = _one_line(*run_in_process(capsys, *args, *extra))
    assert expected in line
    assert not (tmp_path / "out").exists()  # nothing was started


@needs_ray
@pytest.mark.slow
def test_a_run_sharded_on_two_nodes_survives_a_killed_actor_with_the_local_values(tmp_path, capsys, asr, cluster):
    """`evalkit run --executor ray`: 6 utterances in shards on the two nodes, one actor killed in
    the middle of a shard; every utterance once, in one run folder and one MLflow run, each value
    and each clip equal to the local executor's."""
    from mlflow.tracking import MlflowClient

    common = ["--suite", "en-base", "piper:joe", "--limit", "6", "--metrics", "intelligibility", "--workers", "0"]
    code, _, stderr = run_in_process(capsys, "run", *common, "--out", str(tmp_path / "local"),
                                     "--tracking-uri", f"sqlite:///{tmp_path / 'local.db'}")
    assert code == 0, stderr

    uri = f"sqlite:///{tmp_path / 'ray.db'}"
    out = tmp_path / "ray-run"
    cmd = [sys.executable, "-m", "evalkit", "run", *common, "--tracking-uri", uri, "--out", str(out),
           "--executor", "ray", "--ray-address", cluster.address]
    def one_shard_in() -> bool:  # a shard's rows are on disk
        with contextlib.suppress(OSError):
            return bool((out / "progress.jsonl").read_text().strip())
        return False

    _kill_an_actor_midway(cmd, cluster, "ray::EvalActor.evaluate_shard", one_shard_in)

    ids = [json.loads(line)["id"] for line in (out / "utterances.jsonl").read_text().splitlines()]
    assert ids == [f"en-base-{i:03d}" for i in range(1, 7)]  # each once, in suite order
    mine, theirs = _rows(tmp_path / "local"), _rows(out)
    for uid in mine:
        different = [k for k in mine[uid] if not _same(mine[uid][k], theirs[uid].get(k))]
        assert not different and mine[uid].keys() == theirs[uid].keys(), (uid, different)
        assert (tmp_path / "local" / "audio" / f"{uid}.wav").read_bytes() == (out / "audio" / f"{uid}.wav").read_bytes()
    assert not (out / "progress.jsonl").exists()  # finished: the tables supersede it

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("evalkit-en-base").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    local = json.loads((tmp_path / "local" / "summary.json").read_text())["aggregates"]
    assert runs[0].data.metrics["cer/mean"] == pytest.approx(local["cer/mean"], abs=0)


@needs_ray
@pytest.mark.slow
def test_a_model_no_actor_can_load_stops_the_sharded_run_in_one_line(tmp_path, cluster):
    proc = subprocess.run([sys.executable, "-m", "evalkit", "run", "--suite", "en-base", "espeak:xx-nonexistent",
                           "--limit", "2", "--executor", "ray", "--ray-address", cluster.address,
                           "--out", str(tmp_path / "o"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"],
                          capture_output=True, text=True, env=cluster.env, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    news = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("error: ")]
    # One error line; before it only the driver's news of the cluster and of what it sent where.
    assert len(errors) == 1 and "espeak-ng has no voice 'xx-nonexistent'" in errors[0], proc.stderr
    assert all(n.startswith("Ray: ") or ": sent to a Ray actor" in n for n in news), proc.stderr
    assert not (tmp_path / "o" / "summary.json").exists() and not (tmp_path / "o" / "run.json").exists()


def test_an_actors_shards_keep_one_tts_model_loaded():
    """A Ray actor's shards of one run load its TTS model once; another model replaces it (closed)."""
    shared = runner.Shared(keep_adapter=True)
    first = shared.adapter("espeak:en-us", None, "cpu")
    assert shared.adapter("espeak:en-us", None, "cpu") is first
    closed = []
    first.close = lambda: closed.append(True)  # type: ignore[method-assign]  # to see it closed
    other = shared.adapter("espeak:ko", None, "cpu")
    assert other is not first and closed == [True]
    shared.close()
    assert shared.adapter("espeak:ko", None, "cpu") is not other  # closed with the rest, loaded again
    shared.close()


@needs_ray
@pytest.mark.slow
def test_an_unfinished_run_is_finished_on_the_cluster_with_resume(tmp_path, capsys, asr, cluster):
    """A driver that died leaves run.json, progress.jsonl and the clips of the rows it saved:
    `evalkit run --resume OUT --executor ray` evaluates only the rest, on the cluster."""
    done = tmp_path / "done"
    code, _, stderr = run_in_process(capsys, "run", "--suite", "en-base", "espeak:en-us", "--limit", "5",
                                     "--device", "cpu", "--metrics", "intelligibility", "--workers", "0",
                                     "--out", str(done), "--tracking-uri", f"sqlite:///{tmp_path / 'local.db'}")
    assert code == 0, stderr
    # What a kill after the first chunk leaves: the first two rows saved, nothing finished.
    out = tmp_path / "unfinished"
    out.mkdir()
    (out / "audio").mkdir()
    (out / "run.json").write_text((done / "run.json").read_text())
    saved = (done / "utterances.jsonl").read_text().splitlines()[:2]
    (out / "progress.jsonl").write_text("".join(line + "\n" for line in saved))
    for line in saved:
        uid = json.loads(line)["id"]
        (out / "audio" / f"{uid}.wav").write_bytes((done / "audio" / f"{uid}.wav").read_bytes())

    proc = subprocess.run([sys.executable, "-m", "evalkit", "run", "--resume", str(out), "--executor", "ray",
                           "--ray-address", cluster.address], capture_output=True, text=True, env=cluster.env,
                          timeout=400)
    assert proc.returncode == 0, proc.stderr
    assert "2 utterances resumed from an earlier attempt" in proc.stdout
    assert proc.stderr.count(": sent to a Ray actor") >= 1  # the rest went to the cluster
    assert _rows(out) == _rows(done)  # every row, the resumed and the new, as the local run's
