"""The MLflow gateway: the only module that talks to MLflow (evalkit.runs and evalkit.references
read and tag runs through it, and neither imports mlflow).

It owns:
- the client (`client`): one per call, after the environment is set (`configure_environment`:
  telemetry off, no progress bars, seconds of retries instead of minutes, each unless the user
  set it);
- credentials: `http://user:password@host` is taken apart at once (`adopt_credentials`): they go to
  MLflow's own variables (MLFLOW_TRACKING_USERNAME/PASSWORD), and the URI that is printed, recorded
  in run.json and summary.json is the one without them (`redact` for anything else);
- logging a finished run folder (`log_run`), idempotently: a run whose evalkit run id is already a
  FINISHED run of the target store is not logged again (`find_logged`), so `evalkit sync` repeated,
  or to a second store, logs each run once per store;
- the one cache of downloaded runs (`fetch_run`, `run_cache`): the artifacts of MLflow run ID live
  in `<evalkit cache>/runs/ID/`, downloaded into a temporary folder and renamed into place, so an
  interrupted download never passes for a cached run; logged artifacts never change, so a cached
  copy is the run. Runs loaded for compare/report and reference runs share it;
- finding runs: by MLflow run id or evalkit run id (`resolve_run_id`), by tag (`find_tagged`),
  the newest FINISHED run of an experiment (`find_latest`); tagging (`set_tags`, `delete_tag`);
  logging a report as artifacts and verdict tags (`log_report`);
- error translation (`translate`, `calling`): whatever MLflow, requests or sqlalchemy raise becomes
  one EvalkitError line saying what failed, where (the URI without credentials) and why.

The embedded default is a sqlite store under ./evalkit-runs with its artifacts beside it, so
nothing needs a server. Any other URI (an `mlflow server`) works the same; an unreachable
server is reported as a TrackingError while the local record stays complete.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import re
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from . import record, trace
from .aggregate import tag_key
from .cache import cache_dir
from .errors import EvalkitError, TrackingError, first_line
from .types import Row
from .untrusted import is_run_id

DEFAULT_ROOT = Path("evalkit-runs")
HEALTH_TIMEOUT_S = 5
RUN_CACHE = "runs"  # <evalkit cache>/runs/<MLflow run id>/: summary.json, utterances.jsonl, audio/
EVALKIT_RUN_ID_TAG = "evalkit.run_id"
VERDICT_TAG = "evalkit.verdict"
LAST_REPORT_TAG = "evalkit.report.last"

# Set for MLflow unless the user set them: no telemetry, no download progress bars on stderr
# (evalkit prints its own lines), and a dead server fails within seconds, not after MLflow's
# default minutes of retries.
ENVIRONMENT = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


# --- environment, credentials, the client --------------------------------------------------


def configure_environment() -> None:
    """ENVIRONMENT's variables, each unless the user set it. MLflow decides on telemetry when it is
    first imported: if that already happened (a library caller), it is asked to decide again."""
    telemetry_unset = "MLFLOW_DISABLE_TELEMETRY" not in os.environ
    for k, v in ENVIRONMENT.items():
        os.environ.setdefault(k, v)
    if telemetry_unset and "mlflow.telemetry" in sys.modules:
        with contextlib.suppress(Exception):
            sys.modules["mlflow.telemetry"].set_telemetry_client()


def default_uri(root: Path = DEFAULT_ROOT) -> str:
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def adopt_credentials(uri: str) -> str:
    """The URI without `user:password@`; the credentials become MLflow's environment variables
    for this process (unless the user set those), so they are used but never printed or recorded."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or (parts.username is None and parts.password is None):
        return uri
    os.environ.setdefault("MLFLOW_TRACKING_USERNAME", unquote(parts.username or ""))
    if parts.password is not None:
        os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", unquote(parts.password))
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def redact(text: str) -> str:
    """`text` with the password of any URL in it replaced by ***."""
    return re.sub(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*):[^/\s@]*@", r"\1:***@", text)


