"""The `evalkit` command. Everything here is presentation; the work lives in runner/pipeline."""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from . import __version__, allocator, plugins, record, trace, tracking
from . import progress as progress_mod
from . import suite as suite_mod
from .console import err, out
from .errors import EvalkitError, StageFailed, Terminated, TrackingError, first_line

app = typer.Typer(help="Evaluate TTS checkpoints with robust automatic metrics, tracked in MLflow.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
suites_app = typer.Typer(help="List built-in suites, or show one.", invoke_without_command=True)
app.add_typer(suites_app, name="suites")
asr_app = typer.Typer(help="ASR engines and the models they can load offline.", no_args_is_help=True)
app.add_typer(asr_app, name="asr")


def _key_values(items: list[str], flag: str, empty_value: bool) -> dict[str, str]:
    """KEY=VALUE options as a mapping; `empty_value`: KEY= is allowed (a tag may be empty, a
    setting may not)."""
    parsed = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k.strip() or not (v or empty_value):
            raise EvalkitError(f"{flag} expects KEY=VALUE, got {item!r}")
        parsed[k.strip()] = v
    return parsed


def _parse_tags(tags: list[str]) -> dict[str, str]:
    return _key_values(tags, "--tag", empty_value=True)


# Where the evaluations of `run` and `sweep` happen (the same options on both).
ExecutorOption = Annotated[str, typer.Option(
    help="Where the evaluation runs: local (this process) or ray (actors on a Ray cluster; pip install "
         "'evalkit-tts[ray]'). Never changes a value.", metavar="local|ray")]
RayAddressOption = Annotated[str | None, typer.Option(
    help="With --executor ray: the cluster's HOST:PORT; default: a local Ray instance for this command.",
    metavar="ADDRESS")]
RayGpusOption = Annotated[float | None, typer.Option(
    help="With --executor ray: GPUs each actor holds (default: 1 with --device cuda, else none).", metavar="N")]


@app.command()
def run(
    model: str | None = typer.Argument(
        None, help="What to evaluate: a checkpoint, espeak:VOICE, piper:joe, a Piper .onnx voice, cmd:..., "
                   "http://..., a folder of wavs (see `evalkit adapters`).", metavar="MODEL"),
    suite: str | None = typer.Option(None, "--suite", "-s",
                                        help="Built-in suite name (see `evalkit suites`) or a suite folder.",
                                        metavar="NAME|PATH"),
    adapter: str | None = typer.Option(None, help="Adapter name or pkg.mod:Name; default: the first that claims MODEL.",
                                          metavar="NAME|pkg.mod:Name"),
    asr: str = typer.Option("faster-whisper:base", help="ASR as ENGINE[:MODEL].", metavar="ENGINE[:MODEL]"),
    metrics: str | None = typer.Option(None, help="Comma-separated metric names; default: all reference-free ones.",
                                          metavar="A,B,..."),
    device: str = typer.Option("auto", help="auto, cpu or cuda.", metavar="auto|cpu|cuda"),
    tracking_uri: str | None = typer.Option(None, help="MLflow tracking URI; default: sqlite store in ./evalkit-runs.",
                                               metavar="URI"),
    experiment: str | None = typer.Option(None, help="MLflow experiment; default: evalkit-<suite>.", metavar="NAME"),
    out_dir: Path | None = typer.Option(None, "--out", help="Run folder; default: ./evalkit-runs/<time>-<suite>.",
                                           metavar="DIR"),
    limit: int | None = typer.Option(None, help="Evaluate only the first N utterances.", metavar="N"),
    tag: list[str] = typer.Option([], help="Extra MLflow tag KEY=VALUE (repeatable).", metavar="KEY=VALUE"),
    reference_run: str | None = typer.Option(
        None, help="Reference audio for reference-based metrics: a run folder, a folder of <id>.wav, "
                   "or an MLflow run id; default: the suite's own references.", metavar="RUN"),
    resume: Path | None = typer.Option(
        None, help="Finish the unfinished run in this folder, with the configuration it started with.",
        metavar="OUT_DIR"),
    workers: int | None = typer.Option(
        None, min=0, help="Metric worker processes beside the main one; default: one per core beyond "
                          "the first (at most 4); 0 scores everything in the main process. Never changes a value.",
        metavar="N"),
    metric_option: list[str] = typer.Option(
        [], help="A metric constructor setting NAME.KEY=VALUE (repeatable), e.g. f0.f0_method=dio or "
                 "mel_dtw.dtw=fast; recorded in the run's params and cache keys.", metavar="NAME.KEY=VALUE"),
    step: int | None = typer.Option(
        None, min=0, help="The checkpoint's training step: recorded (param step, tag evalkit.step) and used as "
                          "the MLflow step of every metric, so MLflow charts them over training.", metavar="N"),
    asr_option: list[str] = typer.Option(
        [], help="An ASR decoding setting KEY=VALUE (repeatable; part of the ASR settings digest), e.g. "
                 "prompt=hangul-numbers: Whisper's initial prompt asks for numbers in Hangul.", metavar="KEY=VALUE"),
    allow_download: bool = typer.Option(
        False, "--allow-download",
        help="Let --asr and an hf: MODEL download a model that is not in the local caches (sets "
             "EVALKIT_ALLOW_DOWNLOAD=1); without it evalkit never downloads."),
    trace_file: Path | None = typer.Option(
        None, "--trace", envvar="EVALKIT_TRACE",
        help="Write a Chrome/Perfetto trace of every stage (per chunk, thread and worker process) to this "
             "file; open it in ui.perfetto.dev or chrome://tracing. Also $EVALKIT_TRACE (with --executor ray: "
             "this process only).", metavar="FILE"),
    executor: ExecutorOption = "local",
    ray_address: RayAddressOption = None,
    ray_gpus_per_actor: RayGpusOption = None,
) -> None:
    """Synthesize a suite with MODEL, transcribe, score, and log one MLflow run.

    Re-running the same command with the same --out resumes an interrupted run. With --executor
    ray the suite's utterances are evaluated in shards on a Ray cluster, into the same one run."""
    if trace_file is not None:  # first, so a bad path fails before any work; main() writes the file
        trace.start(trace_file, startup=True)
    with trace.span("import evalkit.runner and what it imports", "startup"):
        from .metric_loading import parse_options as parse_metric_options
        from .runner import RunConfig, RunResult, resume_config
        from .runner import run as run_eval

    if allow_download:
        _allow_download()
    if executor not in ("local", "ray"):
        raise EvalkitError(f"--executor must be local or ray, got {executor!r}")
    if executor == "local" and (ray_address or ray_gpus_per_actor is not None):
        raise EvalkitError("--ray-address and --ray-gpus-per-actor need --executor ray")

    def evaluate(config: RunConfig, p: progress_mod.Progress) -> RunResult:
        if executor == "local":
            return run_eval(config, p)
        from .run_ray import run as run_on_ray  # ray itself is imported there, only now

        return run_on_ray(config, ray_address, ray_gpus_per_actor, p, _say)

    if resume is not None:
        if model or suite:
            raise EvalkitError("--resume takes its suite and model from the run folder: give neither")
        # Everything else comes from the folder too: an option given here would be silently ignored.
        given = [flag for flag, value, default in (
            ("--adapter", adapter, None), ("--asr", asr, "faster-whisper:base"), ("--metrics", metrics, None),
            ("--device", device, "auto"), ("--tracking-uri", tracking_uri, None), ("--experiment", experiment, None),
            ("--out", out_dir, None), ("--limit", limit, None), ("--tag", tag, []),
            ("--reference-run", reference_run, None), ("--workers", workers, None),
            ("--metric-option", metric_option, []), ("--step", step, None), ("--asr-option", asr_option, []))
            if value != default]
        if given:
            raise EvalkitError(f"--resume finishes the run with the configuration it started with: drop "
                               f"{', '.join(given)} (or start a new run with them)")
        with _progress() as p:
            result = evaluate(resume_config(resume), p)
        _report(result)
        return
    if not model or not suite:
        raise EvalkitError("evalkit run needs --suite NAME and a MODEL (or --resume OUT_DIR)")

    config = RunConfig(
        suite=suite, model=model, adapter=adapter, asr=asr,
        metrics=tuple(m.strip() for m in metrics.split(",") if m.strip()) if metrics else None,
        device=device, limit=limit, out_dir=out_dir, tracking_uri=tracking_uri,
        experiment=experiment, tags=_parse_tags(tag), reference_run=reference_run, workers=workers,
        metric_options=parse_metric_options(metric_option), step=step, asr_options=_parse_asr_options(asr_option),
    )
    with _progress() as p:
        result = evaluate(config, p)
    _report(result)


@app.command()
def rescore(
    run_dir: Path = typer.Argument(..., help="A finished run folder (holding summary.json and audio/).",
                                   metavar="RUN_DIR"),
    add: list[str] = typer.Option([], help="A metric to add to the run's own (repeatable).", metavar="METRIC"),
    metrics: str | None = typer.Option(None, help="Comma-separated metrics replacing the run's own.",
                                          metavar="A,B,..."),
    reference_run: str | None = typer.Option(None, help="Reference audio, as for `evalkit run`; default: the run's.",
                                                metavar="RUN"),
    out_dir: Path | None = typer.Option(None, "--out", help="New run folder; default: RUN_DIR-rescored-<time>.",
                                           metavar="DIR"),
    tracking_uri: str | None = typer.Option(None, help="MLflow tracking URI; default: the run's.", metavar="URI"),
    experiment: str | None = typer.Option(None, help="MLflow experiment; default: the run's.", metavar="NAME"),
    tag: list[str] = typer.Option([], help="Extra MLflow tag KEY=VALUE (repeatable).", metavar="KEY=VALUE"),
    workers: int | None = typer.Option(None, min=0, help="Metric worker processes, as for `evalkit run`.",
                                          metavar="N"),
    metric_option: list[str] = typer.Option(
        [], help="A metric setting NAME.KEY=VALUE, as for `evalkit run` (repeatable); the run's own options are "
                 "kept for the metrics it keeps.", metavar="NAME.KEY=VALUE"),
    allow_download: bool = typer.Option(
        False, "--allow-download",
        help="Let --asr and an hf: MODEL download a model that is not in the local caches (sets "
             "EVALKIT_ALLOW_DOWNLOAD=1); without it evalkit never downloads."),
) -> None:
    """Score a finished run's saved audio again, with more or other metrics, as a new run.

    Nothing is synthesized and cached transcripts and values are reused: adding one metric
    computes only that metric."""
    from .metric_loading import parse_options as parse_metric_options
    from .runner import rescore as rescore_eval

    if allow_download:
        _allow_download()
    if not add and not metrics:
        raise EvalkitError("evalkit rescore needs --add METRIC or --metrics LIST")
    with _progress() as p:
        result = rescore_eval(
            run_dir, add=tuple(a.strip() for a in add if a.strip()),
            metrics=tuple(m.strip() for m in metrics.split(",") if m.strip()) if metrics else None,
            out_dir=out_dir, reference_run=reference_run, tracking_uri=tracking_uri, experiment=experiment,
            tags=_parse_tags(tag), workers=workers, progress=p,
            metric_options=parse_metric_options(metric_option))
    _report(result)


@app.command()
def sweep(
    models: list[str] = typer.Argument(
        None, help="Checkpoint files, folders of checkpoints, globs (quote them), or any MODEL `evalkit run` takes.",
        metavar="MODEL..."),
    suite: list[str] = typer.Option([], "--suite", "-s", help="A suite name or folder (repeatable).",
                                    metavar="NAME|PATH"),
    steps: str | None = typer.Option(None, help="The training step of each MODEL, in the same order; default: each "
                                               "checkpoint's global_step/step/epoch, its sidecar, or the last number "
                                               "in its file name.", metavar="N,N,..."),
    name: str | None = typer.Option(None, help="The sweep's name: its parent MLflow run is found again by it, so a "
                                              "re-run adds to the same curves; default: the checkpoints' folder.",
                                    metavar="NAME"),
    out_dir: Path | None = typer.Option(None, "--out", help="Sweep folder (sweep.json, a run folder per checkpoint "
                                                          "and suite, the report); default: "
                                                          "./evalkit-runs/sweep-NAME-<time>.",
                                        metavar="DIR"),
    watch: bool = typer.Option(False, help="Keep polling the folders/globs and evaluate each new checkpoint once it "
                                           "is completely written, until Ctrl-C, --until or --max-checkpoints."),
    poll: float = typer.Option(30.0, min=0.1, help="Seconds between polls with --watch.", metavar="S"),
    until: int | None = typer.Option(None, min=0, help="Stop after evaluating a checkpoint at this step or later.",
                                     metavar="STEP"),
    max_checkpoints: int | None = typer.Option(None, min=1, help="Stop after evaluating this many new checkpoints.",
                                               metavar="K"),
    adapter: str | None = typer.Option(None, help="Adapter for every MODEL, as for `evalkit run`.",
                                       metavar="NAME|pkg.mod:Name"),
    asr: str = typer.Option("faster-whisper:base", help="ASR as ENGINE[:MODEL].", metavar="ENGINE[:MODEL]"),
    metrics: str | None = typer.Option(None, help="Comma-separated metric names; default: all reference-free ones.",
                                       metavar="A,B,..."),
    device: str = typer.Option("auto", help="auto, cpu or cuda.", metavar="auto|cpu|cuda"),
    tracking_uri: str | None = typer.Option(None, help="MLflow tracking URI; default: sqlite store in ./evalkit-runs.",
                                            metavar="URI"),
    experiment: str | None = typer.Option(None, help="MLflow experiment; default: evalkit-<suite> (one suite) or "
                                                     "evalkit-sweeps.", metavar="NAME"),
    limit: int | None = typer.Option(None, help="Evaluate only the first N utterances of each suite.", metavar="N"),
    tag: list[str] = typer.Option([], help="Extra MLflow tag KEY=VALUE on every run (repeatable).",
                                  metavar="KEY=VALUE"),
    reference_run: str | None = typer.Option(None, help="Reference audio, as for `evalkit run`.", metavar="RUN"),
    workers: int | None = typer.Option(None, min=0, help="Metric worker processes, as for `evalkit run`.",
                                       metavar="N"),
    metric_option: list[str] = typer.Option([], help="A metric setting NAME.KEY=VALUE, as for `evalkit run`.",
                                            metavar="NAME.KEY=VALUE"),
    asr_option: list[str] = typer.Option(
        [], help="An ASR decoding setting KEY=VALUE (repeatable; part of the ASR settings digest), e.g. "
                 "prompt=hangul-numbers: Whisper's initial prompt asks for numbers in Hangul.", metavar="KEY=VALUE"),
    allow_download: bool = typer.Option(
        False, "--allow-download",
        help="Let --asr and an hf: MODEL download a model that is not in the local caches (sets "
             "EVALKIT_ALLOW_DOWNLOAD=1); without it evalkit never downloads."),
    executor: ExecutorOption = "local",
    ray_address: RayAddressOption = None,
    ray_gpus_per_actor: RayGpusOption = None,
    trace_file: Path | None = typer.Option(
        None, "--trace", envvar="EVALKIT_TRACE",
        help="Write a Chrome/Perfetto trace of every stage of every evaluation to this file (with --executor ray: "
             "this process only); open it in ui.perfetto.dev or chrome://tracing. Also $EVALKIT_TRACE.",
        metavar="FILE"),
) -> None:
    """Evaluate every checkpoint of a training run on one or more suites, as curves over the step.

    Each (checkpoint, suite) is one MLflow run, a child of the sweep's parent run, which holds every
    aggregate at MLflow step = training step (`SUITE/cer/mean`, ...). Whisper and the metrics load
    once. A (checkpoint, suite, settings) already evaluated in the experiment is skipped."""
    if trace_file is not None:  # first, so a bad path fails before any work; main() writes the file
        trace.start(trace_file, startup=True)
    with trace.span("import evalkit.runner, evalkit.sweep and what they import", "startup"):
        from .metric_loading import parse_options as parse_metric_options
        from .runner import RunConfig
        from .sweep import SweepConfig
        from .sweep import sweep as run_sweep

    if allow_download:
        _allow_download()
    if not suite:
        raise EvalkitError("evalkit sweep needs at least one --suite NAME")
    if not models:
        raise EvalkitError("evalkit sweep needs at least one MODEL: checkpoint files, a folder or a glob")
    try:
        parsed_steps = tuple(int(s) for s in steps.split(",")) if steps is not None else None
    except ValueError:
        raise EvalkitError(f"--steps expects whole numbers separated by commas, got {steps!r}") from None
    if parsed_steps is not None and any(s < 0 for s in parsed_steps):
        raise EvalkitError("--steps cannot be negative")
    run_config = RunConfig(
        suite="", model="", adapter=adapter, asr=asr,
        metrics=tuple(m.strip() for m in metrics.split(",") if m.strip()) if metrics else None,
        device=device, limit=limit, tracking_uri=tracking_uri, experiment=experiment, tags=_parse_tags(tag),
        reference_run=reference_run, workers=workers, metric_options=parse_metric_options(metric_option),
        asr_options=_parse_asr_options(asr_option))
    config = SweepConfig(suites=tuple(suite), models=tuple(models), run=run_config, steps=parsed_steps, name=name,
                         out_dir=out_dir, watch=watch, poll_s=poll, until=until, max_checkpoints=max_checkpoints,
                         executor=executor, ray_address=ray_address, ray_gpus_per_actor=ray_gpus_per_actor)
    result = run_sweep(config, _progress, _say)
    _report_sweep(result)


def _say(line: str) -> None:
    """A line of news on stderr (a sweep's checkpoint, a Ray cluster's actors), printed as it is."""
    err.print(line, markup=False, highlight=False, soft_wrap=True)


def _report_sweep(result) -> None:
    from .sweep import Entry

    table = Table(title=Text(f"sweep · {result.out_dir}"))
    for col in ("step", "checkpoint", "suite", "status", "headline", "failures"):
        table.add_column(col, justify="right" if col in ("step", "failures") else "left")
    entry: Entry
    for entry in sorted(result.entries, key=lambda e: (e.suite, e.step)):
        headline, failures = "", ""
        if entry.status == "done" and entry.run_dir:
            try:
                summary = record.load_summary(result.out_dir / entry.run_dir)
                headline = tracking.description(summary).split(": ", 1)[-1].split(";")[0]
                failures = _count(summary.aggregates.get("failures/count"))
            except EvalkitError:
                pass
        table.add_row(str(entry.step), Text(Path(entry.model).name), Text(entry.suite), entry.status,
                      Text(headline or (entry.reason or "")[:80]), failures)
    out.print(table)
    out.print(f"sweep folder: {result.out_dir}", markup=False, highlight=False)
    if result.report:
        out.print(f"report: {result.report[0]} and {result.report[1]}", markup=False, highlight=False)
    if result.parent_run_id:
        out.print(f"MLflow parent run {result.parent_run_id}: open it for every metric over the training step",
                  markup=False, highlight=False)
    # The last problem decides the exit code, as for `evalkit run`: a failed upload (3) < a
    # checkpoint or stage that measured nothing (4) < nothing could be evaluated at all (2).
    problems: list[EvalkitError] = []
    if result.tracking_error:
        problems.append(TrackingError(f"{result.tracking_error}; every result is kept in {result.out_dir} (upload "
                                      "each run folder with: evalkit sync RUN_DIR)"))
    broken = [e for e in result.entries if e.broken]
    if broken:
        problems.append(StageFailed(f"step {broken[0].step} on {broken[0].suite}: a stage failed on every utterance: "
                                    + "; ".join(broken[0].broken)))
    failed = result.failed
    if failed and len(failed) == len(result.entries):
        problems.append(EvalkitError(f"no checkpoint could be evaluated; the first: {Path(failed[0].model).name}: "
                                     f"{failed[0].reason}"))
    elif failed:
        problems.append(StageFailed(f"{len(failed)} of {len(result.entries)} checkpoint evaluations failed (recorded "
                                    f"in {result.out_dir / 'sweep.json'}); the first: {Path(failed[0].model).name}: "
                                    f"{failed[0].reason}"))
    for extra in problems[:-1]:
        err.print(f"error: {extra}", markup=False, highlight=False, soft_wrap=True)
    if problems:
        raise problems[-1]


def _parse_asr_options(options: list[str]) -> dict[str, str]:
    return _key_values(options, "--asr-option", empty_value=False)


def _allow_download() -> None:
    from .asr import ALLOW_DOWNLOAD_ENV

    os.environ[ALLOW_DOWNLOAD_ENV] = "1"


@contextmanager
def _progress() -> Iterator[progress_mod.Progress]:
    """Bars on a terminal; elsewhere (CI logs, pipes) a plain line every 10 s, so a nightly's log
    shows the run is alive. EVALKIT_PROGRESS=bars|lines|off chooses."""
    mode = os.environ.get("EVALKIT_PROGRESS", "").strip().lower() or ("bars" if err.is_terminal else "lines")
    if mode == "off":
        yield progress_mod.Progress()
    elif mode == "lines":
        yield progress_mod.Lines.to(sys.stderr)
    else:
        columns = (TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), TextColumn("{task.fields[doing]}", markup=False))
        with Progress(*columns, console=err, transient=False) as bars:
            yield progress_mod.Bars(bars)


