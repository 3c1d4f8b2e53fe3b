"""`evalkit listen`: a listening test over finished runs, in the browser (evalkit.listen).

    evalkit listen RUN [RUN ...] [--test mos|ab|mushra] [--anchors]      serve the test
    evalkit listen RUN [RUN ...] --export FILE.csv [--log]                results: CSV, MLflow

The same RUNs and options name the same test: its database (default evalkit-runs/listen/
TEST-DIGEST.db) is found again, so a restarted server continues and the export reads it.
Exit codes: 0 done; 2 bad input (an unknown RUN, a database of another test, a port in use, the
`listen` extra missing), printed by cli.main on one line; 3 MLflow unreachable on --log.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import typer
from rich import box
from rich.table import Table

from . import runs as runs_mod
from . import tracking
from .console import err, out
from .errors import EvalkitError

DEFAULT_DIR = Path("evalkit-runs") / "listen"
_RUN_HELP = ("A run folder, a run id (MLflow's, or summary.json's run_id), tag:NAME or latest:EXPERIMENT; "
             "its clips are rated.")


def register(app: typer.Typer) -> None:
    app.command("listen")(listen)


def _without_credentials(uri: str | None) -> str | None:
    return tracking.adopt_credentials(uri) if uri else uri


def _say(text: str) -> None:
    out.print(text, markup=False, highlight=False, soft_wrap=True)
    sys.stdout.flush()  # whoever started the server reads its address from a pipe


def listen(
    run_specs: list[str] = typer.Argument(..., help=_RUN_HELP, metavar="RUN..."),
    test: str = typer.Option("mos", "--test", help="mos: every clip rated 1-5 (ACR); ab: two runs, which one "
                             "is better or no preference; mushra: every system of a sentence 0-100.",
                             metavar="mos|ab|mushra"),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port to serve on; 0 picks a free one.",
                             metavar="P"),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to serve on; 0.0.0.0 lets other machines "
                             "of the network in.", metavar="HOST"),
    db: Path | None = typer.Option(None, "--db", help="The ratings database (sqlite); default: "
                                   "evalkit-runs/listen/TEST-DIGEST.db, named by the runs and options.",
                                   metavar="FILE"),
    raters_seed: int = typer.Option(0, "--raters-seed", help="Seed of every rater's order (with the rater id).",
                                    metavar="S"),
    anchors: bool = typer.Option(False, "--anchors", help="Hidden anchors (mos, mushra): the suite's reference "
                                 "audio when the runs have it, and a degraded copy (3.5 kHz low-pass + noise)."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Rate N utterances, a seeded sample of the "
                                     "suite (default: all).", metavar="N"),
    export: Path | None = typer.Option(None, "--export", help="Write the ratings CSV (run, utterance_id, "
                                       "score, rater, test, timestamp, ...) instead of serving.",
                                       metavar="FILE.csv"),
    log: bool = typer.Option(False, "--log", help="Log each run's results to its MLflow run (MOS/MUSHRA mean "
                             "and CI, A/B win rate and CI, a per-utterance table) instead of serving."),
    keep_failed: bool = typer.Option(False, "--keep-failed-raters", help="Keep raters who failed the "
                                     "attention check in the CSV and MLflow results."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="MLflow tracking URI for RUN ids "
                                            "and --log; default: where each run was logged, else ./evalkit-runs.",
                                            callback=_without_credentials, metavar="URI"),
) -> None:
    """A blind listening test of the RUNs' clips in the browser (MOS, A/B or MUSHRA): every rating is
    stored in sqlite as it is submitted; --export and --log turn the ratings into a CSV and MLflow
    results."""
    from .listen import catalog as catalog_mod
    from .listen.store import Store

    loaded = [runs_mod.load_run(spec, tracking_uri) for spec in run_specs]
    selection = catalog_mod.select(loaded, test, anchors_=anchors, limit=limit, seed=raters_seed)
    path = db or DEFAULT_DIR / f"{test}-{selection.digest[:12]}.db"
    exporting = export is not None or log
    store = Store(path, create=not exporting)
    store.claim(selection.digest, selection.describe())
    if exporting:
        _results(store, selection, export, log, keep_failed, tracking_uri)
        return
    _serve(store, selection, path, host, port)


def _serve(store, selection, path: Path, host: str, port: int) -> None:
    from .listen import app as app_mod
    from .listen import catalog as catalog_mod
    from .listen import plan

    catalog = catalog_mod.build(selection, store.secret, path.parent / f"{path.stem}-anchors")
    stored = {"n": 0}

    def counted(rater: str) -> None:
        stored["n"] += 1

    app = app_mod.create_app(catalog, store, on_rating=counted)
    sock = app_mod.bind(host, port)
    bound = sock.getsockname()
    shown_host = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    for note in selection.notes:
        err.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    n = len(catalog.items)
    _say(f"listening test ({selection.test}): {n} items per rater, {plan.repeats_for(n)} attention repeats, "
         f"{len(selection.systems)} systems")
    _say(f"ratings: {path}")
    _say(f"open http://{shown_host}:{bound[1]}/ (Ctrl-C stops; every rating is saved when it is submitted)")
    app_mod.serve(app, sock)
    _say(f"stopped: {stored['n']} ratings stored in this session, {len(store.ratings())} rows in {path}")
    _say("results: the same command with --export FILE.csv (and --log for MLflow)")


def _results(store, selection, export: Path | None, log: bool, keep_failed: bool, uri: str | None) -> None:
    from .listen import export as export_mod

    results = export_mod.read(store, selection.test, keep_failed)
    labels = {s.key: s.label for s in selection.systems}
    for check in results.checks.values():
        note = "" if check.status != "fail" else (" (kept)" if keep_failed else " (left out)")
        _say(f"rater {check.rater}: attention check {check.status}{note}, {check.detail}")
    out.print(_table(results, labels))
    if export is not None:
        rows = export_mod.csv_rows(results, selection)
        export_mod.write_csv(export, rows)
        _say(f"wrote {len(rows)} ratings to {export}")
    if log:
        for line in export_mod.log_to_mlflow(results, selection, uri):
            _say(line)
    if not results.usable:
        raise EvalkitError(f"{store.path} holds no usable rating yet")


def _fmt(x: float, digits: int = 2) -> str:
    return "-" if math.isnan(x) else f"{x:.{digits}f}"


def _table(results, labels: dict[str, str]) -> Table:
    from .listen import stats

    if results.test == "ab":
        table = Table(title="A/B preference (ties left out of the rate; 95% Wilson CI)", box=box.SIMPLE_HEAD)
        for col in ("run", "wins", "losses", "ties", "raters", "win rate", "95% CI"):
            table.add_column(col, justify="left" if col == "run" else "right")
        for key, p in stats.preferences(results.usable).items():
            table.add_row(labels.get(key, key), str(p.wins), str(p.losses), str(p.ties), str(p.raters),
                          _fmt(p.rate), f"[{_fmt(p.low)}, {_fmt(p.high)}]")
        return table
    title = f"{results.test.upper()} (95% CI: bootstrap over raters and utterances)"
    table = Table(title=title, box=box.SIMPLE_HEAD)
    for col in ("system", "ratings", "raters", "utterances", "mean", "95% CI"):
        table.add_column(col, justify="left" if col == "system" else "right")
    for key, s in stats.score_summaries(results.usable).items():
        table.add_row(labels.get(key, key), str(s.ratings), str(s.raters), str(s.utterances), _fmt(s.mean),
                      f"[{_fmt(s.low)}, {_fmt(s.high)}]")
    return table
