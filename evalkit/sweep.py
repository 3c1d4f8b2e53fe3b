"""`evalkit sweep`: every checkpoint of a training run on one or more suites, as curves over the
training step.

Each (checkpoint, suite) is an ordinary evaluation (`evalkit.runner`: the same folder, table and
MLflow run as `evalkit run`), logged as a child of one parent run per sweep, on which every
aggregate is logged again as `<suite>/<key>` at MLflow step = the training step, so the chart
view draws each metric over training. Metrics, their worker processes and Whisper load once for
the whole sweep (runner.Shared), not once per checkpoint.

The training step of a checkpoint comes from `--steps` (in MODEL order), else from the checkpoint
(its `global_step`, `step` or `epoch` entry, read with torch.load(weights_only=True): nothing is
unpickled), else its sidecar (`step:` in CKPT.evalkit.yaml), else the last number in its file
name; the sweep prints which. Two checkpoints with one step are refused: the curve would have two
points at one x.

Work is never done twice: a (checkpoint, suite) whose evalkit.evaluation_key (model bytes, suite
digest, every setting that changes a row) is already a finished run of the experiment, or done
in this sweep's folder, is skipped; an interrupted evaluation resumes from its folder. A parent
run is found again by the sweep's name, so a re-run nightly adds its points to the same curves.

`--watch` polls the folders and globs given for new checkpoints and evaluates each once it is
complete: its size and modification time unchanged between two polls, and loadable. A file
that does not load yet (half written, or renamed into place later) is tried again when it
changes; one that never loads is reported as failed when the sweep ends. Files named like
temporary files (.tmp, .part, .partial, a leading dot) are never taken.

SWEEP/sweep.json records every (checkpoint, suite): done, failed (with the reason) or skipped,
its run folder (relative to SWEEP) and MLflow run id; it is rewritten after each, so a crash
loses nothing that finished.
`executor="ray"` (`--executor ray`) runs the evaluations on Ray actors (evalkit.sweep_ray);
the lookups above, the run folders and every MLflow write stay in this process.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from . import record, runner, tracking
from .errors import EvalkitError, Terminated, first_line
from .progress import Progress
from .untrusted import check_name

if TYPE_CHECKING:
    from . import sweep_ray

FORMAT = 1
SWEEP_FILE = "sweep.json"
# What a folder of checkpoints holds that evalkit can evaluate: PyTorch checkpoints and archives,
# torch.export programs, Piper/ONNX voices.
MODEL_SUFFIXES = (".pt", ".pth", ".ckpt", ".pt2", ".onnx")
MEMBER_TAG = "evalkit.sweep_member"  # on each child run: the sweep's name (the parent has evalkit.sweep)
STEP_KEYS = ("global_step", "step", "epoch")  # in this order: trainers that save several agree on the first
_TEMPORARY = re.compile(r"^\.|\.(tmp|part|partial|incomplete)$|~$", re.IGNORECASE)


@dataclass(frozen=True)
class Checkpoint:
    model: str
    step: int
    step_source: str  # where the step came from, as printed: "--steps", "checkpoint key global_step", ...


@dataclass(frozen=True)
class Entry:
    """One (checkpoint, suite) of the sweep, as sweep.json records it."""

    model: str
    step: int
    step_source: str
    suite: str
    status: str  # done | failed | skipped
    reason: str | None = None
    run_dir: str | None = None  # relative to the sweep folder
    mlflow_run_id: str | None = None
    key: str | None = None  # evalkit.evaluation_key
    broken: tuple[str, ...] = ()  # stages that measured nothing (runner.broken_stages)


@dataclass(frozen=True)
class SweepConfig:
    suites: tuple[str, ...]
    models: tuple[str, ...]
    run: runner.RunConfig  # everything else, as for `evalkit run` (its suite, model, out_dir and step are set here)
    steps: tuple[int, ...] | None = None
    name: str | None = None  # the parent run's name; default: the folder of the first checkpoint
    out_dir: Path | None = None
    watch: bool = False
    poll_s: float = 30.0
    until: int | None = None  # stop once a checkpoint at this step or later is evaluated
    max_checkpoints: int | None = None  # stop after evaluating this many new checkpoints
    executor: str = "local"  # local (this process) | ray (evalkit.sweep_ray: actors on a Ray cluster)
    ray_address: str | None = None  # None: a local Ray instance started and stopped with the sweep
    ray_gpus_per_actor: float | None = None  # None: 1 with --device cuda, else 0


@dataclass
class SweepResult:
    out_dir: Path
    entries: list[Entry]
    parent_run_id: str | None
    tracking_error: str | None = None
    stopped: str | None = None  # why a --watch ended: "until", "max-checkpoints", "interrupted"
    report: tuple[Path, Path] | None = None

    @property
    def failed(self) -> list[Entry]:
        return [e for e in self.entries if e.status == "failed"]


# --- which checkpoints, at which steps -----------------------------------------------------


def _natural(path: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)]


def _is_candidate(path: Path) -> bool:
    return (path.is_file() and path.suffix.lower() in MODEL_SUFFIXES and not _TEMPORARY.search(path.name))


def _is_pattern(spec: str) -> bool:
    return any(c in spec for c in "*?[") and not Path(spec).exists()


def expand(specs: tuple[str, ...], quiet_empty: bool = False) -> list[str]:
    """The models that `specs` name: a folder gives its checkpoint files, a glob the checkpoint
    files it matches (natural order: ckpt-200 before ckpt-1000); anything else (a file, espeak:ko,
    an endpoint) is itself. A folder or glob that gives nothing is an error unless `quiet_empty`
    (a --watch waits for its first checkpoint)."""
    out: list[str] = []
    for spec in specs:
        if Path(spec).is_dir():
            found = [str(p) for p in Path(spec).iterdir() if _is_candidate(p)]
            if not found and not quiet_empty:
                raise EvalkitError(f"{spec}: no checkpoint in this folder (files ending "
                                   f"{', '.join(MODEL_SUFFIXES)}); give checkpoint files or a glob instead")
        elif _is_pattern(spec):
            found = [p for p in glob.glob(spec, recursive=True) if _is_candidate(Path(p))]
            if not found and not quiet_empty:
                raise EvalkitError(f"{spec} matches no checkpoint file (files ending {', '.join(MODEL_SUFFIXES)})")
        else:
            found = [spec]
        out += sorted(found, key=_natural)
    unique: dict[str, str] = {}
    for m in out:  # a file named twice (a folder and a glob over it) is one checkpoint
        unique.setdefault(str(Path(m).resolve()) if Path(m).exists() else m, m)
    return list(unique.values())


def step_of(model: str) -> tuple[int, str] | None:
    """(step, where it came from) for one model, or None when nothing tells."""
    path = Path(model)
    if path.is_file() and path.suffix.lower() in (".pt", ".pth", ".ckpt"):
        found = _checkpoint_step(path)
        if found is not None:
            return found
        from .adapters.torch_checkpoint import read_sidecar

        side, where = read_sidecar(path)
        if "step" in side:
            return int(side["step"]), f"sidecar {where.name if where else ''}".strip()
    numbers = re.findall(r"\d+", path.name if path.exists() or "/" in model else model)
    if numbers:
        return int(numbers[-1]), "file name"
    return None


def _checkpoint_step(path: Path) -> tuple[int, str] | None:
    try:
        import torch

        # mmap: only the small entries are read, not gigabytes of weights; weights_only: nothing
        # in the file runs. A checkpoint that needs unpickling simply tells nothing here.
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return None
    if not isinstance(state, dict):
        return None
    for key in STEP_KEYS:
        value = state.get(key)
        if value is not None and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # a 0-d tensor
            value = value.item()
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value, f"checkpoint key {key}"
    return None


def checkpoints(models: list[str], steps: tuple[int, ...] | None) -> list[Checkpoint]:
    """Each model with its step, in step order; refuses what cannot make one curve."""
    if steps is not None:
        if len(steps) != len(models):
            raise EvalkitError(f"--steps gives {len(steps)} step(s) for {len(models)} model(s) "
                               f"({', '.join(models[:4])}{', ...' if len(models) > 4 else ''}): give one step per "
                               "model, in the same order")
        found = [Checkpoint(m, s, "--steps") for m, s in zip(models, steps, strict=True)]
    else:
        found = []
        for m in models:
            step = step_of(m)
            if step is None:
                raise EvalkitError(f"cannot tell the training step of {m}: it has no global_step, step or epoch entry, "
                                   "no sidecar step and no number in its name; give --steps N,N,...")
            found.append(Checkpoint(m, *step))
    by_step: dict[int, Checkpoint] = {}
    for c in found:
        if c.step in by_step:
            raise EvalkitError(f"{by_step[c.step].model} and {c.model} both have step {c.step} "
                               f"({by_step[c.step].step_source}; {c.step_source}): one step per checkpoint, "
                               "or give --steps")
        by_step[c.step] = c
    return sorted(found, key=lambda c: c.step)


def default_name(models: tuple[str, ...]) -> str:
    """The sweep's name when none is given: the folder its checkpoints are in."""
    first = Path(models[0]) if models else Path("sweep")
    folder = first if first.is_dir() else first.parent
    # check_name's alphabet (ASCII letters, digits, . _ -, starting with a letter or digit, at most
    # 128): a default the user never typed must not be refused (체크포인트/ gives "sweep").
    raw = folder.resolve().name if str(folder) not in ("", ".") else Path.cwd().name
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", raw)
    return re.sub(r"^[^A-Za-z0-9]+", "", name)[:128].rstrip("-.") or "sweep"


