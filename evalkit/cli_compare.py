"""`evalkit compare`, `evalkit report` and `evalkit baseline`: presentation only; the work lives in
runs (loading), compare (statistics), gates (verdict) and report (files).

Exit codes: 0 done (report: pass, or regressed without --fail-on-regression); 1 regressed with
--fail-on-regression; 2 incomparable runs or bad input (an EvalkitError, printed by cli.main on
one line); 3 MLflow unreachable.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from . import gates as gates_mod
from . import report as report_mod
from . import runs, tracking
from .compare import Comparison, Incomparable, TagDelta
from .compare import compare as compare_runs
from .console import err, out
from .errors import EvalkitError

_RUN_HELP = ("A run folder, a run id (MLflow's, or summary.json's run_id), tag:NAME (a named baseline) or "
             "latest:EXPERIMENT.")
_URI_HELP = "MLflow tracking URI; default: the one the candidate run was logged to, else ./evalkit-runs."
_SET_URI_HELP = "MLflow tracking URI; default: the one RUN was logged to, else ./evalkit-runs."
_SHOW_URI_HELP = "MLflow tracking URI; default: ./evalkit-runs."


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)
    app.command("report")(report)
    baseline_app = typer.Typer(help="Named baselines: MLflow runs tagged evalkit.baseline.NAME=true.",
                               no_args_is_help=True)
    baseline_app.command("set")(baseline_set)
    baseline_app.command("show")(baseline_show)
    app.add_typer(baseline_app, name="baseline")


def _without_credentials(uri: str | None) -> str | None:
    # user:password@ moves to MLflow's environment before anything prints or records the URI.
    return tracking.adopt_credentials(uri) if uri else uri


def _uri(explicit: str | None, run: runs.LoadedRun | None = None) -> str:
    return explicit or (runs.recorded_uri(run) if run else None) or tracking.default_uri()


def _load_pair(candidate: str, baseline: str, tracking_uri: str | None, with_audio: bool):
    cand = runs.load_run(candidate, tracking_uri, with_audio=with_audio)
    # The candidate's own store is where its baselines live, and latest: must not pick the candidate.
    base = runs.load_run(baseline, _uri(tracking_uri, cand), exclude_run_id=cand.mlflow_run_id,
                         with_audio=with_audio, suite=cand.summary.suite.name)
    return cand, base


def _incomparable(reasons) -> EvalkitError:
    return EvalkitError("incomparable: " + "; ".join(reasons))


def _table(result: Comparison, verdict: gates_mod.Verdict | None = None) -> Table:
    # Three significant digits and no inner borders: the table must fit an 80-column CI log.
    table = Table(title=f"{result.paired} paired utterances", box=box.SIMPLE_HEAD)
    for col in ("metric", "baseline", "candidate", "Δ", "95% CI", "p", "status" if verdict else "direction"):
        table.add_column(col, justify="left" if col in ("metric", "direction", "status") else "right",
                         no_wrap=col in ("metric", "95% CI"))
    for m in result.metrics:
        status = report_mod.metric_status(verdict, m) if verdict else m.direction
        style = {"regressed": "bold red", "worse": "yellow", "better": "green"}.get(status)  # changed: plain
        table.add_row(escape(f"{m.key} {report_mod.arrow(m.higher_is_better)}"),
                      report_mod.fmt(m.baseline_mean, digits=3),
                      report_mod.fmt(m.candidate_mean, digits=3), report_mod.fmt(m.delta, True, 3),
                      escape(report_mod.ci_text(m, 3)), report_mod.fmt(m.p_value, digits=2), status, style=style)
    return table


def _tag_tables(result: Comparison, headlines: tuple[str, ...], verdict: gates_mod.Verdict | None = None) -> None:
    """The per-tag deltas (report_mod.tag_rows), a table per key: the metric column's width goes to
    the tag, so each still fits an 80-column CI log. Nothing when the suite has no tags."""
    shown = report_mod.tag_rows(result, headlines, verdict)
    if not shown:
        return
    out.print(report_mod.correction_text(result.tags), markup=False, highlight=False, soft_wrap=True)
    by_key: dict[str, list[TagDelta]] = {}
    for t in shown:
        by_key.setdefault(t.key, []).append(t)
    for key, tags in by_key.items():
        first = tags[0]
        title = (f"{key} {report_mod.arrow(first.stats.higher_is_better)} by tag · "
                 f"{gates_mod.level(first.confidence)} CIs")
        table = Table(title=escape(title), box=box.SIMPLE_HEAD)
        for col in ("tag", "n", "baseline", "candidate", "Δ", "CI", "status" if verdict else "direction"):
            table.add_column(col, justify="left" if col in ("tag", "direction", "status") else "right",
                             no_wrap=col in ("tag", "CI"))
        for t in tags:
            m = t.stats
            status = report_mod.tag_status(verdict, t) if verdict else m.direction
            style = {"regressed": "bold red", "worse": "yellow", "better": "green"}.get(status)
            table.add_row(escape(t.tag), str(m.n), report_mod.fmt(m.baseline_mean, digits=3),
                          report_mod.fmt(m.candidate_mean, digits=3), report_mod.fmt(m.delta, True, 3),
                          escape(report_mod.ci_text(m, 3)), status, style=style)
        out.print(table)


def _print_details(result: Comparison) -> None:
    for r in result.reasons:
        err.print(f"warning: not comparable, forced: {r}", markup=False, highlight=False, soft_wrap=True)
    for n in result.notes:
        out.print(f"note: {n}", markup=False, highlight=False, soft_wrap=True)
    for f in result.new_failures:
        out.print(f"new failure: {f.utterance_id}: {f.reason}", markup=False, highlight=False, soft_wrap=True)


def compare(
    run_a: str = typer.Argument(..., help="The baseline. " + _RUN_HELP, metavar="RUN_A"),
    run_b: str = typer.Argument(..., help="The candidate. " + _RUN_HELP, metavar="RUN_B"),
    force: bool = typer.Option(False, "--force", help="Compare even when suite, ASR settings, text normalizer "
                                                      "or metric versions differ (the reasons are still shown)."),
    tracking_uri: str | None = typer.Option(None, help=_URI_HELP, callback=_without_credentials, metavar="URI"),
) -> None:
    """Compare RUN_B (candidate) with RUN_A (baseline), utterance by utterance: means, delta
    (B - A), 95% paired-bootstrap CI, Wilcoxon p and direction per metric (↑ higher is better,
    ↓ lower is better, ↕ no direction: changed or same, never worse). Then, when the suite has tags,
    a table per headline key with a row per tag: its delta and CI, Bonferroni-corrected across the
    tags. Exit 2 if incomparable."""
    cand, base = _load_pair(run_b, run_a, tracking_uri, with_audio=False)
    result = compare_runs(cand, base, force=force)
    if isinstance(result, Incomparable):
        raise _incomparable([*result.reasons, "pass --force to compare anyway"])
    out.print(f"baseline:  {base.label} · {base.source}", markup=False, highlight=False, soft_wrap=True)
    out.print(f"candidate: {cand.label} · {cand.source}", markup=False, highlight=False, soft_wrap=True)
    out.print(_table(result))
    _tag_tables(result, report_mod.headlines(cand, base))
    _print_details(result)


def report(
    candidate: str = typer.Option(..., "--candidate", help="The run under test. " + _RUN_HELP, metavar="RUN"),
    baseline: str = typer.Option(..., "--baseline", help="What it must not be worse than. " + _RUN_HELP, metavar="RUN"),
    gates: Path | None = typer.Option(None, "--gates", help="Gates file (YAML or .toml); default: the "
                                         "suite header's `gates:`, else any worsening whose CI excludes zero.",
                                         metavar="FILE"),
    out_dir: Path | None = typer.Option(None, "--out", help="Report folder; default: reports/<suite>-<cand>-vs-<base>.",
                                           metavar="DIR"),
    fail_on_regression: bool = typer.Option(False, "--fail-on-regression",
                                            help="Exit 1 when the verdict is regressed."),
    worst_by: str | None = typer.Option(None, help="Metric value key that ranks the worst-regressed utterances; "
                                        "default: the first headline key the candidate's metrics declare, else "
                                        "the first key that got worse.", metavar="KEY"),
    tracking_uri: str | None = typer.Option(None, help=_URI_HELP, callback=_without_credentials, metavar="URI"),
) -> None:
    """Judge CANDIDATE against BASELINE with gates (KEY@TAG gates one suite tag); write index.html, summary.md and
    comparison.json; log them and the verdict tags to the candidate's MLflow run (an incomparable
    report never replaces a pass/regressed verdict the run already holds)."""
    file_gates = gates_mod.from_file(gates) if gates else None  # a bad gates file fails before any download
    cand, base = _load_pair(candidate, baseline, tracking_uri, with_audio=True)
    result = compare_runs(cand, base)
    folder_of_suite = runs.suite_folder(cand.summary)
    rules = file_gates or gates_mod.resolve(None, folder_of_suite)
    verdict = gates_mod.judge(result, rules, _suite_tags(folder_of_suite))  # an unknown tag in a gate: exit 2
    suite = cand.summary.suite.name
    folder = out_dir or Path("reports") / f"{suite}-{cand.summary.run_id[:8]}-vs-{base.summary.run_id[:8]}"
    index = report_mod.write(folder, cand, base, result, verdict, worst_by=worst_by)

    out.print(f"verdict: {verdict.status}", markup=False, highlight=False, soft_wrap=True)
    for r in verdict.reasons:
        out.print(f"  {r}", markup=False, highlight=False, soft_wrap=True)
    if isinstance(result, Comparison):
        out.print(_table(result, verdict))
        _tag_tables(result, report_mod.headlines(cand, base), verdict)
        _print_details(result)
    out.print(f"report: {index}", markup=False, highlight=False, soft_wrap=True)
    out.print(f"summary: {folder / 'summary.md'}", markup=False, highlight=False, soft_wrap=True)
    _log(cand, base, folder, verdict)

    if verdict.status == "incomparable":
        raise _incomparable(verdict.reasons)
    if verdict.status == "regressed" and fail_on_regression:
        raise SystemExit(1)  # not an error: the gate did its job (cli.main would print "error:")


def _suite_tags(folder: Path | None) -> set[str]:
    """The tags of the suite as it is now: a tag gate may name one that no compared utterance
    carries (a --limit run) without being a typo."""
    if folder is None:
        return set()
    from . import suite as suite_mod

    try:
        return {t for u in suite_mod.load(str(folder)).utterances for t in u.tags}
    except EvalkitError:
        return set()


def _log(cand: runs.LoadedRun, base: runs.LoadedRun, folder: Path, verdict: gates_mod.Verdict) -> None:
    """An incomparable report does not replace a pass/regressed verdict already on the run
    (runs.log_report): it goes to report-incomparable/ and the tag evalkit.report.last."""
    if cand.mlflow_run_id is None:
        out.print("the candidate was never logged to MLflow: the report stays local", markup=False)
        return
    tags = {"evalkit.baseline_source": base.source[:5000], "evalkit.baseline_run_id": base.mlflow_run_id or ""}
    try:
        became_verdict = runs.log_report(cand, folder, verdict.status, tags, _uri(None, cand))
    except EvalkitError as exc:  # the verdict and the local report stand; the exit code must too
        err.print(f"warning: {exc}", markup=False, highlight=False, soft_wrap=True)
        return
    if became_verdict:
        what = f"artifacts report/, tag {runs.VERDICT_TAG}={verdict.status}"
    else:
        what = (f"artifacts report-incomparable/, tag {runs.LAST_REPORT_TAG}={verdict.status}; "
                f"its earlier {runs.VERDICT_TAG} and report/ stay")
    out.print(f"logged to MLflow run {cand.mlflow_run_id} ({what})", markup=False, highlight=False, soft_wrap=True)


def baseline_set(
    run: str = typer.Argument(..., help="The run to mark: a run folder logged to MLflow, or an MLflow run id.",
                              metavar="RUN"),
    name: str = typer.Option(..., "--name", help="Baseline name, e.g. nightly; use it as --baseline tag:NAME.",
                             metavar="NAME"),
    tracking_uri: str | None = typer.Option(None, help=_SET_URI_HELP, callback=_without_credentials, metavar="URI"),
) -> None:
    """Tag RUN as the named baseline NAME (moving the tag off the run that held it)."""
    loaded = runs.load_run(run, tracking_uri, with_audio=False)
    uri = _uri(tracking_uri, loaded)
    previous = runs.set_baseline(loaded, name, uri)
    moved = f" (was {', '.join(previous)})" if previous else ""
    out.print(f"baseline {name!r} is MLflow run {loaded.mlflow_run_id}{moved}", markup=False, highlight=False,
              soft_wrap=True)


def baseline_show(
    name: str = typer.Argument(..., help="Baseline name.", metavar="NAME"),
    suite: str | None = typer.Option(None, "--suite", help="Suite name; default: the newest tagged run of any suite.",
                                        metavar="NAME"),
    tracking_uri: str | None = typer.Option(None, help=_SHOW_URI_HELP, callback=_without_credentials, metavar="URI"),
) -> None:
    """Print the MLflow run id of the named baseline."""
    out.print(runs.find_baseline(name, _uri(tracking_uri), suite), markup=False, highlight=False, soft_wrap=True)