def _auth_header() -> dict[str, str]:
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if not user and not password:
        return {}
    token = base64.b64encode(f"{user or ''}:{password or ''}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def check_reachable(uri: str) -> None:
    if not uri.startswith(("http://", "https://")):
        return
    uri = adopt_credentials(uri)
    try:
        request = urllib.request.Request(uri.rstrip("/") + "/health", headers=_auth_header())
        with urllib.request.urlopen(request, timeout=HEALTH_TIMEOUT_S) as resp:
            if resp.status == 200:
                return
            reason = f"HTTP {resp.status}"
    except (urllib.error.URLError, OSError) as exc:
        reason = str(getattr(exc, "reason", exc))
    raise TrackingError(f"MLflow server {redact(uri)} is unreachable ({redact(reason)})")


def client(uri: str):
    """The one way evalkit opens an MLflow store: fails within seconds on a dead server instead of
    retrying for minutes, and a new sqlite store keeps its artifacts beside its database."""
    import logging

    configure_environment()  # before mlflow is imported: it reads telemetry settings then
    uri = adopt_credentials(uri)
    check_reachable(uri)
    with calling("cannot open the MLflow store", uri), trace.span("MLflow: import, open the store", "tracking"):
        from mlflow.tracking import MlflowClient

        # MLflow announces schema creation and migrations at INFO on every new store: noise here.
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
            # A new store gets its Default experiment at creation, with artifacts under the current
            # folder (./mlruns/0) unless told otherwise: create it here, with artifacts beside the db.
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

            db = Path(uri[len("sqlite:///"):])
            SqlAlchemyStore(uri, (db.parent / "mlartifacts").resolve().as_uri())
        return MlflowClient(tracking_uri=uri)


def preload(uri: str) -> None:
    """Import what `client(uri)` will import (seconds on a small machine), and create a new sqlite
    store (a second of schema migrations): the pipeline calls this while its main thread would
    only wait for the last metric workers, so that work leaves the end of the run. A server is
    not contacted. Any failure is left for `client` to report."""
    configure_environment()
    with contextlib.suppress(Exception):
        import mlflow.tracking  # noqa: F401
        if uri.startswith("sqlite:///"):
            import mlflow.store.tracking.sqlalchemy_store  # noqa: F401

            client(uri)  # the run logs into it right after: creating it now changes nothing else


# --- error translation ---------------------------------------------------------------------


def translate(exc: BaseException, what: str, uri: str, error: type[EvalkitError] = EvalkitError) -> EvalkitError:
    """The one line evalkit prints for a failed MLflow call: "`what` at URI (reason)", the URI and
    reason without credentials. `what` says what failed ("cannot tag MLflow run X"); the reason is
    the cause in a few words, from whatever MLflow, requests or sqlalchemy raised (a refused
    connection, a timeout, a database error, MLflow's own message). An EvalkitError stays as it is."""
    if isinstance(exc, EvalkitError):
        return exc
    return error(f"{what} at {redact(uri)} ({redact(reason(exc))})")


@contextlib.contextmanager
def calling(what: str, uri: str, error: type[EvalkitError] = EvalkitError) -> Iterator[None]:
    """Runs MLflow calls, turning any failure into `translate`'s one line."""
    try:
        yield
    except EvalkitError:
        raise
    except Exception as exc:  # MLflow, requests and sqlalchemy raise many kinds
        raise translate(exc, what, uri, error) from None


def reason(exc: BaseException) -> str:
    """Why an MLflow call failed, in a few words: the most telling exception of its chain
    (MLflow wraps requests' and sqlalchemy's errors in its own, with the cause kept as context)."""
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and all(e is not seen for seen in chain):
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in chain:
        if _is(e, "requests.exceptions", "Timeout") or isinstance(e, TimeoutError):
            return "the server did not answer in time"
        if _is(e, "requests.exceptions", "ConnectionError") or isinstance(e, ConnectionError):
            errno = re.search(r"\[Errno -?\d+\] ([^'\"()\[\]]+)", str(e))
            return f"server unreachable: {errno.group(1).strip() if errno else first_line(e, 120)}"
        if _is(e, "sqlalchemy.exc", "DBAPIError"):
            return f"database error: {first_line(getattr(e, 'orig', None) or e, 200)}"
    for e in chain:
        if _is(e, "mlflow.exceptions", "MlflowException"):
            return first_line(e, 200)
    return first_line(exc, 200, typed=True)


def _is(exc: BaseException, module: str, name: str) -> bool:
    """isinstance of module.name, without importing the module (it is loaded if it raised)."""
    cls = getattr(sys.modules.get(module), name, None)
    return isinstance(cls, type) and isinstance(exc, cls)


def _not_found(exc: BaseException) -> bool:
    return getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


# --- logging a run folder ------------------------------------------------------------------


def _artifact_location(uri: str, experiment: str) -> str | None:
    """Explicit artifact folder beside a sqlite store; servers decide their own."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        return (db.parent / "mlartifacts" / experiment).resolve().as_uri()
    return None


def log_run(out_dir: Path, uri: str, experiment: str, parent_run_id: str | None = None) -> str:
    """Log the run folder as one MLflow run, unless the store already holds it; returns the MLflow
    run id and notes it in summary.json. With `parent_run_id` (a sweep's), it is that run's child."""
    uri = adopt_credentials(uri)
    check_reachable(uri)
    _own_files_only(out_dir)
    summary, rows = record.load(out_dir)
    with calling("cannot log the run to MLflow", uri, TrackingError):
        with trace.span("MLflow: is it logged already", "tracking"):
            run_id = find_logged(uri, summary.run_id)
        if not run_id:
            with trace.span("MLflow: log params, metrics, tables, artifacts", "tracking"):
                run_id = _log(out_dir, summary, rows, uri, experiment, parent_run_id)
    record.write_summary(out_dir, dataclasses.replace(summary, tracking=record.TrackingInfo(uri, experiment, run_id)))
    return run_id


def _own_files_only(out_dir: Path) -> None:
    """Uploads copy what links point at: a run folder from someone else must not turn a link into
    an upload of /etc/passwd. evalkit writes no links, so any link is refused."""
    names = [out_dir / n for n in (record.SUMMARY, record.TABLE_JSONL, record.TABLE_CSV)]
    audio = out_dir / "audio"
    for path in [audio, *names, *(audio.iterdir() if audio.is_dir() and not audio.is_symlink() else [])]:
        if path.is_symlink() or (path.exists() and path != audio and not path.is_file()):
            raise EvalkitError(f"{path} is a link or not a plain file; a run folder holds only its own "
                               "files, so it is not uploaded")


def find_logged(uri: str, evalkit_run_id: str) -> str | None:
    """The MLflow run id of a FINISHED run of this store tagged with `evalkit_run_id`, if any."""
    if not is_run_id(evalkit_run_id or ""):
        return None
    c = client(uri)
    experiments = [e.experiment_id for e in c.search_experiments()]
    if not experiments:
        return None
    found = c.search_runs(experiments, max_results=1, filter_string=(
        f"tags.`{EVALKIT_RUN_ID_TAG}` = '{evalkit_run_id}' and attributes.status = 'FINISHED'"))
    return found[0].info.run_id if found else None


def _experiment_id(c, uri: str, experiment: str) -> str:
    exp = c.get_experiment_by_name(experiment)
    return exp.experiment_id if exp else c.create_experiment(
        experiment, artifact_location=_artifact_location(uri, experiment))


def _log(out_dir: Path, summary: record.RunRecord, rows: list[Row], uri: str, experiment: str,
         parent_run_id: str | None) -> str:
    c = client(uri)
    exp_id = _experiment_id(c, uri, experiment)
    # The run's times are the evaluation's, not the upload's (which takes well under a second).
    tags = {**summary.tags, DESCRIPTION_TAG: description(summary),
            **({PARENT_TAG: parent_run_id} if parent_run_id else {})}
    run = c.create_run(exp_id, start_time=_ms(summary.started_unix), tags=tags, run_name=summary.run_name)
    run_id = run.info.run_id
    try:
        model_id = _logged_model(c, exp_id, run_id, summary)
        _fill(c, run_id, out_dir, summary, rows, model_id)
    except Exception:
        with contextlib.suppress(Exception):  # leave no run looking alive; the local record is the truth
            c.set_terminated(run_id, "FAILED")
        raise
    c.set_terminated(run_id, "FINISHED", end_time=_ms(summary.finished_unix))
    return run_id


DESCRIPTION_TAG = "mlflow.note.content"  # the run's description in the MLflow UI
PARENT_TAG = "mlflow.parentRunId"  # MLflow nests a run under this one (a sweep's parent run)
MODEL_TYPE = "tts-checkpoint"


def flat_metrics(summary: record.RunRecord) -> dict[str, float]:
    """Every number a run logs as an MLflow metric: the aggregates, then each suite tag's
    (`cer/mean/tag/numbers_native`)."""
    out = {k: float(v) for k, v in summary.aggregates.items()}
    out.update({tag_key(k, tag): float(v) for tag, agg in summary.by_tag.items() for k, v in agg.items()})
    return out


def logged_model_name(model: str) -> str:
    """The checkpoint's name as MLflow accepts it for a logged model (no / : . % " ')."""
    return re.sub(r"[/:.%\"']", "_", Path(model.rstrip("/")).name or model)[:200] or "model"


def _logged_model(c, exp_id: str, run_id: str, summary: record.RunRecord) -> str:
    """The id of the checkpoint's MLflow logged model in this experiment: one per model (sha256),
    created on its first evaluation as an external model (its weights stay where they are; only
    MLflow's MLmodel stub is stored), found again for every later evaluation on any suite."""
    from mlflow.models.model import MLMODEL_FILE_NAME
    from mlflow.models.utils import get_external_mlflow_model_spec
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_IS_EXTERNAL

    sha = str(summary.model.get("model_sha256") or summary.tags.get("evalkit.model_sha256") or "")
    if sha and re.fullmatch(r"[0-9a-f]+", sha):
        found = c.search_logged_models([exp_id], filter_string=f"tags.`evalkit.model_sha256` = '{sha}'",
                                       max_results=1)
        if found:
            return found[0].model_id
    tags = {MLFLOW_MODEL_IS_EXTERNAL: "true", "evalkit.model_sha256": sha, "evalkit.model": summary.model_name,
            "evalkit.adapter": summary.adapter,
            **({"evalkit.step": str(summary.step)} if summary.step is not None else {})}
    model = c.create_logged_model(exp_id, name=logged_model_name(summary.model_name), source_run_id=run_id,
                                  tags=tags, model_type=MODEL_TYPE,
                                  params={k: str(v)[:6000] for k, v in summary.model.items() if v is not None})
    with tempfile.TemporaryDirectory() as tmp:
        get_external_mlflow_model_spec(model).save(str(Path(tmp) / MLMODEL_FILE_NAME))
        c.log_model_artifacts(model.model_id, tmp)
    c.finalize_logged_model(model.model_id, "READY")
    return model.model_id


def description(summary: record.RunRecord) -> str:
    """The headline numbers, as the MLflow UI shows a run's description."""
    agg = summary.aggregates
    parts = []
    for info in summary.metrics.values():
        key = info.headline
        if key is None or f"{key}/mean" not in agg:
            continue
        corpus = f" (corpus {agg[f'{key}/corpus']:.4g})" if f"{key}/corpus" in agg else ""
        parts.append(f"{key} {agg[f'{key}/mean']:.4g}{corpus}")
    step = f" at step {summary.step}" if summary.step is not None else ""
    return (f"{summary.suite.name} · {summary.model_name}{step}: {', '.join(parts) or 'no metric values'}; "
            f"{int(agg.get('failures/count', 0))} failures of {int(agg.get('utterances/count', 0))} utterances")


def _ms(unix: float) -> int:
    return int(unix * 1000)


def _fill(client, run_id: str, out_dir: Path, summary: record.RunRecord, rows: list[Row], model_id: str) -> None:
    import pandas as pd
    from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param

    ts, step = _ms(summary.finished_unix), summary.step or 0
    params = [Param(k, str(v)[:6000]) for k, v in summary.params.items()]
    # Each value also belongs to the checkpoint's logged model and to the suite as a dataset, so
    # mlflow.search_logged_models ranks checkpoints on one suite.
    linked = {"model_id": model_id, "dataset_name": summary.suite.name, "dataset_digest": summary.suite.digest[:32]}
    metrics = [Metric(k, float(v), ts, step, **linked) for k, v in flat_metrics(summary).items()]
    for i in range(0, max(len(metrics), len(params)), 100):
        client.log_batch(run_id, metrics=metrics[i:i + 100], params=params[i:i + 100], tags=[])
    # The suite as the run's dataset: MLflow's Dataset column and filter name it, and two runs on
    # the same sentences share it (MLflow keeps 36 characters of a digest).
    suite = summary.suite
    dataset = Dataset(name=suite.name, digest=suite.digest[:32], source_type="evalkit-suite",
                      source=json.dumps({"name": suite.name, "version": suite.version, "digest": suite.digest,
                                         "language": suite.language, "utterances": suite.utterances}))
    client.log_inputs(run_id, datasets=[DatasetInput(dataset, [InputTag("mlflow.data.context", "evaluation")])])
    for name in (record.SUMMARY, record.TABLE_JSONL, record.TABLE_CSV):
        client.log_artifact(run_id, str(out_dir / name))
    if (out_dir / "audio").is_dir():
        client.log_artifacts(run_id, str(out_dir / "audio"), artifact_path="audio")
    client.log_table(run_id, data=pd.DataFrame([r.to_json() for r in rows]), artifact_file="utterances_table.json")


# --- finding and downloading runs ----------------------------------------------------------


def resolve_run_id(uri: str, run_id: str) -> str:
    """The MLflow run id that `run_id` names in this store. Both kinds of id are 32 hex digits: it
    is tried first as an MLflow run id, then as an evalkit run id (summary.json's `run_id`, the tag
    evalkit.run_id of the FINISHED run it was logged as)."""
    if not is_run_id(run_id):
        raise EvalkitError(f"{run_id!r} is not a run id (32 hex digits)")
    c = client(uri)
    try:
        c.get_run(run_id)
        return run_id
    except Exception as exc:
        if not _not_found(exc):
            raise translate(exc, f"cannot look up MLflow run {run_id}", uri) from None
    with calling(f"cannot search MLflow for evalkit run {run_id}", uri):
        found = find_logged(uri, run_id)
    if found is None:
        raise EvalkitError(f"run {run_id} not found at {redact(uri)}: it is neither an MLflow run id there nor "
                           f"the evalkit run id (tag {EVALKIT_RUN_ID_TAG}) of a finished run there")
    return found


def run_cache(run_id: str) -> Path:
    """The cache folder of MLflow run `run_id` (not created): `<evalkit cache>/runs/<run id>/`."""
    if not is_run_id(run_id):  # it names a folder: nothing but 32 hex digits
        raise EvalkitError(f"{run_id!r} is not an MLflow run id (32 hex digits)")
    return cache_dir(RUN_CACHE) / run_id


def fetch_run(uri: str, run_id: str, names: Iterable[str], optional: Iterable[str] = ()) -> tuple[str, Path]:
    """(MLflow run id, its cache folder) holding the artifacts `names` (summary.json, audio, ...)
    of the run `run_id` names (resolve_run_id: an MLflow or an evalkit run id). Only what the cache
    lacks is downloaded: a run already cached under `run_id` needs no store at all. A name in
    `optional` that the run never logged (the audio of a run whose every utterance failed) is
    skipped; any other missing name is an error."""
    wanted, skippable = list(names), set(optional)
    if all((run_cache(run_id) / n).exists() for n in wanted):
        return run_id, run_cache(run_id)
    run_id = resolve_run_id(uri, run_id)
    dest = run_cache(run_id)
    missing = [n for n in wanted if not (dest / n).exists()]
    if not missing:
        return run_id, dest
    dest.mkdir(parents=True, exist_ok=True)
    c = client(uri)
    with calling(f"cannot list the artifacts of MLflow run {run_id}", uri):
        logged = {Path(f.path).name for f in c.list_artifacts(run_id)}
    for name in missing:
        if name in logged:
            _download(c, uri, run_id, name, dest)
        elif name not in skippable:
            raise EvalkitError(f"MLflow run {run_id} at {redact(uri)} has no {name} artifact: not an evalkit run?")
    return run_id, dest


def _download(c, uri: str, run_id: str, name: str, dest: Path) -> None:
    # Into a temporary folder first: an interrupted download must not pass for a cached run.
    with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as tmp:
        with calling(f"cannot download {name} of MLflow run {run_id}", uri):
            c.download_artifacts(run_id, name, tmp)
        try:
            os.replace(Path(tmp) / name, dest / name)
        except OSError as exc:
            if not (dest / name).exists():  # else another process put the same artifact there first
                raise EvalkitError(f"cannot write {dest / name} ({exc.strerror or exc})") from None


@dataclass(frozen=True)
class TaggedRun:
    run_id: str
    tags: Mapping[str, str]


def find_tagged(uri: str, key: str, value: str = "true", what: str | None = None) -> list[TaggedRun]:
    """Every run of the store whose tag `key` is `value`, newest first. `key` and `value` go into
    an MLflow filter string: callers pass checked names only (no quotes)."""
    if "`" in key or "'" in value:
        raise EvalkitError(f"tag {key!r}={value!r} cannot be searched for")
    c = client(uri)
    with calling(what or f"cannot search MLflow for runs tagged {key}={value}", uri):
        experiments = [e.experiment_id for e in c.search_experiments()]
        if not experiments:
            return []
        found = c.search_runs(experiments, filter_string=f"tags.`{key}` = '{value}'",
                              order_by=["attributes.start_time DESC"])
    return [TaggedRun(r.info.run_id, dict(r.data.tags)) for r in found]


@dataclass(frozen=True)
class LoggedRun:
    """What the store holds about a finished evalkit run without downloading anything."""

    run_id: str
    experiment: str
    start_time: int  # ms since the epoch
    tags: Mapping[str, str]
    params: Mapping[str, str]
    metrics: Mapping[str, float]


def list_runs(uri: str, experiment: str | None = None, suite: str | None = None) -> list[LoggedRun]:
    """Every FINISHED evalkit run (tagged evalkit.run_id) of `experiment` (default: all), of
    `suite` if given, newest first. `suite` goes into an MLflow filter: a checked name only."""
    c = client(uri)
    with calling("cannot list the runs of MLflow", uri):
        if experiment is None:
            experiments = {e.experiment_id: e.name for e in c.search_experiments()}
        else:
            exp = c.get_experiment_by_name(experiment)
            if exp is None:
                raise EvalkitError(f"no MLflow experiment named {experiment!r} at {redact(uri)}")
            experiments = {exp.experiment_id: exp.name}
        found, token = [], None
        where = "attributes.status = 'FINISHED'" + (f" and tags.`evalkit.suite` = '{suite}'" if suite else "")
        while experiments:
            page = c.search_runs(list(experiments), filter_string=where, order_by=["attributes.start_time DESC"],
                                 max_results=1000, page_token=token)
            found += page
            token = page.token
            if not token:
                break
    return [LoggedRun(r.info.run_id, experiments.get(r.info.experiment_id, ""), r.info.start_time,
                      dict(r.data.tags), dict(r.data.params), dict(r.data.metrics))
            for r in found if EVALKIT_RUN_ID_TAG in r.data.tags]


def find_latest(uri: str, experiment: str, exclude_run_id: str | None = None) -> str:
    """The newest FINISHED run of `experiment` other than `exclude_run_id` (the candidate)."""
    c = client(uri)
    with calling(f"cannot search MLflow experiment {experiment!r}", uri):
        exp = c.get_experiment_by_name(experiment)
        runs = [] if exp is None else c.search_runs(
            [exp.experiment_id], filter_string="attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"], max_results=10)
    if exp is None:
        raise EvalkitError(f"no MLflow experiment named {experiment!r} at {redact(uri)}")
    for r in runs:
        if r.info.run_id != exclude_run_id:
            return r.info.run_id
    raise EvalkitError(f"MLflow experiment {experiment!r} has no finished run other than the candidate")


def find_evaluated(uri: str, experiment: str, key: str) -> LoggedRun | None:
    """The newest FINISHED run of `experiment` tagged evalkit.evaluation_key=`key` (the same
    model bytes, suite and settings), if any: a sweep does not evaluate it again."""
    if not re.fullmatch(r"[0-9a-f]{64}", key):
        return None
    c = client(uri)
    with calling(f"cannot search MLflow experiment {experiment!r}", uri):
        exp = c.get_experiment_by_name(experiment)
        if exp is None:
            return None
        found = c.search_runs([exp.experiment_id], max_results=1, order_by=["attributes.start_time DESC"],
                              filter_string=f"tags.`{EVALUATION_KEY_TAG}` = '{key}' and attributes.status = 'FINISHED'")
    return next((LoggedRun(r.info.run_id, exp.name, r.info.start_time, dict(r.data.tags), dict(r.data.params),
                           dict(r.data.metrics)) for r in found), None)


# --- sweeps: one parent run per sweep, a history point per checkpoint ----------------------


SWEEP_TAG = "evalkit.sweep"
EVALUATION_KEY_TAG = "evalkit.evaluation_key"


def sweep_parent(uri: str, experiment: str, name: str, tags: Mapping[str, str]) -> tuple[str, dict[str, set[int]]]:
    """(run id, {metric key: steps it already holds}) of the parent run of sweep `name` in
    `experiment`: the one a previous sweep of that name left (a re-run nightly adds its points to
    the same curves), else a new one. It is marked RUNNING until `end_sweep`."""
    if "'" in name or "`" in name:
        raise EvalkitError(f"sweep name {name!r} cannot contain quotes")
    c = client(uri)
    with calling(f"cannot open the sweep's parent run in MLflow experiment {experiment!r}", uri):
        exp_id = _experiment_id(c, uri, experiment)
        found = c.search_runs([exp_id], max_results=1, order_by=["attributes.start_time DESC"],
                              filter_string=f"tags.`{SWEEP_TAG}` = '{name}'")
        if found:
            run_id = found[0].info.run_id
            c.update_run(run_id, status="RUNNING")
            for k, v in tags.items():
                c.set_tag(run_id, k, v)
            held = {k: {m.step for m in c.get_metric_history(run_id, k)} for k in found[0].data.metrics}
            return run_id, held
        run = c.create_run(exp_id, run_name=f"sweep:{name}", tags={SWEEP_TAG: name, **tags})
        return run.info.run_id, {}


def log_points(uri: str, run_id: str, values: Mapping[str, float], step: int, when_unix: float) -> None:
    """`values` on run `run_id` at training step `step`: MLflow's chart view draws each key over
    the steps a sweep logged."""
    from mlflow.entities import Metric

    c = client(uri)
    points = [Metric(k, float(v), _ms(when_unix), step) for k, v in values.items()]
    with calling(f"cannot log the sweep's step {step} to MLflow run {run_id}", uri):
        for i in range(0, len(points), 500):
            c.log_batch(run_id, metrics=points[i:i + 500])


def log_sweep_files(uri: str, run_id: str, folder: Path, files: Iterable[Path]) -> None:
    """The sweep's record and report as artifacts of its parent run (under `sweep/`)."""
    c = client(uri)
    with calling(f"cannot upload the sweep's files to MLflow run {run_id}", uri):
        for f in files:
            if f.is_file() and not f.is_symlink() and f.resolve().is_relative_to(folder.resolve()):
                c.log_artifact(run_id, str(f), artifact_path="sweep")


def end_sweep(uri: str, run_id: str, status: str = "FINISHED") -> None:
    c = client(uri)
    with calling(f"cannot close the sweep's parent run {run_id}", uri):
        c.set_terminated(run_id, status)


# --- tags and reports ----------------------------------------------------------------------


def set_tags(uri: str, run_id: str, tags: Mapping[str, str]) -> None:
    """Sets `tags` on MLflow run `run_id` (an unknown run is an error)."""
    c = client(uri)
    with calling(f"cannot tag MLflow run {run_id}", uri):
        for k, v in tags.items():
            c.set_tag(run_id, k, v)


def delete_tag(uri: str, run_id: str, key: str) -> None:
    c = client(uri)
    with calling(f"cannot tag MLflow run {run_id}", uri):
        c.delete_tag(run_id, key)


def log_report(uri: str, run_id: str, report_dir: Path, status: str, tags: Mapping[str, str]) -> bool:
    """The report becomes artifacts and tags of MLflow run `run_id`; True when it became the
    run's verdict.

    Every report sets `evalkit.report.last` to its status (pass | regressed | incomparable). A pass
    or regressed report also sets `evalkit.verdict` and `tags` (the baseline it was judged against)
    and its files go to `report/`. An incomparable report never replaces a verdict: when the run
    already holds `evalkit.verdict` pass or regressed, that tag, its baseline tags and the `report/`
    artifacts stay, and the incomparable report goes to `report-incomparable/` (returns False);
    on a run without such a verdict it is logged like any other (`evalkit.verdict=incomparable`).
    """
    c = client(uri)
    with calling(f"cannot log the report to MLflow run {run_id}", uri):
        held = c.get_run(run_id).data.tags.get(VERDICT_TAG)
        keep = status == "incomparable" and held in ("pass", "regressed")
        c.log_artifacts(run_id, str(report_dir), artifact_path="report-incomparable" if keep else "report")
        for k, v in ({} if keep else {VERDICT_TAG: status, **tags}).items():
            c.set_tag(run_id, k, v)
        c.set_tag(run_id, LAST_REPORT_TAG, status)
    return not keep


# --- analyses across runs (evalkit correlate) -----------------------------------------------


def log_analysis(uri: str, experiment: str, run_name: str, folder: Path, *, tags: Mapping[str, str],
                 params: Mapping[str, object], metrics: Mapping[str, float]) -> str:
    """A FINISHED run of its own in `experiment` holding an analysis of other runs: `params`,
    `metrics`, `tags` and every regular file under `folder` (links are never followed) as artifacts.
    Returns its MLflow run id."""
    import time

    from mlflow.entities import Metric, Param, RunTag

    c = client(uri)
    with calling(f"cannot log {run_name} to MLflow experiment {experiment!r}", uri, TrackingError):
        exp_id = _experiment_id(c, uri, experiment)
        run_id = c.create_run(exp_id, run_name=run_name).info.run_id
        now = _ms(time.time())
        c.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                    params=[Param(k, str(v)[:6000]) for k, v in params.items()],
                    tags=[RunTag(k, str(v)) for k, v in tags.items()])
        base = folder.resolve()
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink() and path.resolve().is_relative_to(base):
                rel = path.relative_to(folder).parent.as_posix()
                c.log_artifact(run_id, str(path), artifact_path=None if rel == "." else rel)
        c.set_terminated(run_id, "FINISHED")
    return run_id


