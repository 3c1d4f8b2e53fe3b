"""MLflow logging of a finished local record (evalkit.record).

The embedded default is a sqlite store under ./evalkit-runs with its artifacts beside it, so
nothing needs a server. Any other URI (an `mlflow server`) works the same; an unreachable
server is reported as a TrackingError while the local record stays complete.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from . import record
from .errors import TrackingError

DEFAULT_ROOT = Path("evalkit-runs")
HEALTH_TIMEOUT_S = 5


def default_uri(root: Path = DEFAULT_ROOT) -> str:
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def _artifact_location(uri: str, experiment: str) -> str | None:
    """Explicit artifact folder beside a sqlite store; servers decide their own."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        return (db.parent / "mlartifacts" / experiment).resolve().as_uri()
    return None


def check_reachable(uri: str) -> None:
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=HEALTH_TIMEOUT_S) as resp:
            if resp.status == 200:
                return
            reason = f"HTTP {resp.status}"
    except (urllib.error.URLError, OSError) as exc:
        reason = str(getattr(exc, "reason", exc))
    raise TrackingError(f"MLflow server {uri} is unreachable ({reason})")


def log_run(out_dir: Path, uri: str, experiment: str) -> str:
    """Log the run folder as one MLflow run; returns the MLflow run id and notes it in summary.json."""
    # Fail within seconds, not after MLflow's default minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    check_reachable(uri)
    summary, rows = record.read(out_dir)
    try:
        run_id = _log(out_dir, summary, rows, uri, experiment)
    except TrackingError:
        raise
    except Exception as exc:  # MLflow raises many kinds for a server that goes away
        raise TrackingError(f"logging to MLflow at {uri} failed: {str(exc).strip().splitlines()[0][:200]}") from None
    summary["tracking"] = {"uri": uri, "experiment": experiment, "run_id": run_id}
    record.write_summary(out_dir, summary)
    return run_id


def _log(out_dir: Path, summary: dict, rows: list[dict], uri: str, experiment: str) -> str:
    import logging

    from mlflow.tracking import MlflowClient

    # MLflow announces schema creation and migrations at INFO on every new store: noise here.
    logging.getLogger("mlflow").setLevel(logging.WARNING)

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(
        experiment, artifact_location=_artifact_location(uri, experiment))
    tags = dict(summary["tags"])
    run = client.create_run(exp_id, tags=tags, run_name=summary["run_name"])
    run_id = run.info.run_id
    try:
        _fill(client, run_id, out_dir, summary, rows)
    except Exception:
        try:  # leave no run looking alive; the local record is the truth
            client.set_terminated(run_id, "FAILED")
        except Exception:
            pass
        raise
    client.set_terminated(run_id, "FINISHED")
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
