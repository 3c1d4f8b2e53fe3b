"""`evalkit correlate` and `evalkit calibrate`: presentation only; the work lives in correlate
(ratings, statistics), correlate_report (files, MLflow) and calibrate (repeats, spreads, gates).

Exit codes: 0 done; 2 bad input (an EvalkitError, printed by cli.main on one line): a ratings file
without the required columns, a score that is not a number, a run that cannot be found, ratings that
name none of the runs given; 3 MLflow could not take the result (the local files are written);
4 calibrate: a stage failed on every utterance of a repeat.
"""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from . import runs, tracking
from .console import err, out
from .correlate_report import EXPERIMENT, estimate_text
from .correlate_report import fmt as cfmt
from .errors import EvalkitError, TrackingError
from .report import arrow

_RUN_HELP = ("The rated runs: run folders, run ids (MLflow's, or summary.json's run_id), tag:NAME or "
             "latest:EXPERIMENT.")


def register(app: typer.Typer) -> None:
    app.command("correlate")(correlate)
    app.command("calibrate")(calibrate)


def _without_credentials(uri: str | None) -> str | None:
    return tracking.adopt_credentials(uri) if uri else uri


def _line(text: str) -> None:
    out.print(text, markup=False, highlight=False, soft_wrap=True)


# --- correlate ---------------------------------------------------------------------------------


def correlate(
    run_specs: list[str] = typer.Argument(..., help=_RUN_HELP, metavar="RUN..."),
    ratings: Path = typer.Option(..., "--ratings", help="Ratings: a CSV with the columns run, utterance_id, score "
                                 "and optionally rater (one row per rating; `evalkit listen` exports it), or a "
                                 "listening sqlite database (.db).", metavar="FILE.csv|LISTEN.db"),
    by: str | None = typer.Option(None, "--by", help="tag: the same per suite tag as well.", metavar="tag"),
    out_dir: Path | None = typer.Option(None, "--out", help="Output folder; default: ./evalkit-correlate-<time>.",
                                        metavar="DIR"),
    experiment: str = typer.Option(EXPERIMENT, help="MLflow experiment of the correlation's own run.",
                                   metavar="NAME"),
    tracking_uri: str | None = typer.Option(None, help="MLflow tracking URI (run ids are looked up there, and the "
                                            "correlation is logged there); default: the one the first run was "
                                            "logged to, else ./evalkit-runs.", callback=_without_credentials,
                                            metavar="URI"),
) -> None:
    """Correlate metric values with human ratings of the same clips: per metric, utterance- and
    system-level Pearson, Spearman and Kendall with 95% bootstrap CIs over utterances, a ranking of
    the metrics that track the ratings best, and the metric-metric Spearman matrix. Writes
    index.html (scatter plots), summary.md and correlation.json, and logs them as an MLflow run."""
    from datetime import datetime

    from . import correlate as correlate_mod
    from . import correlate_report

    if by not in (None, "tag"):
        raise EvalkitError(f"--by takes 'tag', got {by!r}")
    rated = correlate_mod.read_ratings(ratings)  # a bad file fails before anything is downloaded
    loaded = [runs.load_run(spec, tracking_uri, with_audio=False) for spec in run_specs]
    result = correlate_mod.correlate(loaded, run_specs, rated, by_tag=by == "tag")
    _print_correlation(result)
    folder = out_dir or Path(f"evalkit-correlate-{datetime.now():%Y%m%d-%H%M%S}")
    index = correlate_report.write(folder, result)
    _line(f"report: {index}")
    _line(f"summary: {folder / 'summary.md'}")
    uri = tracking_uri or next((r.tracking_uri for r in result.runs if r.tracking_uri), None) or tracking.default_uri()
    try:
        run_id = correlate_report.log(result, folder, uri, experiment)
    except EvalkitError as exc:
        raise TrackingError(f"{exc}; the correlation is kept in {folder}") from None
    _line(f"logged to MLflow run {run_id} in experiment {experiment!r} at {tracking.redact(uri)}")


