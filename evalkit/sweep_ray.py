"""`evalkit sweep --executor ray`: the sweep's evaluations on Ray actors, one driver that writes.
The same cluster, actors and retries serve `evalkit run --executor ray` (evalkit.run_ray), whose
tasks are a run's shards (EvalActor.evaluate_shard); `Cluster.feed` runs either kind of Job.

The driver (the `evalkit sweep` process) does everything but evaluate: it expands the
checkpoints, looks every (checkpoint, suite) up by its evaluation key (evalkit.sweep._plan: the
skip logic is the local executor's, unchanged), and sends each task left to an actor. An actor
(`EvalActor`: one per CPU of the cluster, or per `--ray-gpus-per-actor` GPUs) keeps a
runner.Shared and, through evalkit.asr.resolve's per-process cache, its loaded ASR, so models
load once per actor, not once per task. It evaluates into a folder of its own node with
runner.run(log=False) and returns that folder as one uncompressed tar in memory (summary.json,
the tables, run.json, audio/*.wav). The driver unpacks it into the sweep folder, logs it to
MLflow (tracking.log_run with the parent run id) and adds the parent's points, exactly as the
local executor does: the driver is the only writer of run folders and of MLflow.

Limits. A task's whole folder travels in memory (in the actor, Ray's object store and the
driver): about 100-200 KB per utterance of 22 kHz audio, so 1,000 utterances are 100-200 MB;
a folder over MAX_RESULT_BYTES fails that task with a reason (split the suite, or use --limit).
Checkpoints, suites and reference audio are read by the actors from the paths the driver names:
every node must see them at the same paths (shared storage), and run the same evalkit and
packages (an actor whose evaluation key differs from the driver's refuses the task).

Faults. An actor that dies (its process killed, its node lost) costs the task it held: the task
goes back to the queue for another actor, at most MAX_ATTEMPTS times, after which the
(checkpoint, suite) is recorded as failed with the reason; a replacement actor is started in
its place. Each (checkpoint, suite) is logged once: the driver logs a task only after it came
back whole, and looks its evaluation key up in the experiment just before logging it.

Without --ray-address a local Ray instance starts (127.0.0.1, no dashboard, usage stats off,
its files in a temporary folder, token auth with a token that lives only in this process's
environment) and stops with the command.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import logging
import os
import re
import secrets
import shutil
import socket
import tarfile
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import record, runner, tracking
from . import workers as workers_mod
from .errors import EvalkitError, MissingExtra, Terminated, first_line

if TYPE_CHECKING:
    from .sweep import Checkpoint, _State, _Task

MAX_ATTEMPTS = 3  # tries of one task whose actor died, before it is recorded as failed
# Jobs queued on an actor at once: it starts the next as soon as one ends, not a round trip later
# (Ray runs an actor's tasks one after another, in the order sent).
SLOTS = 2
MAX_RESULT_BYTES = 2 << 30  # one run folder, as it travels back to the driver
CONNECT_TIMEOUT_S = 5.0  # to tell an unreachable --ray-address, before Ray's own (long) retries
READY_TIMEOUT_S = 600.0  # with every actor gone, how long a replacement may take to start
_SAFE_NAME = re.compile(r"^(?:audio/)?[\w][\w.-]*$")  # what a run folder holds: files, audio/<clip>


class EvalActor:
    """Evaluates tasks one after another with the models it loaded for the first (Ray actor)."""

    def __init__(self, cpus: int | None = None) -> None:
        if cpus:  # the lanes (Whisper's threads, metric workers) fit the CPUs Ray gave us, not the machine's
            os.environ[workers_mod.CPUS_ENV] = str(cpus)
        self.shared = runner.Shared()
        self.shards = runner.Shared(keep_adapter=True)  # a run's shards: one model, loaded once

    def pid(self) -> int:
        return os.getpid()

    def evaluate_shard(self, config: runner.RunConfig, ids: list[str], key: str) -> dict[str, Any]:
        """The utterances `ids` of the run `config` (evalkit.run_ray): {"rows": [Row...], "audio":
        {clip file name: wav bytes}, "counts": {...}, "model": {...}, "adapter": name}, or
        {"error": "one line", "bad_input": True} for what no other actor would do better."""
        tmp = Path(tempfile.mkdtemp(prefix="evalkit-ray-shard-"))
        try:
            try:
                prepared = runner.prepare(dataclasses.replace(config, out_dir=tmp), self.shards)
                if prepared.key != key:
                    raise EvalkitError(f"the Ray worker on {socket.gethostname()} computes another evaluation key than "
                                       "the driver (another model file, suite, evalkit or package version there)")
                wanted = set(ids)
                skip = frozenset(u.id for u in prepared.suite.utterances if u.id not in wanted)
                work = runner.Work(prepared, tmp, skip, begin=lambda: None, save=lambda rows: None, progress=None,
                                   idle=None)
                done = runner.evaluate_here(work, self.shards)
            except EvalkitError as exc:
                return {"error": str(exc), "bad_input": True, "pid": os.getpid()}
            audio = {}
            for row in done.evaluation.rows:
                if row.audio_path:
                    clip = tmp / row.audio_path
                    audio[clip.name] = clip.read_bytes()
            return {"rows": done.evaluation.rows, "audio": audio, "counts": dataclasses.asdict(done.evaluation.counts),
                    "model": dict(done.model), "adapter": done.adapter, "pid": os.getpid()}
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def evaluate(self, config: runner.RunConfig, key: str) -> dict[str, Any]:
        """{"tar": bytes, "broken": [...]} or {"error": "one line"}; never raises for bad input."""
        tmp = Path(tempfile.mkdtemp(prefix="evalkit-ray-task-"))
        try:
            out = tmp / "run"
            config = dataclasses.replace(config, out_dir=out)
            try:
                prepared = runner.prepare(config, self.shared)
                if prepared.key != key:
                    raise EvalkitError(f"the Ray worker on {socket.gethostname()} computes another evaluation key than "
                                       "the driver (another model file, suite, evalkit or package version there)")
                result = runner.run(config, None, self.shared, prepared, log=False)
            except EvalkitError as exc:
                return {"error": str(exc), "pid": os.getpid()}
            data = _pack(out)
            if len(data) > MAX_RESULT_BYTES:
                return {"error": f"its run folder is {len(data) >> 20} MiB, more than the {MAX_RESULT_BYTES >> 20} "
                                 "MiB a task may send back; split the suite or give --limit", "pid": os.getpid()}
            return {"tar": data, "broken": list(result.broken), "pid": os.getpid(), "host": socket.gethostname()}
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _pack(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
    return buf.getvalue()


def unpack(data: bytes, run_dir: Path) -> None:
    """A task's run folder into `run_dir`, all or nothing: plain files with plain names only
    (summary.json, the tables, run.json, audio/<clip>), nothing outside `run_dir`."""
    incoming = run_dir.parent / f".{run_dir.name}.incoming"
    shutil.rmtree(incoming, ignore_errors=True)
    incoming.mkdir(parents=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar.getmembers():
                if member.isdir() and member.name == "audio":
                    continue
                if not member.isfile() or not _SAFE_NAME.match(member.name):
                    raise EvalkitError(f"a Ray worker sent {member.name!r}, which is not a file of a run folder")
                src = tar.extractfile(member)
                assert src is not None  # a regular file
                dest = incoming / member.name
                dest.parent.mkdir(exist_ok=True)
                dest.write_bytes(src.read())
        if not (incoming / record.SUMMARY).is_file():
            raise EvalkitError(f"a Ray worker sent a run folder without {record.SUMMARY}")
        run = record.read_run(incoming)
        if run is not None and isinstance(run.get("config"), dict):  # it names the folder it was written in
            run["config"]["out_dir"] = str(run_dir)
            record.write_run(incoming, run)
        if run_dir.exists():
            if (run_dir / record.SUMMARY).exists():
                raise EvalkitError(f"{run_dir} already holds a finished run; choose another --out")
            shutil.rmtree(run_dir)  # an unfinished evaluation of the local executor: this one replaces it
        os.replace(incoming, run_dir)
    except (OSError, tarfile.TarError) as exc:
        raise EvalkitError(f"cannot write {run_dir} ({getattr(exc, 'strerror', None) or exc})") from None
    finally:
        shutil.rmtree(incoming, ignore_errors=True)


# --- the cluster -----------------------------------------------------------------------------


def _import_ray():
    try:
        import ray
    except ImportError:
        raise MissingExtra("ray (for --executor ray)", "ray") from None
    return ray


def _check_address(address: str) -> None:
    """A TCP connect to the address's host and port: Ray itself retries a dead address for a minute."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise EvalkitError(f"--ray-address must be HOST:PORT (or ray://HOST:PORT, or auto), got {address!r}")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise EvalkitError(f"--ray-address {address}: no Ray cluster answers there ({exc.strerror or exc}); start "
                           "one (ray start --head) or leave --ray-address out to run a local one") from None


