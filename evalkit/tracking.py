"""MLflow logging of a finished local record (evalkit.record).

The embedded default is a sqlite store under ./evalkit-runs with its artifacts beside it, so
nothing needs a server. Any other URI (an `mlflow server`) works the same; an unreachable
server is reported as a TrackingError while the local record stays complete.

Credentials in a URI (`http://user:password@host`) are taken out of it at once
(`adopt_credentials`): they go to MLflow's own variables (MLFLOW_TRACKING_USERNAME/PASSWORD), and
the URI that is printed, recorded in run.json and summary.json is the one without them. Logging is
idempotent: a run whose evalkit run id is already a FINISHED run of the target store is not
logged again (`evalkit sync` repeated, or to a second store, logs each run once per store).
"""

from __future__ import annotations

import base64
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from . import record
from .errors import EvalkitError, TrackingError, first_line
from .untrusted import is_run_id

DEFAULT_ROOT = Path("evalkit-runs")
HEALTH_TIMEOUT_S = 5


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


def _artifact_location(uri: str, experiment: str) -> str | None:
    """Explicit artifact folder beside a sqlite store; servers decide their own."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        return (db.parent / "mlartifacts" / experiment).resolve().as_uri()
    return None


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
    raise TrackingError(f"MLflow server {uri} is unreachable ({redact(reason)})")


def log_run(out_dir: Path, uri: str, experiment: str) -> str:
    """Log the run folder as one MLflow run, unless the store already holds it; returns the MLflow
    run id and notes it in summary.json."""
    uri = adopt_credentials(uri)
    check_reachable(uri)
    _own_files_only(out_dir)
    summary, rows = record.read(out_dir)
    try:
        run_id = find_logged(uri, summary.get("run_id", "")) or _log(out_dir, summary, rows, uri, experiment)
    except TrackingError:
        raise
    except Exception as exc:  # MLflow raises many kinds for a server that goes away
        raise TrackingError(f"logging to MLflow at {uri} failed: "
                            f"{redact(first_line(exc, 200))}") from None
    summary["tracking"] = {"uri": uri, "experiment": experiment, "run_id": run_id}
    record.write_summary(out_dir, summary)
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
        f"tags.`evalkit.run_id` = '{evalkit_run_id}' and attributes.status = 'FINISHED'"))
    return found[0].info.run_id if found else None


def client(uri: str):
    """The one way evalkit opens an MLflow store: fails within seconds on a dead server instead of
    retrying for minutes, and a new sqlite store keeps its artifacts beside its database."""
    import logging

    from mlflow.tracking import MlflowClient

    # Fail within seconds, not after MLflow's default minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    uri = adopt_credentials(uri)
    check_reachable(uri)
    # MLflow announces schema creation and migrations at INFO on every new store: noise here.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        # A new store gets its Default experiment at creation, with artifacts under the current
        # folder (./mlruns/0) unless told otherwise: create it here, with artifacts beside the db.
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        db = Path(uri[len("sqlite:///"):])
        SqlAlchemyStore(uri, (db.parent / "mlartifacts").resolve().as_uri())
    return MlflowClient(tracking_uri=uri)


def _log(out_dir: Path, summary: dict, rows: list[dict], uri: str, experiment: str) -> str:
    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else c.create_experiment(
        experiment, artifact_location=_artifact_location(uri, experiment))
    tags = dict(summary["tags"])
    run = c.create_run(exp_id, tags=tags, run_name=summary["run_name"])
    run_id = run.info.run_id
    try:
        _fill(c, run_id, out_dir, summary, rows)
    except Exception:
        try:  # leave no run looking alive; the local record is the truth
            c.set_terminated(run_id, "FAILED")
        except Exception:
            pass
        raise
    c.set_terminated(run_id, "FINISHED")
    return run_id


def _fill(client, run_id: str, out_dir: Path, summary: dict, rows: list[dict]) -> None:
    import pandas as pd
    from mlflow.entities import Metric, Param

    ts = int(summary["finished_unix"] * 1000)
    params = [Param(k, str(v)[:6000]) for k, v in summary["params"].items()]
    metrics = [Metric(k, float(v), ts, 0) for k, v in summary["aggregates"].items()]
    for i in range(0, max(len(metrics), len(params)), 100):
        client.log_batch(run_id, metrics=metrics[i:i + 100], params=params[i:i + 100], tags=[])
    for name in (record.SUMMARY, record.TABLE_JSONL, record.TABLE_CSV):
        client.log_artifact(run_id, str(out_dir / name))
    if (out_dir / "audio").is_dir():
        client.log_artifacts(run_id, str(out_dir / "audio"), artifact_path="audio")
    client.log_table(run_id, data=pd.DataFrame(rows), artifact_file="utterances_table.json")