SHOWN_FAILURES = 5


def _report(result) -> None:
    _print_summary(result.summary)
    _print_reuse(result.summary)
    _print_failures(result.rows)
    out.print(f"run folder: {result.out_dir}", markup=False, highlight=False)
    problems: list[EvalkitError] = []
    if result.tracking_error:
        problems.append(TrackingError(f"{result.tracking_error}; all results are kept in {result.out_dir} "
                                      f"(upload them later with: evalkit sync {result.out_dir})"))
    else:
        t = result.summary.tracking
        out.print(f"MLflow run {t.run_id} in experiment {t.experiment!r} at {t.uri}",
                  markup=False, highlight=False)
    if result.broken:
        # A stage that failed on every utterance measured nothing: no exit code may read as a pass.
        problems.append(StageFailed("a stage failed on every utterance, so the run measured nothing with it: "
                                    + "; ".join(result.broken) + f" (the run is saved in {result.out_dir})"))
    for extra in problems[:-1]:
        err.print(f"error: {extra}", markup=False, highlight=False, soft_wrap=True)
    if problems:
        raise problems[-1]


def _print_summary(summary: record.RunRecord) -> None:
    agg = summary.aggregates
    # Suite and model names come from other people: Text, never markup ("[/bold]" must print as is).
    table = Table(title=Text(f"{summary.suite.name} · {summary.model_name}"))
    stats = ("mean", "median", "p90", "corpus")
    for col in ("metric", *stats):
        table.add_column(col, justify="left" if col == "metric" else "right")
    keys = sorted({k.rsplit("/", 1)[0] for k in agg if k.endswith("/mean")})
    for k in keys:
        table.add_row(Text(k), *(_fmt(agg.get(f"{k}/{a}")) for a in stats))
    table.add_row("failures", _count(agg.get("failures/count")), "", "", "")
    table.add_row("utterances", _count(agg.get("utterances/count")), "", "", "")
    out.print(table)