@contextlib.contextmanager
def _environment(local: bool, temp_dir: Path | None) -> Iterator[None]:
    """Ray's settings for this command, restored afterwards."""
    wanted = {"RAY_USAGE_STATS_ENABLED": "0"}
    if temp_dir is not None:
        wanted["RAY_TMPDIR"] = str(temp_dir)
    if local and not any(k in os.environ for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")):
        # Token auth, as Ray does by default, but with a token of this command's only: Ray's default
        # writes one under the home folder.
        wanted |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    old = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def connect(address: str | None, device: str, gpus_per_actor: float | None,
            say: Callable[[str], None]) -> Iterator[Cluster]:
    """The Ray cluster at `address` (--ray-address), or a local one for this command; checks that
    it has what the command asks for (GPUs for --device cuda) before any work. The Cluster's
    device is `device` with auto decided by the cluster's GPUs, not this machine's."""
    if importlib.util.find_spec("ray") is None:  # installed? (told before anything starts; not imported yet)
        raise MissingExtra("ray (for --executor ray)", "ray")
    if address:
        _check_address(address)
    if device not in ("auto", "cpu", "cuda"):
        raise EvalkitError(f"--device must be auto, cpu or cuda, got {device!r}")
    if gpus_per_actor is not None and gpus_per_actor < 0:
        raise EvalkitError("--ray-gpus-per-actor cannot be negative")
    temp_dir = None if address else Path(tempfile.mkdtemp(prefix="evalkit-ray-", dir=os.environ.get("RAY_TMPDIR")))
    with contextlib.ExitStack() as stack:
        if temp_dir is not None:
            stack.callback(shutil.rmtree, temp_dir, True)
        stack.enter_context(_environment(address is None, temp_dir))
        ray = _import_ray()  # the settings are read when Ray is first imported: they are set first
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "logging_level": logging.WARNING}
        if address is None:
            kwargs |= {"_temp_dir": str(temp_dir), "_node_ip_address": "127.0.0.1"}
        elif address.split("://", 1)[-1].rpartition(":")[0] in ("127.0.0.1", "localhost"):
            kwargs["_node_ip_address"] = "127.0.0.1"
        try:
            ray.init(address=address, **kwargs)
        except Exception as exc:
            raise EvalkitError(f"cannot {'connect to the Ray cluster at ' + address if address else 'start Ray'} "
                               f"({first_line(exc)})") from None
        stack.callback(ray.shutdown)
        resources = ray.cluster_resources()
        where = f"the Ray cluster at {address}" if address else "the local Ray instance"
        have_gpus, have_cpus = resources.get("GPU", 0.0), resources.get("CPU", 0.0)
        if device == "auto":  # the cluster's devices decide, not the driver's: the actors do the work
            device = "cuda" if have_gpus > 0 else "cpu"
        gpus = gpus_per_actor if gpus_per_actor is not None else (1.0 if device == "cuda" else 0.0)
        if (device == "cuda" or gpus > 0) and have_gpus < max(gpus, 1e-9):
            raise EvalkitError(f"{'--device cuda' if device == 'cuda' else '--ray-gpus-per-actor'}: {where} has "
                               f"no GPU ({have_cpus:g} CPUs); use --device cpu, or a cluster with GPU nodes")
        if device != "cuda" and gpus > 0:
            raise EvalkitError("--ray-gpus-per-actor needs --device cuda: the actors would hold GPUs and not use them")
        cpus = _cpus_per_actor(ray, gpus)
        size = int(have_gpus // gpus) if gpus else int(have_cpus // cpus)
        if size < 1:
            raise EvalkitError(f"{where} has no CPU for an evalkit actor")
        say(f"Ray: {where}, {size} actor(s) at most ({have_cpus:g} CPUs, {have_gpus:g} GPUs; "
            f"{cpus} CPU(s) per actor)")
        yield Cluster(ray, size, gpus, cpus, say, device)


def _cpus_per_actor(ray: Any, gpus: float) -> int:
    """CPUs each actor reserves. With GPUs, the CPUs of the leanest GPU node per GPU (its metric
    workers run on them), so every GPU gets an actor. On CPU, all the CPUs of the leanest node:
    an actor per node, which runs evalkit's own pipeline there (Whisper beside metric worker
    processes, one lane per core) and loads its models once per node, not once per core. On one
    2-core machine, two 1-CPU actors made a sweep 1.45x the local executor's time, one 2-CPU actor
    brought it to the figure in benchmarks/sweep_ray.py."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if not gpus:
        return max(1, int(min((r.get("CPU", 0.0) for r in nodes if r.get("CPU")), default=1.0)))
    shares = [r.get("CPU", 0.0) / r["GPU"] for r in nodes if r.get("GPU")]
    return max(1, int(min(shares, default=1.0) * gpus))


@dataclass
class Job:
    """One piece of work for an actor (a sweep's (checkpoint, suite), a run's shard), tried on
    another actor when its actor dies, at most MAX_ATTEMPTS times."""

    label: str  # what the messages call it
    send: Callable[[Any], Any]  # actor -> the ref of its answer
    done: Callable[[dict[str, Any]], None]  # the actor's answer
    give_up: Callable[[str], None]  # why it will not be done
    tries: int = 0
    last_error: str = ""


@dataclass
class Cluster:
    """Actors on a connected Ray cluster, and the loop that feeds them a sweep's tasks."""

    ray: Any
    size: int  # actors at most
    gpus: float  # per actor
    cpus: int  # per actor: Whisper and, beside it, cpus - 1 metric workers unless --workers says
    say: Callable[[str], None]
    device: str = "cpu"  # cpu or cuda: --device, with auto decided by the cluster's GPUs
    _actor_class: Any = field(default=None, init=False)

    def _new_actor(self) -> Any:
        if self._actor_class is None:
            self._actor_class = self.ray.remote(EvalActor)
        return self._actor_class.options(num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=0,
                                         max_task_retries=0).remote(self.cpus)

    def run(self, state: _State, found: list[Checkpoint]) -> None:
        """Every (checkpoint, suite) of `found` that the driver's lookup leaves, on the actors."""
        from . import sweep

        todo: deque[Job] = deque()
        for i, c in enumerate(found, 1):
            counted = False
            for suite in state.config.suites:
                planned = sweep._plan(state, c, suite, False, f"[{i}/{len(found)}] ")
                if planned is None:
                    continue
                if isinstance(planned, sweep._Task):
                    todo.append(self._sweep_job(state, planned))
                    counted = True
                else:
                    sweep._record(state, planned)
                    counted = counted or planned.status != "skipped"
            if counted:
                state.evaluated += 1
                if sweep._enough(state, c):
                    break
            if state.config.until is not None and c.step >= state.config.until:
                break
        if todo:
            try:
                self.feed(todo)
            except KeyboardInterrupt as exc:
                how = "terminated" if isinstance(exc, Terminated) else "interrupted"
                stop = runner.Interrupted(f"{how}: {sum(e.status == 'done' for e in state.entries)} "
                                          f"evaluation(s) are done in {state.out_dir}")
                stop.exit_code = exc.exit_code if isinstance(exc, Terminated) else 130
                raise stop from None

    def feed(self, todo: deque[Job], stop: Callable[[], bool] = lambda: False) -> None:
        """Every job, one at a time per actor, until each is done or given up, or `stop()` says so
        (checked after every answer; what is in flight then is dropped). An actor that dies costs
        its job one try: the job goes back to the front of the queue and a replacement actor starts
        (at most size * MAX_ATTEMPTS of them). A job's `done` gets every answer, an "error" one too."""
        ray = self.ray
        total = len(todo)
        starting: dict[Any, Any] = {}  # ready ref -> actor not yet known to be up
        idle: list[Any] = []  # a free slot of an actor (an actor has SLOTS)
        running: dict[Any, tuple[Any, Job]] = {}  # result ref -> (actor, job)
        replacements = self.size * MAX_ATTEMPTS
        for _ in range(min(self.size, total)):
            actor = self._new_actor()
            starting[actor.pid.remote()] = actor
        waiting_since = time.monotonic()
        while (todo or running) and not stop():
            while todo and idle:
                actor, job = idle.pop(), todo.popleft()
                job.tries += 1
                tail = f" (try {job.tries} of {MAX_ATTEMPTS})" if job.tries > 1 else ""
                self.say(f"{job.label}: sent to a Ray actor{tail}")
                running[job.send(actor)] = (actor, job)
            if not running and not starting:
                break
            if not running and time.monotonic() - waiting_since > READY_TIMEOUT_S:
                for job in todo:
                    self._give_up(job, f"no Ray actor could start in {READY_TIMEOUT_S:g} s")
                return
            done, _ = ray.wait([*running, *starting], num_returns=1, timeout=10.0)
            for ref in done:
                if ref in starting:
                    actor = starting.pop(ref)
                    try:
                        ray.get(ref)
                        idle.extend([actor] * SLOTS)
                        waiting_since = time.monotonic()
                    except ray.exceptions.RayError as exc:
                        self.say(f"Ray: an actor did not start ({first_line(exc)})")
                    continue
                actor, job = running.pop(ref)
                try:
                    answer = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:  # evalkit itself raised: trying again changes nothing
                    idle.append(actor)
                    self._give_up(job, f"the Ray actor raised {first_line(exc.cause or exc)}")
                    continue
                except ray.exceptions.RayError as exc:  # the actor (its process or its node) is gone
                    job.last_error = first_line(exc)
                    with contextlib.suppress(Exception):
                        ray.kill(actor)
                    idle[:] = [a for a in idle if a is not actor]  # its other slot (its other job fails on its own)
                    if job.tries >= MAX_ATTEMPTS:
                        self._give_up(job, f"its Ray actor died {job.tries} times (last: {job.last_error})")
                    else:
                        self.say(f"{job.label}: its Ray actor died ({job.last_error}); retrying on another actor")
                        todo.appendleft(job)
                    actors = {id(a) for a in idle} | {id(a) for a, _ in running.values()}
                    alive = len(actors) + len(starting)
                    wanted = min(self.size, len(todo) + len(running))
                    if replacements > 0 and alive < wanted:
                        replacements -= 1
                        new = self._new_actor()
                        starting[new.pid.remote()] = new
                        waiting_since = time.monotonic()
                    continue
                idle.append(actor)
                job.done(answer)
        if stop():
            return
        for job in todo:  # every actor gone, and no replacement left to start
            self._give_up(job, f"no Ray actor left ({job.last_error or 'none started'})")

    def _give_up(self, job: Job, reason: str) -> None:
        self.say(f"{job.label}: failed: {reason}")
        job.give_up(reason)

    def _sweep_job(self, state: _State, task: _Task) -> Job:
        """A sweep's (checkpoint, suite) as a job: the actor runs it whole, with the driver's resolved
        device and store (its metric workers by default as many as its CPUs allow beside Whisper:
        EvalActor sizes its lanes to them)."""
        from . import sweep

        config = dataclasses.replace(task.config, device=task.prepared.device, tracking_uri=state.uri)
        job = Job(f"{task.label} on {task.base.suite}",
                  send=lambda actor: actor.evaluate.remote(config, task.prepared.key),
                  done=lambda answer: self._done(state, task, answer, lambda reason: self._give_up(job, reason)),
                  give_up=lambda reason: sweep._record(state, dataclasses.replace(task.base, reason=reason)))
        return job

    def _done(self, state: _State, task: _Task, answer: dict[str, Any], fail: Callable[[str], None]) -> None:
        """A task came back: its folder into the sweep folder, then MLflow, once; `fail` otherwise."""
        from . import sweep

        try:
            if "error" in answer:
                raise EvalkitError(answer["error"])
            unpack(answer["tar"], task.run_dir)
        except EvalkitError as exc:
            fail(str(exc))
            return
        tracking_error = None
        try:
            if task.prepared.tracking_problem is not None:
                raise task.prepared.tracking_problem
            logged = tracking.find_evaluated(state.uri, state.experiment, task.prepared.key)
            if logged is None:  # the guard: never a second run of the same evaluation
                tracking.log_run(task.run_dir, state.uri, state.experiment, state.parent)
            else:
                summary = record.load_summary(task.run_dir)
                record.write_summary(task.run_dir, dataclasses.replace(
                    summary, tracking=record.TrackingInfo(state.uri, state.experiment, logged.run_id)))
        except EvalkitError as exc:
            tracking_error = str(exc)
        summary = record.load_summary(task.run_dir)
        result = runner.RunResult(task.run_dir, summary, [], tracking_error, tuple(answer.get("broken") or ()))
        sweep._record(state, sweep._finished(state, task, result))