def _print_correlation(result) -> None:
    from .correlate import Section

    _line(f"ratings: {result.ratings_source}: {result.ratings} matched, {result.raters} rater(s), "
          f"{len(result.points)} (run, utterance) pairs")
    for r in result.runs:
        _line(f"  {r.label}: {r.ratings} ratings on {r.utterances} utterances, mean {cfmt(r.mean_score, False)} "
              f"({r.source})")
    for n in result.notes:
        _line(f"note: {n}")
    s: Section = result.overall
    table = Table(title="utterance level, ranked by |Spearman ρ| (95% CI)", box=box.SIMPLE_HEAD)
    # The expected sign is the arrow's (↓: negative); `agrees` checks it where the CI excludes 0.
    for col in ("#", "metric", "n", "Spearman ρ [95% CI]", "Pearson r", "Kendall τ", "agrees"):
        table.add_column(col, justify="right" if col in ("#", "n", "Pearson r", "Kendall τ") else "left",
                         no_wrap=col in ("metric", "Spearman ρ [95% CI]"))
    for i, k in enumerate(s.keys, 1):
        u = k.utterance
        style = "red" if k.agrees is False else "green" if k.agrees and u.spearman.excludes_zero else None
        table.add_row(str(i), Text(f"{k.key} {arrow(k.higher_is_better)}"), str(u.n),
                      estimate_text(u.spearman) if u.note is None else Text(u.note),
                      cfmt(u.pearson.value), cfmt(u.kendall.value),
                      {True: "yes", False: "NO", None: "–"}[k.agrees], style=style)
    out.print(table)
    if s.system_note:
        _line(f"system level: {s.system_note}")
    else:
        table = Table(title=f"system level: {s.systems} systems (95% CI)", box=box.SIMPLE_HEAD)
        for col in ("metric", "Spearman ρ [95% CI]", "Pearson r [95% CI]", "Kendall τ"):
            table.add_column(col, justify="right" if col == "Kendall τ" else "left", no_wrap=True)
        for k in s.keys:
            c = k.system
            table.add_row(Text(f"{k.key} {arrow(k.higher_is_better)}"),
                          estimate_text(c.spearman) if c.note is None else Text(c.note),
                          estimate_text(c.pearson), cfmt(c.kendall.value))
        out.print(table)
    if result.by_tag:
        table = Table(title="by tag: the metric that tracks the ratings best", box=box.SIMPLE_HEAD)
        for col in ("tag", "pairs", "systems", "best metric", "Spearman ρ [95% CI]", "agrees"):
            table.add_column(col, justify="right" if col in ("pairs", "systems") else "left", no_wrap=col != "tag")
        for t in result.by_tag:
            best = next((k for k in t.keys if math.isfinite(k.utterance.spearman.value)), None)
            table.add_row(Text(t.tag or ""), str(t.pairs), str(t.systems),
                          Text(f"{best.key} {arrow(best.higher_is_better)}") if best else "–",
                          estimate_text(best.utterance.spearman) if best else "–",
                          {True: "yes", False: "NO", None: "–"}[best.agrees] if best else "–")
        out.print(table)
    redundant = result.matrix.redundant()
    if redundant:
        _line("redundant (metric-metric |Spearman ρ| ≥ 0.9): " +
              "; ".join(f"{a} ~ {b} ({cfmt(v)})" for a, b, v in redundant))


# --- calibrate ---------------------------------------------------------------------------------