def _print_by_tag(summary: record.RunRecord) -> None:
    """One row per suite tag: its size, failures and each metric's headline key (mean, and the
    corpus rate where the metric has one), so the phenomenon that moved is found at a glance."""
    keys = [m.headline for m in summary.metrics.values() if m.headline is not None]
    table = Table(title=Text(f"{summary.suite.name} · {summary.model_name} · by tag"))
    table.add_column("tag")
    for col in ("utterances", "failures"):
        table.add_column(col, justify="right")
    shown = []
    for k in keys:
        for stat in ("mean", "corpus"):
            if any(f"{k}/{stat}" in agg for agg in (summary.aggregates, *summary.by_tag.values())):
                shown.append(f"{k}/{stat}")
                table.add_column(Text(f"{k} {stat}"), justify="right")
    # Beside CER, the share of utterances whose number readings the transcript could not show
    # (digits in it): a low numbers-tag CER built on those proves nothing.
    if any("reading_unverified/mean" in agg for agg in (summary.aggregates, *summary.by_tag.values())):
        shown.append("reading_unverified/mean")
        table.add_column("unverified", justify="right")
    for tag, agg in [("(all)", summary.aggregates), *summary.by_tag.items()]:
        table.add_row(Text(tag), _count(agg.get("utterances/count")), _count(agg.get("failures/count")),
                      *(_fmt(agg.get(k)) for k in shown))
    out.print(table)


