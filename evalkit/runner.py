"""`evalkit run` without the terminal: resolve everything, evaluate, write the local record, log."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path

from . import (
    __version__,
    adapters,
    allocator,
    metric_loading,
    pipeline,
    plugins,
    record,
    references,
    textnorm,
    trace,
    tracking,
)
from . import aggregate as aggregate_mod
from . import asr as asr_mod
from . import cache as cache_mod
from . import suite as suite_mod
from . import workers as workers_mod
from .errors import EvalkitError, Terminated
from .protocols import ASRBackend, Metric, TTSAdapter, declared
from .types import Row, Suite

EVALUATION_KEY_TAG = tracking.EVALUATION_KEY_TAG


@dataclass(frozen=True)
class RunConfig:
    suite: str
    model: str
    adapter: str | None = None
    asr: str = asr_mod.DEFAULT
    metrics: tuple[str, ...] | None = None  # None: every installed metric that needs no reference
    device: str = "auto"
    limit: int | None = None
    out_dir: Path | None = None
    tracking_uri: str | None = None  # None: the embedded sqlite store under ./evalkit-runs
    experiment: str | None = None  # None: "evalkit-<suite name>"
    tags: Mapping[str, str] = field(default_factory=dict)
    reference_run: str | None = None  # a run folder, wav folder or MLflow run id; None: the suite's refs
    workers: int | None = None  # metric worker processes; None: evalkit.workers.default_workers()
    audio_from: str | None = None  # a finished run folder whose saved clips are scored (evalkit rescore)
    # --metric-option NAME.KEY=VALUE as {name: {key: value as given}}: converted when metrics load
    metric_options: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    step: int | None = None  # the checkpoint's training step: MLflow draws each metric over it
    asr_options: Mapping[str, str] = field(default_factory=dict)  # --asr-option KEY=VALUE (in the ASR digest)
    # Every synthesis request's SynthesisRequest.seed: a stochastic model samples differently per seed
    # (evalkit calibrate gives each repeat its own); 0, the default, is what runs always used.
    seed: int = 0


@dataclass(frozen=True)
class RunResult:
    out_dir: Path
    summary: record.RunRecord
    rows: list[Row]
    tracking_error: str | None
    broken: tuple[str, ...] = ()  # stages that failed on every utterance they were given, with a reason


def resolve_device(device: str) -> str:
    if device not in ("auto", "cpu", "cuda"):
        raise EvalkitError(f"--device must be auto, cpu or cuda, got {device!r}")
    if device == "auto":
        return "cuda" if _cuda_available(torch_too=False) else "cpu"
    if device == "cuda" and not _cuda_available(torch_too=True):
        # Asked for and absent is bad usage: otherwise Whisper fails on every clip and the run "passes".
        raise EvalkitError("--device cuda: no CUDA device is available here (neither CTranslate2 nor torch "
                           "sees one); use --device cpu or auto")
    return device


def _cuda_available(torch_too: bool) -> bool:
    try:
        import ctranslate2

        if ctranslate2.get_cuda_device_count() > 0:
            return True
    except Exception:  # no CUDA runtime at all reads the same as no device
        pass
    if not torch_too:  # `auto` stays cheap: importing torch costs seconds
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def load_metrics(names: tuple[str, ...] | None, have_references: bool, have_prompts: bool = False,
                 options: Mapping[str, Mapping[str, str]] | None = None) -> list[Metric]:
    """The named metrics (each once, in the order given), or by default every installed one whose
    inputs this run has (those that read the transcript first), constructed with their `options`
    ({name: {key: value}}). The one place metrics are loaded:
    each is seen through the declared contract (a plug-in that does not derive from
    evalkit.protocols.Metric gets its defaults here), and a run whose options name no metric of
    it, or whose metrics' keys collide with each other or with evalkit's columns, is refused."""
    options = options or {}

    def construct(name: str, cls) -> Metric:
        with trace.span(f"construct metric {name}", "load"):
            return metric_loading.construct(name, cls, options.get(name, {}))

    if names is None:
        with trace.span("import metric plug-ins", "load"):
            installed = plugins.load_all(plugins.METRICS)
        found = [(n, construct(n, cls)) for n, cls, _ in installed]
        loaded = [(n, m) for n, m in found if not m.needs_reference or have_references
                  or (have_prompts and m.accepts_speaker_prompt)]
        # Transcript metrics first: "is the pronunciation clear" is the headline of a TTS run, and
        # the order is the summary's, where a report finds the headline key it ranks by.
        loaded.sort(key=lambda nm: not nm[1].needs_transcript)
    else:
        loaded = [(n, construct(n, plugins.load(plugins.METRICS, n))) for n in dict.fromkeys(names)]
    return metric_loading.checked(loaded, options)


class Shared:
    """What several evaluations in one process load once (evalkit sweep): the metrics, each set
    keyed by everything it is built from, and one metric worker pool per set, whose workers keep
    their loaded models from one checkpoint to the next. The ASR backend is shared already
    (evalkit.asr.resolve loads each once per process). With `keep_adapter` the last TTS model
    stays loaded for the next evaluation of the same model (a Ray actor's shards of one run),
    and is closed when another is asked for. `close` stops the workers and closes it."""

    def __init__(self, keep_adapter: bool = False) -> None:
        self._metrics: dict[str, list[Metric]] = {}
        self._pools: dict[int, workers_mod.MetricPool] = {}
        self.keep_adapter = keep_adapter
        self._adapter: tuple[tuple[str, str | None, str], TTSAdapter] | None = None

    def adapter(self, model: str, adapter: str | None, device: str) -> TTSAdapter:
        """The TTS model, loaded once while the same one is asked for (with keep_adapter)."""
        key = (model, adapter, device)
        if self._adapter is not None and self._adapter[0] == key:
            return self._adapter[1]
        self.drop_adapter()
        loaded = adapters.resolve(model, adapter, device)
        self._adapter = (key, loaded)
        return loaded

    def drop_adapter(self) -> None:
        kept, self._adapter = self._adapter, None
        if kept is not None:
            kept[1].close()

    def metrics(self, key: str, make: Callable[[], list[Metric]]) -> list[Metric]:
        if key not in self._metrics:
            self._metrics[key] = make()
        return self._metrics[key]

    def pool(self, metrics: list[Metric], workers: int | None) -> workers_mod.MetricPool | None:
        n = pipeline.pool_workers(metrics, workers, replaying=False)
        if not n:
            return None
        if id(metrics) not in self._pools:
            self._pools[id(metrics)] = workers_mod.MetricPool(workers_mod.pooled([declared(m) for m in metrics]), n)
        return self._pools[id(metrics)]

    def close(self, now: bool = False) -> None:
        for pool in self._pools.values():
            pool.close(now=now)
        self._pools.clear()
        self.drop_adapter()


@dataclass(frozen=True)
class Prepared:
    """A run with everything resolved and loaded, before anything is evaluated or written."""

    config: RunConfig
    suite: Suite
    uri: str
    experiment: str
    refs: references.References | None
    metrics: list[Metric]
    device: str
    asr: ASRBackend | None
    tracking_problem: EvalkitError | None
    recorded: pipeline.Recorded | None
    source: record.RunRecord | None
    key: str  # evalkit.evaluation_key: the same model, suite and settings give the same key


def prepare(config: RunConfig, shared: Shared | None = None, remote: bool = False) -> Prepared:
    """Resolve the suite, references, metrics, device and ASR of `config`; bad input fails here,
    before any work. With `shared`, metrics already loaded for the same settings are reused.
    `remote`: the evaluation runs on other machines (a Ray driver), whose device config.device
    names (cpu or cuda, decided from the cluster): it is not looked for here."""
    allocator.keep_freed_memory()  # a no-op after the CLI's; for library callers
    if config.limit is not None and config.limit < 1:
        raise EvalkitError("--limit must be at least 1")
    suite = suite_mod.load(config.suite).limited(config.limit)
    if config.tracking_uri:  # credentials move to MLflow's environment; the URI is recorded without them
        config = dataclasses.replace(config, tracking_uri=tracking.adopt_credentials(config.tracking_uri))
    uri = config.tracking_uri or tracking.default_uri()
    refs = (references.resolve(config.reference_run, suite, uri) if config.reference_run
            else references.from_suite(suite))
    prompts = any(u.speaker_prompt is not None for u in suite.utterances)

    def make() -> list[Metric]:
        return load_metrics(config.metrics, refs is not None, prompts, config.metric_options)

    metrics_key = json.dumps([config.metrics, refs is not None, prompts, config.metric_options], sort_keys=True)
    with trace.span("load metrics", "load"):
        metrics = shared.metrics(metrics_key, make) if shared is not None else make()
    with trace.span("resolve device", "load"):
        device = config.device if remote and config.device in ("cpu", "cuda") else resolve_device(config.device)
    experiment = config.experiment or f"evalkit-{suite.name}"
    recorded, source = _recorded(Path(config.audio_from), suite) if config.audio_from else (None, None)
    with trace.span("resolve ASR (its weights load on first use)", "load"):
        asr = (asr_mod.resolve(config.asr, device,
                               pipeline.whisper_threads(metrics, config.workers, recorded is not None),
                               config.asr_options)
               if any(m.needs_transcript for m in metrics) else None)
    languages = getattr(asr, "languages", None)
    if languages is not None and suite.language not in languages:
        raise EvalkitError(f"--asr {config.asr} does not transcribe {suite.language!r}, the language of suite "
                           f"{suite.name}; choose a model that does (a multilingual Whisper)")
    key = evaluation_key(config, suite, metrics, asr, device, refs) if recorded is None else ""
    with trace.span("check the MLflow store is reachable", "tracking"):
        problem = _preflight(uri)
    return Prepared(config, suite, uri, experiment, refs, metrics, device, asr, problem, recorded, source, key)


def evaluation_key(config: RunConfig, suite: Suite, metrics: list[Metric], asr: ASRBackend | None, device: str,
                   refs: references.References | None) -> str:
    """One digest of what decides a run's numbers: the model's bytes, the suite's sentences and
    every setting that changes a row (not where it is written or logged, nor its step). A sweep
    skips a checkpoint whose key is already logged in the experiment."""
    settings: dict[str, object] = {
        "model": adapters.identity(config.model, config.adapter) or model_identity(config.model),
        "adapter": config.adapter,
        "suite": suite.digest,
        "asr": dict(asr.describe()).get("settings_digest", config.asr) if asr is not None else None,
        "metrics": [[m.name, m.version, dict(m.options)] for m in metrics],
        "device": device,
        "reference": refs.digest if refs is not None else None,
        "textnorm": textnorm.VERSION,
    }
    if config.seed:  # only when set: the keys of every earlier run stay what they were
        settings["seed"] = config.seed
    if config.limit is not None:  # the digest is the whole suite's; a --limit run scores fewer rows
        settings["limit"] = config.limit
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def model_identity(model: str) -> str:
    """sha256 of a model file's bytes, of a model folder's files (names and bytes), or of the
    spec itself (espeak:ko, an http endpoint)."""
    path = Path(model)
    try:
        if path.is_file():
            return cache_mod.sha256_file(path)
        if path.is_dir():
            h = hashlib.sha256()
            for f in sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink()):
                h.update(f"{f.relative_to(path).as_posix()}\n{cache_mod.sha256_file(f)}\n".encode())
            return h.hexdigest()
    except OSError:
        pass  # unreadable: the adapter says why when it loads it
    return hashlib.sha256(model.encode()).hexdigest()


@dataclass(frozen=True)
class Work:
    """What the evaluation step of `run` is given: the prepared run, its folder, the utterances an
    earlier attempt already holds, where finished rows go (`save`, crash-safe) and the progress."""

    prepared: Prepared
    out_dir: Path
    skip: frozenset[str]
    begin: Callable[[], None]  # writes run.json: called once the model is known to load, before any row
    save: Callable[[list[Row]], None]
    progress: pipeline.Progress | None
    idle: Callable[[], None] | None  # called when only the last results are awaited (MLflow's imports)


@dataclass(frozen=True)
class Evaluated:
    """What the evaluation step gives back: the new rows and cache counts, and the model's
    provenance (its adapter's describe() and name)."""

    evaluation: pipeline.Evaluation
    model: Mapping[str, str]
    adapter: str


Executor = Callable[[Work], Evaluated]  # the evaluation step elsewhere (evalkit.run_ray: shards on Ray actors)


def run(config: RunConfig, progress: pipeline.Progress | None = None, shared: Shared | None = None,
        prepared: Prepared | None = None, parent_run_id: str | None = None, log: bool = True,
        executor: Executor | None = None) -> RunResult:
    """Evaluate, write the local record, log it. A folder holding an unfinished run of the same
    configuration is resumed: only the utterances it lacks are evaluated. `prepared` (from
    `prepare`) skips resolving again; `shared` reuses loaded metrics and their workers; the MLflow
    run is a child of `parent_run_id` when given (a sweep's). `log=False` writes the folder and
    logs nothing: its caller logs it (a Ray worker's driver, evalkit.sweep_ray). `executor` does
    the evaluation step instead of this process (everything before and after it stays here)."""
    if prepared is None:
        with trace.span("prepare: suite, references, metrics, device, ASR", "load", model=config.model):
            prepared = prepare(config, shared)
    p = prepared
    config, suite, uri, experiment, refs, metrics = p.config, p.suite, p.uri, p.experiment, p.refs, p.metrics
    device, asr, recorded, source, tracking_problem = p.device, p.asr, p.recorded, p.source, p.tracking_problem

    out_dir = config.out_dir or Path("evalkit-runs") / f"{datetime.now():%Y%m%d-%H%M%S}-{suite.name}"
    config = dataclasses.replace(config, out_dir=out_dir)
    p = dataclasses.replace(p, config=config)
    previous = _resumable_rows(out_dir, config, suite)
    started = time.time()
    saved = [len(previous)]  # rows safely on disk, counted here: the log itself may be what failed

    def save(rows: list) -> None:
        with trace.span(f"write {record.PROGRESS}", "write", rows=len(rows)):
            record.append_rows(out_dir, rows)
        saved[0] += len(rows)

    # MLflow's imports take seconds: made while the main thread only waits for the last metrics
    preload = partial(tracking.preload, uri) if log and not tracking_problem else None

    def begin() -> None:
        with trace.span(f"write {record.RUN}", "write"):
            _prepare_out(out_dir)
            record.write_run(out_dir, {"config": _config_dict(config), "suite_digest": suite.digest})

    work = Work(p, out_dir, frozenset(r.utterance_id for r in previous), begin, save, progress, preload)
    try:
        with trace.span("evaluate", "evaluate", suite=suite.name, model=config.model):
            done = (executor or partial(evaluate_here, shared=shared))(work)
        evaluation, model_info, adapter_name = done.evaluation, dict(done.model), done.adapter
    except KeyboardInterrupt as exc:
        stopped = Interrupted(f"{'terminated' if isinstance(exc, Terminated) else 'interrupted'}: {saved[0]} of "
                              f"{len(suite.utterances)} utterances are saved in {out_dir}; finish them with: "
                              f"evalkit run --resume {out_dir}")
        stopped.exit_code = exc.exit_code if isinstance(exc, Terminated) else 130
        raise stopped from None
    except OSError as exc:
        raise EvalkitError(f"cannot write to {out_dir} ({exc.strerror or exc}): {saved[0]} utterances "
                           f"are saved; fix that and finish with: evalkit run --resume {out_dir}") from None
    finished = time.time()
    order = {u.id: i for i, u in enumerate(suite.utterances)}
    rows = sorted([*previous, *evaluation.rows], key=lambda r: order[r.utterance_id])

    asr_info = dict(asr.describe()) if asr is not None else {}
    broken = broken_stages(rows, metrics, asr is not None, recorded is not None)
    extra_tags = {"evalkit.broken_stages": "; ".join(b.split(":")[0] for b in broken)} if broken else {}
    if source is not None:
        extra_tags["evalkit.rescored_from"] = source.run_id
    if p.key:
        extra_tags[EVALUATION_KEY_TAG] = p.key
    summary = _summary(config, suite, adapter_name, model_info, asr_info, metrics, device, rows,
                       started, finished, uri, experiment, refs, extra_tags,
                       cache=dataclasses.asdict(evaluation.counts), resumed=len(previous), broken=broken)
    try:
        with trace.span("write results (utterances.jsonl, .csv, summary.json)", "write"):
            record.write(out_dir, summary, rows)
            record.finish(out_dir)
    except OSError as exc:
        raise EvalkitError(f"cannot write the results to {out_dir} ({exc.strerror or exc}); every utterance "
                           f"is saved: fix that and finish with: evalkit run --resume {out_dir}") from None
    if not log:
        return RunResult(out_dir, summary, rows, None, broken)
    try:
        if tracking_problem:
            raise tracking_problem
        with trace.span("MLflow: log the run", "tracking"):
            mlflow_run_id = tracking.log_run(out_dir, uri, experiment, parent_run_id)
        summary = dataclasses.replace(summary, tracking=record.TrackingInfo(uri, experiment, mlflow_run_id))
        tracking_error = None
    except EvalkitError as exc:
        tracking_error = str(exc)
    return RunResult(out_dir, summary, rows, tracking_error, broken)


def evaluate_here(work: Work, shared: Shared | None) -> Evaluated:
    """The evaluation step in this process: the TTS model loads here, metrics score here and in
    this machine's worker processes (a Ray actor runs its shards through it too)."""
    p = work.prepared
    config, metrics, recorded = p.config, p.metrics, p.recorded
    # Start-up overlaps: the metric workers spawn and load their models, and Whisper loads on a
    # thread, while this thread loads the TTS model and the first clips are synthesized.
    shared_pool = shared.pool(metrics, config.workers) if shared is not None and recorded is None else None
    own_pool = None if shared_pool else pipeline.metric_pool(metrics, config.workers, recorded is not None)
    pool = shared_pool or own_pool
    if pool is not None:
        with trace.span("start the metric workers", "load"):
            pool.start()
    asr_loading = asr_mod.preload(p.asr) if p.asr is not None and recorded is None else None
    adapter = None
    keeper = shared if shared is not None and shared.keep_adapter else None  # it loads and closes the adapter
    try:
        with trace.span("load the TTS adapter", "load", model=config.model):
            if recorded is None:
                adapter = (keeper.adapter(config.model, config.adapter, p.device) if keeper is not None
                           else adapters.resolve(config.model, config.adapter, p.device))
        work.begin()
        evaluation = pipeline.evaluate(p.suite, adapter, p.asr, metrics, work.out_dir, work.progress,
                                       p.refs.paths if p.refs else None, on_rows=work.save, skip=work.skip,
                                       workers=config.workers, recorded=recorded, pool=pool, seed=config.seed,
                                       idle=work.idle)
        if adapter is not None:
            return Evaluated(evaluation, dict(adapter.describe()), adapter.name)
        assert p.source is not None  # without an adapter, the clips come from a recorded run
        return Evaluated(evaluation, dict(p.source.model), p.source.adapter)
    finally:
        if adapter is not None and keeper is None:
            adapter.close()
        if own_pool is not None:  # a shared pool is its owner's to close
            # Killed, not left to finish: every result is collected (or the run is failing), and
            # all a worker has left is its interpreter's teardown (0.3 s).
            own_pool.close(now=True)
        if asr_loading is not None and sys.exc_info()[0] is None:  # nothing may still be loading on return
            asr_loading.join()


def broken_stages(rows: list[Row], metrics: list[Metric], transcribed: bool, replayed: bool) -> tuple[str, ...]:
    """"stage: first reason" for each stage that failed on every utterance it was given: such a
    run measured nothing with that stage, which a nightly must not read as a pass."""
    out = []
    alive = [r for r in rows if r.failure is None]
    if rows and not alive and not replayed:
        out.append(f"synthesis: {rows[0].failure}")

    def all_failed(prefix: str) -> str | None:
        reasons = [next((n for n in r.notes if n.startswith(prefix)), None) for r in alive]
        return reasons[0] if alive and all(reasons) else None

    if transcribed and (reason := all_failed("asr failed:")):
        out.append(f"asr: {reason}")
    for m in metrics:
        if reason := all_failed(f"{m.name} failed:"):
            out.append(f"{m.name}: {reason}")
    return tuple(out)


# Models whose resolution runs a program or imports code named in the run folder: a folder from
# someone else must not choose what runs on this machine, so resuming them takes the full command.
def _runs_code(config: RunConfig) -> str | None:
    if config.model.startswith("cmd:"):
        return f"its model runs a command ({config.model[:60]})"
    if config.adapter and ":" in config.adapter:
        return f"its adapter imports code ({config.adapter})"
    return None


def resume_config(out_dir: Path) -> RunConfig:
    """The configuration of the unfinished run in OUT_DIR, to finish it with (`run`, locally or
    with an executor) where it is now, whatever folder run.json names (the folder may have been
    moved); refused when resuming it would run what the folder names (a command, an adapter's code)."""
    saved = record.read_run(out_dir)
    if saved is None:
        raise EvalkitError(f"{out_dir} holds no evalkit run to resume (no {record.RUN})")
    config = dataclasses.replace(_config_from_dict(saved["config"]), out_dir=out_dir)
    why = _runs_code(config)
    if why:
        raise EvalkitError(f"{out_dir}: --resume does not run what a run folder names, and {why}; if you trust it, "
                           f"finish it with the full command: evalkit run --suite SUITE --out {out_dir} "
                           f"{'--adapter ' + config.adapter + ' ' if config.adapter else ''}MODEL")
    return config


def rescore(source: Path, add: tuple[str, ...] = (), metrics: tuple[str, ...] | None = None,
            out_dir: Path | None = None, reference_run: str | None = None, tracking_uri: str | None = None,
            experiment: str | None = None, tags: Mapping[str, str] | None = None, workers: int | None = None,
            progress: pipeline.Progress | None = None,
            metric_options: Mapping[str, Mapping[str, str]] | None = None) -> RunResult:
    """Score a finished run's saved clips again, with `metrics` or with its own metrics plus `add`,
    into a new run folder: nothing is synthesized (the checkpoint need not exist any more) and
    the caches give back every transcript and value already computed, so only what is new runs.
    The run's own metric options are kept for the metrics it keeps; `metric_options` add to them
    (and win, key by key)."""
    summary, _ = record.load(source)
    saved = record.read_run(source)
    if saved is None:
        raise EvalkitError(f"{source} holds no {record.RUN}: not an evalkit run folder")
    base = _config_from_dict(saved["config"])
    names = tuple(metrics) if metrics else (*summary.metrics, *(a for a in add if a not in summary.metrics))
    options = {n: dict(o) for n, o in base.metric_options.items() if n in names}
    for n, o in (metric_options or {}).items():
        options[n] = {**options.get(n, {}), **o}
    config = dataclasses.replace(
        base, metrics=names, audio_from=str(source), workers=workers, metric_options=options,
        out_dir=out_dir or source.with_name(f"{source.name}-rescored-{datetime.now():%Y%m%d-%H%M%S}"),
        reference_run=reference_run or base.reference_run, tracking_uri=tracking_uri or base.tracking_uri,
        experiment=experiment or base.experiment, tags={**base.tags, **(tags or {})})
    return run(config, progress)


def _recorded(folder: Path, suite) -> tuple[pipeline.Recorded, record.RunRecord]:
    summary, rows = record.load(folder)
    if summary.suite.digest != suite.digest:
        raise EvalkitError(f"{folder} was evaluated on another version of suite {suite.name} (its digest "
                           f"differs): evaluate the model again instead of re-scoring")
    for row in rows:  # a row edited to name a file outside the run is refused before anything is read
        if not row.failure:
            pipeline.recorded_audio(folder, row)
    return pipeline.Recorded(folder, {r.utterance_id: r for r in rows}), summary


class Interrupted(EvalkitError):
    exit_code = 130


def _config_dict(config: RunConfig) -> dict:
    d = dataclasses.asdict(config)
    d["out_dir"] = str(config.out_dir) if config.out_dir else None
    d["metrics"] = list(config.metrics) if config.metrics is not None else None
    d["tags"] = dict(config.tags)
    d["metric_options"] = {n: dict(o) for n, o in config.metric_options.items()}
    if not d["metric_options"]:
        # Left out when there are none: the file then reads as one written before the field
        # existed, so an unfinished run from then still resumes as the same configuration.
        del d["metric_options"]
    if d["step"] is None:  # likewise
        del d["step"]
    d["asr_options"] = dict(config.asr_options)
    if not d["asr_options"]:  # likewise
        del d["asr_options"]
    if not d["seed"]:  # likewise
        del d["seed"]
    return d


def _config_from_dict(d: dict) -> RunConfig:
    if not isinstance(d, dict):
        raise EvalkitError(f"{record.RUN}: its config is not a mapping")
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    d = {k: v for k, v in d.items() if k in fields}
    d["out_dir"] = Path(d["out_dir"]) if d.get("out_dir") else None
    d["metrics"] = tuple(d["metrics"]) if d.get("metrics") is not None else None
    options = d.get("metric_options") or {}
    if not (isinstance(options, dict) and all(isinstance(o, dict) and all(isinstance(v, str) for v in o.values())
                                              for o in options.values())):
        raise EvalkitError(f"{record.RUN}: metric_options must map metric names to {{key: text}}")
    d["metric_options"] = {str(n): dict(o) for n, o in options.items()}
    asr_options = d.get("asr_options") or {}
    if not (isinstance(asr_options, dict) and all(isinstance(v, str) for v in asr_options.values())):
        raise EvalkitError(f"{record.RUN}: asr_options must map names to text")
    d["asr_options"] = {str(k): v for k, v in asr_options.items()}
    try:
        return RunConfig(**d)
    except TypeError as exc:
        raise EvalkitError(f"{record.RUN}: not an evalkit run configuration ({exc})") from None


def _resumable_rows(out_dir: Path, config: RunConfig, suite) -> list:
    """Rows an unfinished run of this same configuration already holds in out_dir."""
    if (out_dir / record.SUMMARY).exists():
        raise EvalkitError(f"{out_dir} already holds a finished run; choose another --out")
    saved = record.read_run(out_dir)
    if saved is None:
        return []
    if saved.get("suite_digest") != suite.digest or _comparable(saved["config"]) != _comparable(_config_dict(config)):
        raise EvalkitError(f"{out_dir} holds an unfinished run with another configuration; "
                           f"resume it with: evalkit run --resume {out_dir}, or choose another --out")
    return record.read_progress(out_dir)


def _comparable(config: dict) -> dict:
    # Where the run is written and logged, and how many processes score it, do not change its rows.
    # The step labels the checkpoint; it changes no row either.
    return {k: v for k, v in config.items()
            if k not in ("out_dir", "tracking_uri", "experiment", "tags", "workers", "step")}


def _preflight(uri: str) -> EvalkitError | None:
    """An unreachable server is known before the work starts, but the work is still done and kept."""
    try:
        tracking.check_reachable(uri)
    except EvalkitError as exc:
        return exc
    return None


def _prepare_out(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise EvalkitError(f"output folder {out_dir} is not writable ({exc.strerror or exc})") from None


def _summary(config, suite, adapter_name, model_info, asr_info, metrics, device, rows, started, finished,
             uri, experiment, refs, extra_tags, cache, resumed, broken) -> record.RunRecord:
    run_id = uuid.uuid4().hex
    metric_info = {m.name: record.MetricInfo(
        version=m.version, sample_rate=m.sample_rate, higher_is_better=dict(m.higher_is_better),
        options=dict(m.options), counts=tuple(m.counts), corpus=dict(m.corpus), alignments=tuple(m.alignments),
        headline=m.headline) for m in metrics}
    reference = _reference_info(refs)
    params = {
        "suite": suite.name,
        "suite_version": suite.version,
        "suite_utterances": len(suite.utterances),
        "limit": config.limit,
        "model": config.model,
        "adapter": adapter_name,
        "asr": config.asr if asr_info else "none",
        "asr_options": asr_info.get("options", ""),
        "metrics": ",".join(metric_info),
        "device": device,
        "textnorm_version": textnorm.VERSION,
        "reference": reference.label,
        **({"step": config.step} if config.step is not None else {}),
        **({"seed": config.seed} if config.seed else {}),
        **{f"metric.{n}.version": i.version for n, i in metric_info.items()},
        **{f"metric.{n}.options": json.dumps(i.options, sort_keys=True) for n, i in metric_info.items() if i.options},
    }
    tags = {
        "evalkit.run_id": run_id,
        "evalkit.version": __version__,
        "evalkit.git_sha": _git_sha(),
        "evalkit.suite": suite.name,
        "evalkit.suite_digest": suite.digest,
        "evalkit.model": config.model,
        "evalkit.model_sha256": model_info.get("model_sha256", ""),
        "evalkit.adapter": adapter_name,
        "evalkit.asr_engine": asr_info.get("engine", "none"),
        "evalkit.asr_model": asr_info.get("model", "none"),
        "evalkit.asr_model_sha256": asr_info.get("model_sha256", ""),
        "evalkit.asr_settings_digest": asr_info.get("settings_digest", ""),
        "evalkit.textnorm_version": textnorm.VERSION,
        "evalkit.reference": reference.label,
        "evalkit.reference_digest": reference.digest,
        **({"evalkit.step": str(config.step)} if config.step is not None else {}),
        # What `evalkit runs` shows per run without downloading its summary.
        "evalkit.headlines": ",".join(i.headline for i in metric_info.values() if i.headline),
        **extra_tags,
        **dict(config.tags),
    }
    return record.RunRecord(
        run_id=run_id,
        run_name=f"{suite.name}:{Path(config.model).name}",
        evalkit_version=__version__,
        started_unix=started,
        finished_unix=finished,
        suite=record.SuiteInfo(suite.name, suite.version, suite.language, suite.digest, suite.source,
                               len(suite.utterances)),
        model=model_info,
        adapter=adapter_name,
        asr=asr_info,
        metrics=metric_info,
        params=params,
        tags=tags,
        aggregates=aggregate_mod.aggregate(rows, metrics),
        by_tag=aggregate_mod.by_tag(rows, metrics),
        step=config.step,
        tracking=record.TrackingInfo(uri, experiment, None),
        reference=reference,
        cache=cache,
        resumed_utterances=resumed,
        broken_stages=tuple(broken),
    )


def _reference_info(refs) -> record.ReferenceInfo:
    if refs is None:
        return record.ReferenceInfo()
    return record.ReferenceInfo(refs.kind, refs.location, refs.digest)


def _git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