# --- results added to an existing run (evalkit listen) -----------------------------------------


def log_metrics(uri: str, run_id: str, values: Mapping[str, float]) -> None:
    """`values` as metrics of the existing MLflow run `run_id` (step 0, now). Logging a key again
    adds a newer value, which the MLflow UI shows."""
    import time

    from mlflow.entities import Metric

    c = client(uri)
    now = _ms(time.time())
    points = [Metric(k, float(v), now, 0) for k, v in values.items()]
    with calling(f"cannot log metrics to MLflow run {run_id}", uri, TrackingError):
        for i in range(0, len(points), 500):
            c.log_batch(run_id, metrics=points[i:i + 500])


def log_table(uri: str, run_id: str, rows: list[dict], artifact_file: str) -> None:
    """`rows` as an MLflow table (mlflow.load_table reads it back) of the existing run `run_id`."""
    import pandas as pd

    c = client(uri)
    with calling(f"cannot log table {artifact_file} to MLflow run {run_id}", uri, TrackingError):
        c.log_table(run_id, data=pd.DataFrame(rows), artifact_file=artifact_file)


def log_files(uri: str, run_id: str, files: Iterable[Path], artifact_path: str) -> None:
    """Plain files (never links) as artifacts of the existing run `run_id`, under `artifact_path`."""
    c = client(uri)
    with calling(f"cannot upload files to MLflow run {run_id}", uri, TrackingError):
        for f in files:
            if f.is_file() and not f.is_symlink():
                c.log_artifact(run_id, str(f), artifact_path=artifact_path)