def _print_reuse(summary: record.RunRecord) -> None:
    """What the caches and a resumed run's saved rows gave back: a fast run is explained."""
    c = summary.cache
    parts = []
    for what, hit, miss in (("transcripts", "transcripts_cached", "transcripts_computed"),
                            ("metric values", "scores_cached", "scores_computed")):
        done = c.get(hit, 0) + c.get(miss, 0)
        if done:
            parts.append(f"{c.get(hit, 0)} of {done} {what}")
    line = f"from the cache: {', '.join(parts)}" if parts else ""
    if summary.resumed_utterances:
        line += ("; " if line else "") + f"{summary.resumed_utterances} utterances resumed from an earlier attempt"
    if line:
        out.print(line, markup=False, highlight=False)


def _print_failures(rows) -> None:
    """The first few reasons, with their utterance ids: a count alone sends people to the CSV."""
    found = [(r.utterance_id, reason) for r in rows
             for reason in ([r.failure] if r.failure else [n for n in r.notes if " failed: " in n])]
    if not found:
        return
    out.print(f"{len(found)} failure(s); the first {min(len(found), SHOWN_FAILURES)}:", markup=False, highlight=False)
    for uid, reason in found[:SHOWN_FAILURES]:
        out.print(f"  {uid}: {reason}", markup=False, highlight=False, soft_wrap=True)