def calibrate(
    model: str = typer.Argument(..., help="What to evaluate, as for `evalkit run`.", metavar="MODEL"),
    suite: str = typer.Option(..., "--suite", "-s", help="Built-in suite name or a suite folder.", metavar="NAME|PATH"),
    repeats: int = typer.Option(..., "--repeats", min=2, help="How many times to evaluate MODEL (seeds 0..N-1).",
                                metavar="N"),
    limit: int | None = typer.Option(None, help="Evaluate only the first N utterances.", metavar="N"),
    out_dir: Path | None = typer.Option(None, "--out", help="Calibration folder (a run folder per repeat, the "
                                        "determinism check, calibration.json, gates.yaml); default: "
                                        "./evalkit-calibrate-<time>-<suite>.", metavar="DIR"),
    gates_out: Path | None = typer.Option(None, "--gates-out", help="Where to write the gates file; default: "
                                          "DIR/gates.yaml. Use it as `evalkit report --gates FILE`.",
                                          metavar="FILE"),
    adapter: str | None = typer.Option(None, help="Adapter name or pkg.mod:Name, as for `evalkit run`.",
                                       metavar="NAME|pkg.mod:Name"),
    asr: str = typer.Option("faster-whisper:base", help="ASR as ENGINE[:MODEL].", metavar="ENGINE[:MODEL]"),
    metrics: str | None = typer.Option(None, help="Comma-separated metric names; default: all reference-free ones.",
                                       metavar="A,B,..."),
    device: str = typer.Option("auto", help="auto, cpu or cuda.", metavar="auto|cpu|cuda"),
    tracking_uri: str | None = typer.Option(None, help="MLflow tracking URI; default: sqlite store in ./evalkit-runs.",
                                            metavar="URI"),
    experiment: str | None = typer.Option(None, help="MLflow experiment of the repeats; default: "
                                          "evalkit-calibrate-<suite> (never the suite's own, whose latest run a "
                                          "nightly may take as its baseline).", metavar="NAME"),
    tag: list[str] = typer.Option([], help="Extra MLflow tag KEY=VALUE on every repeat (repeatable).",
                                  metavar="KEY=VALUE"),
    reference_run: str | None = typer.Option(None, help="Reference audio, as for `evalkit run`.", metavar="RUN"),
    workers: int | None = typer.Option(None, min=0, help="Metric worker processes, as for `evalkit run`.",
                                       metavar="N"),
    metric_option: list[str] = typer.Option([], help="A metric setting NAME.KEY=VALUE, as for `evalkit run`.",
                                            metavar="NAME.KEY=VALUE"),
    asr_option: list[str] = typer.Option([], help="An ASR decoding setting KEY=VALUE, as for `evalkit run`.",
                                         metavar="KEY=VALUE"),
    allow_download: bool = typer.Option(False, "--allow-download",
                                        help="Let --asr download a named Whisper model, as for `evalkit run`."),
) -> None:
    """Evaluate MODEL N times (seed i for repeat i; fresh transcript and metric caches each time),
    measure every metric's run-to-run spread, flag ASR or metrics that are not deterministic on
    identical audio, estimate the smallest difference the suite can detect, and write a gates
    file (suite-header syntax) that no pair of repeats would have failed, verified on the repeats."""
    from .calibrate import CalibrateConfig, raise_problems
    from .calibrate import calibrate as run_calibration
    from .cli import _allow_download, _parse_asr_options, _parse_tags, _progress
    from .metric_loading import parse_options as parse_metric_options
    from .runner import RunConfig

    if allow_download:
        _allow_download()
    config = RunConfig(
        suite=suite, model=model, adapter=adapter, asr=asr,
        metrics=tuple(m.strip() for m in metrics.split(",") if m.strip()) if metrics else None,
        device=device, limit=limit, tracking_uri=tracking_uri, experiment=experiment, tags=_parse_tags(tag),
        reference_run=reference_run, workers=workers, metric_options=parse_metric_options(metric_option),
        asr_options=_parse_asr_options(asr_option))
    result = run_calibration(CalibrateConfig(config, repeats, out_dir, gates_out), _progress,
                             lambda line: err.print(line, markup=False, highlight=False, soft_wrap=True))
    print_calibration(result)
    raise_problems(result)


def _num(v: float) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.4g}"


def print_calibration(result) -> None:
    table = Table(title=Text(f"{result.suite} · {result.model} · {len(result.repeats)} repeats, "
                             f"{result.utterances} utterances"), box=box.SIMPLE_HEAD)
    for col in ("metric", "n", "mean", "sd of means", "range", "utt sd mean/max", "deterministic", "detectable",
                "gate"):
        table.add_column(col, justify="left" if col in ("metric", "deterministic") else "right",
                         no_wrap=col == "metric")
    for k in result.keys:
        mean = sum(k.means) / len(k.means) if k.means else math.nan
        table.add_row(Text(f"{k.key} {arrow(k.higher_is_better)}{' *' if k.headline else ''}"), str(k.n),
                      _num(mean), _num(k.sd), _num(k.range), f"{_num(k.utterance_sd_mean)}/{_num(k.utterance_sd_max)}",
                      "yes" if k.deterministic else "NO", _num(k.detectable),
                      "–" if k.gate is None else f"{k.gate:g}", style=None if k.deterministic else "bold red")
    out.print(table)
    _line("* headline key (gated). detectable: max(1.96·√2·sd of repeat means, largest paired 95% CI half-width "
          "between repeats)")
    if result.asr_deterministic is False:
        err.print(f"warning: ASR is not deterministic: {result.asr_note}", markup=False, highlight=False,
                  soft_wrap=True)
    for k in result.nondeterministic:
        err.print(f"warning: {k.key} ({k.metric}) is not deterministic: {k.nondeterminism}", markup=False,
                  highlight=False, soft_wrap=True)
    _line(f"identical clips compared for determinism: {result.identical_audio} utterance(s)")
    for n in result.notes:
        _line(f"note: {n}")
    passed = sum(p.status == "pass" for p in result.pairs)
    _line(f"gates verified on the repeats: {passed} of {len(result.pairs)} ordered pairs pass")
    for p in result.pairs:
        if p.status != "pass":
            _line(f"  repeat {p.candidate} vs {p.baseline}: {p.status}: {'; '.join(p.reasons)[:300]}")
    _line(f"gates file: {result.gates_file}")
    _line(f"calibration: {result.out_dir / 'calibration.json'}")