# --- the record of a sweep -----------------------------------------------------------------


def load_entries(out_dir: Path) -> list[Entry]:
    path = out_dir / SWEEP_FILE
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [Entry(**{**e, "broken": tuple(e.get("broken") or ())}) for e in data["checkpoints"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EvalkitError(f"{path} is not an evalkit sweep record ({first_line(exc)}); "
                           "choose another --out") from None


def _write(out_dir: Path, sweep_id: str, started: float, finished: float | None, suites: tuple[str, ...],
           parent: str | None, entries: list[Entry]) -> None:
    data = {"format": FORMAT, "sweep_id": sweep_id, "started_unix": started, "finished_unix": finished,
            "suites": list(suites), "parent_run_id": parent,
            "checkpoints": [{**dataclasses.asdict(e), "broken": list(e.broken)} for e in entries]}
    record._atomic(out_dir / SWEEP_FILE, json.dumps(data, indent=1, ensure_ascii=False) + "\n")


# --- the sweep -----------------------------------------------------------------------------


@dataclass
class _State:
    config: SweepConfig
    name: str
    out_dir: Path
    uri: str
    experiment: str
    say: Callable[[str], None]
    progress: Callable[[], AbstractContextManager[Progress]]
    shared: runner.Shared
    sweep_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: float = field(default_factory=time.time)
    entries: list[Entry] = field(default_factory=list)
    parent: str | None = None
    held: dict[str, set[int]] = field(default_factory=dict)
    tracking_error: str | None = None
    evaluated: int = 0
    suite_names: dict[str, str] = field(default_factory=dict)  # --suite as given -> the suite's own name

    def save(self, finished: float | None = None) -> None:
        try:
            _write(self.out_dir, self.sweep_id, self.started, finished, self.config.suites, self.parent,
                   self.entries)
        except OSError as exc:
            raise EvalkitError(f"cannot write {self.out_dir / SWEEP_FILE} ({exc.strerror or exc}); every finished "
                               f"run folder is kept: fix that and finish with the same evalkit sweep command and "
                               f"--out {self.out_dir}") from None

    def tracking_failed(self, exc: EvalkitError) -> None:
        if self.tracking_error is None:
            self.tracking_error = str(exc)
            self.say(f"MLflow: {exc}; the sweep goes on and keeps everything in {self.out_dir}")


def sweep(config: SweepConfig, progress: Callable[[], AbstractContextManager[Progress]],
          say: Callable[[str], None]) -> SweepResult:
    """Evaluate every checkpoint on every suite (see the module docstring); bad input that leaves
    nothing to run fails before any work. With `executor="ray"` the evaluations run on Ray actors
    (evalkit.sweep_ray); this process still decides what to skip and is the only writer."""
    _check(config)
    if config.executor == "local":
        return _sweep(config, progress, say, None)
    from . import sweep_ray  # ray itself is imported there, only now

    with sweep_ray.connect(config.ray_address, config.run.device, config.ray_gpus_per_actor, say) as cluster:
        # Keys and the actors' runs use the device the cluster has (the driver computes keys with it).
        config = dataclasses.replace(config, run=dataclasses.replace(config.run, device=cluster.device))
        return _sweep(config, progress, say, cluster)


def _check(config: SweepConfig) -> None:
    if config.executor not in ("local", "ray"):
        raise EvalkitError(f"--executor must be local or ray, got {config.executor!r}")
    if config.executor == "local" and (config.ray_address or config.ray_gpus_per_actor):
        raise EvalkitError("--ray-address and --ray-gpus-per-actor need --executor ray")
    if config.executor == "ray" and config.watch:
        raise EvalkitError("--watch runs with --executor local only")
    if not config.suites:
        raise EvalkitError("evalkit sweep needs at least one --suite")
    if not config.models:
        raise EvalkitError("evalkit sweep needs at least one MODEL: checkpoint files, a folder or a glob")
    if config.watch and not any(Path(m).is_dir() or _is_pattern(m) for m in config.models):
        raise EvalkitError("--watch needs a folder or a glob to watch for new checkpoints")
    if config.watch and config.steps is not None:
        raise EvalkitError("--steps cannot name checkpoints that do not exist yet: with --watch, each step comes "
                           "from its checkpoint or its file name")
    if (config.until is not None and config.until < 0) or (config.max_checkpoints or 1) < 1:
        raise EvalkitError("--until must be a step (0 or more) and --max-checkpoints at least 1")


def _sweep(config: SweepConfig, progress: Callable[[], AbstractContextManager[Progress]],
           say: Callable[[str], None], cluster: sweep_ray.Cluster | None) -> SweepResult:
    found = checkpoints(expand(config.models, quiet_empty=config.watch), config.steps)
    name = check_name(config.name or default_name(config.models), "--name")
    out_dir = config.out_dir or Path("evalkit-runs") / f"sweep-{name}-{datetime.now():%Y%m%d-%H%M%S}"
    previous = load_entries(out_dir)
    # Every suite and setting is checked before the first checkpoint is touched: a typo in a
    # suite name fails now, not after an hour of evaluating the first suite.
    base = dataclasses.replace(config.run, model=found[0].model if found else "espeak:en")
    shared = runner.Shared()
    remote = config.executor == "ray"  # the device is the cluster's, not looked for here
    prepared = {s: runner.prepare(dataclasses.replace(base, suite=s), shared, remote) for s in config.suites}
    suite_names = {s: p.suite.name for s, p in prepared.items()}
    if len(set(suite_names.values())) != len(suite_names):
        raise EvalkitError(f"two --suite options name the same suite ({', '.join(suite_names.values())})")
    first = next(iter(prepared.values()))
    experiment = config.run.experiment or (f"evalkit-{first.suite.name}" if len(prepared) == 1 else "evalkit-sweeps")
    state = _State(config, name, out_dir, first.uri, experiment, say, progress, shared, suite_names=suite_names)
    state.entries = previous
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        state.save()
    except OSError as exc:
        raise EvalkitError(f"sweep folder {out_dir} is not writable ({exc.strerror or exc})") from None
    if first.tracking_problem is not None:
        state.tracking_failed(first.tracking_problem)
    else:
        try:
            state.parent, state.held = tracking.sweep_parent(
                state.uri, experiment, name, {"evalkit.sweep_id": state.sweep_id,
                                              "evalkit.suites": ",".join(suite_names.values()),
                                              "evalkit.sweep_folder": str(out_dir.resolve())})
        except EvalkitError as exc:
            state.tracking_failed(exc)
    stopped = None
    status = "KILLED"
    try:
        if config.watch:
            stopped = _watch(state)
        elif cluster is not None:
            cluster.run(state, found)
        else:
            for i, c in enumerate(found, 1):
                counted = _evaluate(state, c, position=f"[{i}/{len(found)}] ")
                # --until holds whether or not this checkpoint needed work (it may have been skipped).
                if (counted and _enough(state, c)) or (config.until is not None and c.step >= config.until):
                    break
        status = "FINISHED"
    except runner.Interrupted as exc:
        stop = runner.Interrupted(f"{exc}; or finish the whole sweep with the same evalkit sweep command and "
                                  f"--out {out_dir}")
        stop.exit_code = exc.exit_code
        raise stop from None
    except EvalkitError:
        status = "FAILED"
        raise
    finally:
        shared.close(now=status == "KILLED")
        try:
            state.save(time.time())
        finally:  # a parent run left RUNNING would look alive in MLflow forever
            if state.parent is not None:
                try:
                    tracking.end_sweep(state.uri, state.parent, status)
                except EvalkitError as exc:
                    state.tracking_failed(exc)
    result = SweepResult(out_dir, state.entries, state.parent, state.tracking_error, stopped)
    result.report = _report(state)
    return result


def _enough(state: _State, c: Checkpoint) -> bool:
    """Whether --until or --max-checkpoints says the sweep is done after checkpoint `c`."""
    cfg = state.config
    if cfg.until is not None and c.step >= cfg.until:
        return True
    return cfg.max_checkpoints is not None and state.evaluated >= cfg.max_checkpoints


def _evaluate(state: _State, c: Checkpoint, retry_load: bool = False, position: str = "") -> bool:
    """Every suite on checkpoint `c`; True when it counted as a checkpoint evaluated (done or
    failed, not skipped). With `retry_load` (a --watch), a checkpoint that does not load is not
    recorded: LoadFailed is raised for the watcher to try it again when the file changes."""
    counted = False
    for suite in state.config.suites:
        entry = _one(state, c, suite, retry_load, position)
        if entry is None:
            continue
        _record(state, entry)
        counted = counted or entry.status != "skipped"
    if counted:
        state.evaluated += 1
    return counted


def _record(state: _State, entry: Entry) -> None:
    """`entry` in sweep.json, in place of an earlier failure of the same (step, suite)."""
    state.entries = [e for e in state.entries
                     if not (e.suite == entry.suite and e.step == entry.step and e.status == "failed")]
    state.entries.append(entry)
    state.save()


class LoadFailed(EvalkitError):
    """A checkpoint a --watch will try again once it changes."""


@dataclass(frozen=True)
class _Task:
    """A (checkpoint, suite) to evaluate: nothing in the sweep or the experiment has its key."""

    config: runner.RunConfig
    prepared: runner.Prepared
    base: Entry  # status failed until it is done
    label: str
    run_dir: Path


def _one(state: _State, c: Checkpoint, suite: str, retry_load: bool, position: str) -> Entry | None:
    task = _plan(state, c, suite, retry_load, position)
    if not isinstance(task, _Task):
        return task
    state.say(f"{task.label} on {suite}")
    try:
        with state.progress() as p:
            result = runner.run(task.config, p, state.shared, task.prepared, parent_run_id=state.parent)
    except runner.Interrupted:
        raise
    except EvalkitError as exc:
        return _failed(state, task.base, task.label, suite, exc, retry_load)
    return _finished(state, task, result)


def _plan(state: _State, c: Checkpoint, suite: str, retry_load: bool, position: str) -> Entry | _Task | None:
    """What to do with (c, suite): None (already done in this sweep), an Entry (skipped: already
    in the experiment; failed: bad input), or a _Task to evaluate. Whatever the executor, this
    lookup happens here, in the one process that logs."""
    cfg = state.config
    # Named by the suite's own (checked) name: two suite folders may end in the same folder name.
    run_dir = state.out_dir / f"{state.suite_names.get(suite) or _safe(suite)}-step{c.step:08d}"
    config = dataclasses.replace(cfg.run, suite=suite, model=c.model, out_dir=run_dir, step=c.step,
                                 experiment=state.experiment,
                                 tags={**cfg.run.tags, MEMBER_TAG: state.name, "evalkit.sweep_id": state.sweep_id,
                                       "evalkit.step_source": c.step_source})
    shown = Path(c.model).name if Path(c.model).exists() else c.model
    label = f"{position}{shown} (step {c.step}, from {c.step_source})"
    base = Entry(c.model, c.step, c.step_source, suite, "failed")
    try:
        prepared = runner.prepare(config, state.shared, remote=cfg.executor == "ray")
    except EvalkitError as exc:
        return _failed(state, base, label, suite, exc, retry_load)
    key = prepared.key
    base = dataclasses.replace(base, key=key)
    done = next((e for e in state.entries if e.key == key and e.status in ("done", "skipped")), None)
    if done is not None:
        state.say(f"{label} on {suite}: already in this sweep ({done.status}), skipped")
        return None
    adopted = _adopt(state, run_dir, key)
    if adopted is not None:
        state.say(f"{label} on {suite}: finished in {run_dir} by an earlier attempt, recorded")
        return _finished(state, _Task(config, prepared, base, label, run_dir), adopted)
    if prepared.tracking_problem is None:  # with or without a parent run: no (model, suite) twice
        try:
            logged = tracking.find_evaluated(state.uri, state.experiment, key)
        except EvalkitError as exc:
            state.tracking_failed(exc)
            logged = None
        if logged is not None:
            state.say(f"{label} on {suite}: already evaluated in experiment {state.experiment!r} "
                      f"(MLflow run {logged.run_id}), skipped")
            _points(state, prepared.suite.name, c.step, logged.metrics)
            return dataclasses.replace(base, status="skipped", mlflow_run_id=logged.run_id,
                                       reason=f"already evaluated as MLflow run {logged.run_id}")
    return _Task(config, prepared, base, label, run_dir)


def _adopt(state: _State, run_dir: Path, key: str) -> runner.RunResult | None:
    """A run folder this sweep finished but never recorded (stopped between the two): logged now
    (log_run is idempotent) instead of refused as "already holds a finished run"."""
    if not (run_dir / record.SUMMARY).is_file():
        return None
    summary, rows = record.load(run_dir)
    if summary.tags.get(runner.EVALUATION_KEY_TAG) != key:
        return None  # another evaluation's folder: the runner refuses it with its own line
    error = None
    if summary.tracking.run_id is None and state.parent is not None:
        try:
            mlflow_id = tracking.log_run(run_dir, state.uri, state.experiment, state.parent)
            summary = dataclasses.replace(summary, tracking=dataclasses.replace(summary.tracking, run_id=mlflow_id))
        except EvalkitError as exc:
            error = str(exc)
    elif state.parent is None:
        error = "MLflow is not available to this sweep"
    return runner.RunResult(run_dir, summary, rows, error, summary.broken_stages)


def _finished(state: _State, task: _Task, result: runner.RunResult) -> Entry:
    """The entry of an evaluated task, its numbers on the parent run's curves."""
    base, prepared, c_step = task.base, task.prepared, task.base.step
    rel = task.run_dir.relative_to(state.out_dir).as_posix()
    if result.tracking_error:
        state.tracking_failed(EvalkitError(result.tracking_error))
        mlflow_id = None
    else:
        mlflow_id = result.summary.tracking.run_id
        _points(state, prepared.suite.name, c_step, tracking.flat_metrics(result.summary))
    failures = int(result.summary.aggregates.get("failures/count", 0))
    state.say(f"  {tracking.description(result.summary)}" + (f"; broken: {'; '.join(result.broken)}"
                                                                if result.broken else ""))
    return dataclasses.replace(base, status="done", run_dir=rel, mlflow_run_id=mlflow_id, broken=result.broken,
                               reason=f"{failures} utterance(s) failed" if failures else None)


def _failed(state: _State, base: Entry, label: str, suite: str, exc: EvalkitError, retry_load: bool) -> Entry:
    if retry_load:
        raise LoadFailed(str(exc)) from None
    state.say(f"{label} on {suite}: failed: {exc}")
    return dataclasses.replace(base, reason=str(exc))


def _points(state: _State, suite: str, step: int, values: Mapping[str, float]) -> None:
    """The checkpoint's numbers on the parent run at its training step, each once."""
    if state.parent is None:
        return
    fresh = {f"{suite}/{k}": v for k, v in values.items() if step not in state.held.get(f"{suite}/{k}", set())}
    try:
        tracking.log_points(state.uri, state.parent, fresh, step, time.time())
    except EvalkitError as exc:
        state.tracking_failed(exc)
        return
    for k in fresh:
        state.held.setdefault(k, set()).add(step)


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "-", Path(name).name).strip("-.") or "suite"


# --- --watch -------------------------------------------------------------------------------


def _watch(state: _State) -> str:
    """Evaluate every complete checkpoint, those there at the start included (training may be
    writing one), as it appears, until --until, --max-checkpoints or Ctrl-C (which ends the
    sweep normally while it waits)."""
    cfg = state.config
    handled: set[str] = set()
    last_seen: dict[str, tuple[int, int]] = {}
    waiting: dict[str, tuple[tuple[int, int], str]] = {}  # unloadable files: their (size, mtime) and why
    state.say(f"watching {', '.join(cfg.models)} for new checkpoints every {cfg.poll_s:g} s (Ctrl-C ends the sweep)")
    try:
        while True:
            for model in expand(cfg.models, quiet_empty=True):
                key = str(Path(model).resolve())
                if key in handled:
                    continue
                try:
                    st = Path(model).stat()
                except OSError:
                    continue
                seen = (st.st_size, st.st_mtime_ns)
                previous, last_seen[key] = last_seen.get(key), seen
                if previous != seen or (key in waiting and waiting[key][0] == seen):
                    continue  # still being written, or unchanged since it last failed to load
                try:
                    c = checkpoints([model], None)[0]
                except EvalkitError as exc:
                    waiting[key] = (seen, str(exc))
                    continue
                if any(e.step == c.step and e.status != "failed" and Path(e.model).resolve() != Path(model).resolve()
                       for e in state.entries):
                    waiting[key] = (seen, f"another checkpoint of this sweep already has step {c.step}")
                    state.say(f"{model}: {waiting[key][1]}; not evaluated")
                    continue
                try:
                    _evaluate(state, c, retry_load=True)
                except LoadFailed as exc:
                    waiting[key] = (seen, str(exc))
                    continue
                handled.add(key)
                waiting.pop(key, None)
                if _enough(state, c):
                    return "until" if cfg.until is not None and c.step >= cfg.until else "max-checkpoints"
            try:
                time.sleep(cfg.poll_s)
            except KeyboardInterrupt as exc:
                if isinstance(exc, Terminated):
                    raise
                state.say("stopped watching")  # Ctrl-C while waiting is how a --watch ends: nothing was in flight
                return "interrupted"
    finally:
        for key, (_, why) in waiting.items():  # never became loadable: recorded, not lost
            model = next((m for m in expand(cfg.models, quiet_empty=True) if str(Path(m).resolve()) == key), key)
            step = step_of(model)
            for suite in cfg.suites:
                state.entries.append(Entry(model, step[0] if step else -1, step[1] if step else "unknown", suite,
                                           "failed", reason=f"never loaded while watched: {why}"))


def _report(state: _State) -> tuple[Path, Path] | None:
    if not any(e.status == "done" for e in state.entries):
        return None
    try:
        from . import sweep_report
    except ImportError:
        return None
    try:
        paths = sweep_report.write(state.out_dir)
    except EvalkitError as exc:
        state.say(f"sweep report: {exc}")
        return None
    if state.parent is not None:
        try:
            tracking.log_sweep_files(state.uri, state.parent, state.out_dir, [*paths, state.out_dir / SWEEP_FILE])
        except EvalkitError as exc:
            state.tracking_failed(exc)
    return paths