def _count(v) -> str:
    return "" if v is None else str(int(v))


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.0f}" if float(v).is_integer() and abs(v) >= 1 else f"{v:.4f}"


@suites_app.callback()
def suites(ctx: typer.Context) -> None:
    """List the built-in suites."""
    if ctx.invoked_subcommand is not None:
        return
    table = Table()
    for col in ("name", "version", "language", "utterances", "description"):
        table.add_column(col)
    for name in suite_mod.builtin_names():
        s = suite_mod.load(name)
        table.add_row(Text(s.name), Text(s.version), s.language, str(len(s.utterances)), Text(s.description[:80]))
    out.print(table)


@suites_app.command("show")
def suites_show(name: str = typer.Argument(..., help="Suite name or folder.", metavar="NAME")) -> None:
    """Show a suite's header, digest, tag counts and first utterances."""
    s = suite_mod.load(name)
    out.print(Text(s.name, style="bold") + Text(f" v{s.version} ({s.language}), {len(s.utterances)} utterances"))
    out.print(f"digest: {s.digest}", markup=False, highlight=False)
    out.print(f"source: {s.source}", markup=False, highlight=False)
    out.print(s.description, markup=False, highlight=False)
    counts: dict[str, int] = {}
    for u in s.utterances:
        for t in u.tags:
            counts[t] = counts.get(t, 0) + 1
    if counts:
        out.print("tags: " + ", ".join(f"{t} {n}" for t, n in sorted(counts.items(), key=lambda x: -x[1])),
                  markup=False, highlight=False)
    table = Table()
    table.add_column("id")
    table.add_column("text")
    table.add_column("tags")
    for u in s.utterances:
        table.add_row(u.id, Text(u.text), Text(",".join(u.tags)))
    out.print(table)


@app.command()
def adapters() -> None:
    """List installed TTS adapters (entry point group evalkit.adapters), in resolution order."""
    from .adapters import DEFAULT_PRIORITY, ordered

    table = Table()
    for col in ("priority", "name", "package", "loads"):
        table.add_column(col)
    for name, cls, dist in ordered():
        # The module docstring's first paragraph, whole (its first line alone stops mid-sentence),
        # as plain text: backticks are Markdown, not terminal output.
        doc = " ".join((sys.modules[cls.__module__].__doc__ or "").strip().split("\n\n")[0].split())
        table.add_row(str(getattr(cls, "priority", DEFAULT_PRIORITY)), Text(name), Text(dist),
                      Text(doc.replace("`", "")))
    for name, problem in plugins.unavailable(plugins.ADAPTERS).items():
        table.add_row("-", Text(name), "", Text(f"not available: {problem}"))
    out.print(table)


@app.command()
def sync(out_dir: Path = typer.Argument(..., help="A run folder whose MLflow upload failed.", metavar="OUT_DIR"),
         tracking_uri: str | None = typer.Option(None, help="MLflow tracking URI; default: the one the run used.",
                                                    metavar="URI"),
         experiment: str | None = typer.Option(None, help="MLflow experiment; default: the one the run used.",
                                                  metavar="NAME")) -> None:
    """Upload a finished local run folder to MLflow (once per store: repeating it logs nothing new)."""
    summary, _ = record.load(out_dir)
    t = summary.tracking
    if t.run_id and not tracking_uri:
        out.print(f"{out_dir} is already logged as MLflow run {t.run_id} at {t.uri}", markup=False, highlight=False)
        return
    uri = tracking.adopt_credentials(tracking_uri) if tracking_uri else (t.uri or tracking.default_uri())
    run_id = tracking.log_run(out_dir, uri, experiment or t.experiment or f"evalkit-{summary.suite.name}")
    out.print(f"MLflow run {run_id} at {uri}", markup=False, highlight=False)


@asr_app.command("list")
def asr_list() -> None:
    """List ASR engines and the models each can load offline (use as --asr ENGINE:MODEL)."""
    table = Table()
    for col in ("engine", "model", "source", "package"):
        table.add_column(col)
    for name, cls, dist in plugins.load_all(plugins.ASR):
        for model, source in getattr(cls, "available", lambda: [("?", "does not list its models")])():
            table.add_row(name, Text(model), Text(source), dist)
    for name, problem in plugins.unavailable(plugins.ASR).items():
        table.add_row(name, "-", Text(f"not available: {problem}"), "")
    out.print(table)


_ARROW = {True: "↑", False: "↓", None: "↕ (no direction)"}


@app.command()
def show(
    run: str = typer.Argument(..., help="A run folder, a run id (MLflow's or summary.json's), tag:NAME or "
                                        "latest:EXPERIMENT.", metavar="RUN"),
    by: str | None = typer.Option(None, "--by", help="tag: one row per suite tag as well.", metavar="tag"),
    tracking_uri: str | None = typer.Option(None, help="MLflow tracking URI for a run id; default: ./evalkit-runs.",
                                            metavar="URI"),
) -> None:
    """Print a finished run again: its aggregates, its first failures and, with --by tag, one row per tag."""
    from . import runs

    if by not in (None, "tag"):
        raise EvalkitError(f"--by takes 'tag', got {by!r}")
    loaded = runs.load_run(run, tracking.adopt_credentials(tracking_uri) if tracking_uri else None, with_audio=False)
    _print_summary(loaded.summary)
    if by == "tag":
        if not loaded.summary.by_tag:
            raise EvalkitError(f"{run}: this run has no per-tag aggregates (its suite has no tags, or it was "
                               "made before evalkit recorded them)")
        _print_by_tag(loaded.summary)
    _print_failures(loaded.rows)
    out.print(f"source: {loaded.source}", markup=False, highlight=False, soft_wrap=True)


@app.command("runs")
def runs_cmd(
    from_folder: Path | None = typer.Option(None, "--from", help="A folder of run folders instead of MLflow.",
                                            metavar="DIR"),
    tracking_uri: str | None = typer.Option(None, help="MLflow tracking URI; default: ./evalkit-runs.", metavar="URI"),
    experiment: str | None = typer.Option(None, help="Only this MLflow experiment; default: all.", metavar="NAME"),
    suite: str | None = typer.Option(None, help="Only runs of this suite.", metavar="NAME"),
    sort: str | None = typer.Option(None, help="Sort by a metric, ascending (cer/corpus) or descending "
                                               "(-dnsmos_ovrl/mean); default: by step, then time.", metavar="KEY"),
    fmt: str = typer.Option("table", "--format", help="table, csv, md or json.", metavar="FORMAT"),
) -> None:
    """List finished runs as a leaderboard: model, step, suite, key metrics (from MLflow, or --from a folder)."""
    from . import leaderboard
    from .untrusted import check_name

    if fmt not in leaderboard.FORMATS:
        raise EvalkitError(f"--format must be one of {', '.join(leaderboard.FORMATS)}, got {fmt!r}")
    if suite is not None:
        check_name(suite, "--suite")
    if from_folder is not None:
        entries = leaderboard.from_folder(from_folder, suite)
    else:
        uri = tracking.adopt_credentials(tracking_uri) if tracking_uri else tracking.default_uri()
        entries = leaderboard.from_mlflow(uri, experiment, suite)
    shown = leaderboard.render(leaderboard.ordered(entries, sort), fmt)
    if isinstance(shown, str):
        sys.stdout.write(shown)
        return
    header, *rows = shown
    table = Table()
    for i, col in enumerate(header):
        table.add_column(Text(col), justify="right" if 4 <= i < len(header) - 1 or i == 1 else "left")
    for row in rows:
        table.add_row(*(Text(c) for c in row))
    out.print(table)


@app.command("metrics")
def metrics_cmd() -> None:
    """List installed metrics (entry point group evalkit.metrics): values, needs, direction."""
    table = Table()
    for col in ("name", "values", "needs", "rate (Hz)", "version", "package"):
        table.add_column(col)
    for name, cls, dist in plugins.load_all(plugins.METRICS):
        needs = [n for n, flag in (("transcript", cls.needs_transcript), ("reference", cls.needs_reference)) if flag]
        shown = [k for k in cls.higher_is_better if k not in getattr(cls, "counts", ())]
        arrows = ", ".join(f"{k} {_ARROW[cls.higher_is_better[k]]}" for k in shown)
        table.add_row(name, arrows, ", ".join(needs) or "audio", str(cls.sample_rate), cls.version, dist)
    for name, problem in plugins.unavailable(plugins.METRICS).items():
        table.add_row(name, Text(f"not available: {problem}"), "", "", "", "")
    out.print(table)


from .cli_compare import register as _register_compare  # noqa: E402  (compare, report, baseline)
from .cli_human import register as _register_human  # noqa: E402  (correlate, calibrate)
from .cli_listen import register as _register_listen  # noqa: E402  (listen)

_register_compare(app)
_register_listen(app)
_register_human(app)


@app.callback(invoke_without_command=True)
def _root(version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    if version:
        out.print(__version__)
        raise typer.Exit()


def main() -> None:
    allocator.keep_freed_memory()  # before any model starts its threads
    signal.signal(signal.SIGTERM, _terminate)
    try:
        app(standalone_mode=False)
    except EvalkitError as exc:
        _debug(exc)
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except Terminated:
        err.print("terminated", markup=False)
        sys.exit(Terminated.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        sys.exit(130)
    except Exception as exc:  # the promise is one line, never a traceback
        usage = _click_error(exc)
        if usage is not None:  # typer ships its own copy of click: matched by shape, not by class
            if usage == "abort":
                sys.exit(130)
            # Exit 2 whatever click says: in a nightly, 1 means "regressed", and a typo is not one.
            where = getattr(getattr(exc, "ctx", None), "command_path", None) or "evalkit"
            message = exc.format_message()  # type: ignore[attr-defined]  # click's, matched by shape above
            err.print(f"error: {' '.join(message.split())} (see: {where} --help)",
                      markup=False, highlight=False, soft_wrap=True)
            sys.exit(2)
        _debug(exc)
        if os.environ.get("EVALKIT_DEBUG"):
            raise
        err.print(f"error: unexpected {first_line(exc, typed=True)} (set EVALKIT_DEBUG=1 for the traceback)",
                  markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)
    finally:
        _write_trace()


def entry() -> None:
    """The console script (and `python -m evalkit`): main(), then leave without the interpreter's
    teardown, once every file is written and closed. Tearing down the modules of MLflow, SciPy and
    the model runtimes takes a second or more on a small machine, after the work is done; the
    exit status is the same. In-process callers (the tests) call main() itself."""
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    leave(code)


def leave(code: int) -> NoReturn:
    """Exit now with `code`: atexit handlers run and the standard streams are flushed, the module
    teardown is skipped. A thread still running (one that is not a daemon) is waited for by the
    normal exit instead."""
    main_thread = threading.main_thread()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not main_thread):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe must not change the exit status
            stream.flush()
    os._exit(code)


def _write_trace() -> None:
    """--trace: the file is written however the command ended (an interrupted run's trace shows where
    it stopped). A trace that cannot be written is reported, and changes no exit code."""
    try:
        trace.stop()
    except OSError as exc:
        err.print(f"warning: the --trace file could not be written ({exc.strerror or exc})",
                  markup=False, highlight=False, soft_wrap=True)


def _terminate(signum, frame) -> None:
    # SIGTERM unwinds like Ctrl-C: finished rows stay saved, adapters and workers close, temp
    # folders go, and the message says how to resume. A second one while unwinding is ignored.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


def _click_error(exc: BaseException) -> str | None:
    names = {c.__name__ for c in type(exc).__mro__}
    if "Abort" in names:
        return "abort"
    if "ClickException" in names and hasattr(exc, "format_message"):
        return "usage"
    return None


def _debug(exc: BaseException) -> None:
    """EVALKIT_DEBUG=1: the whole chain, including what a one-line message was made from."""
    if not os.environ.get("EVALKIT_DEBUG"):
        return
    import traceback

    cause = exc.__cause__ or exc.__context__
    if cause is not None:
        traceback.print_exception(cause, file=sys.stderr)
    traceback.print_exception(exc, file=sys.stderr)
