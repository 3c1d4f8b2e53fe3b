"""Finished runs as data, wherever they live: the one place that reads runs back from MLflow.

A RUN spec (compare, report, baseline) is, in this order:
- a local run folder (summary.json + utterances.jsonl + audio/, see evalkit.record);
- `tag:NAME`: the run tagged as the named baseline NAME (`evalkit baseline set`);
- `latest:EXPERIMENT`: the newest FINISHED run of that MLflow experiment, other than the candidate;
- a 32-hex MLflow run id.
MLflow runs are downloaded once into the evalkit cache (`runs/<run id>/`): logged artifacts never
change, so the cached copy is always the run.

Named baselines are the tag `evalkit.baseline.NAME=true`, one key per name, so a run can be the
baseline of several names at once (`nightly` and `release-1.2`). A name is per suite (tag
`evalkit.suite`): the ko-base and en-base nightlies each have their own `nightly`. `baseline set`
moves the tag: one run per suite holds a name, and re-pointing it to an older run (a rollback) works.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import record, tracking
from . import suite as suite_mod
from .cache import cache_dir
from .errors import EvalkitError, first_line
from .references import reference_digest
from .untrusted import inside, is_run_id

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
BASELINE_TAG = "evalkit.baseline.{}"


@dataclass(frozen=True)
class LoadedRun:
    summary: dict
    rows: list[dict]
    audio_dir: Path | None
    mlflow_run_id: str | None
    source: str  # how it was named and found, for messages and the report
    tracking_uri: str | None = None  # where mlflow_run_id lives

    @property
    def label(self) -> str:
        return f"{self.summary.get('params', {}).get('model', '?')} ({self.summary.get('run_id', '?')[:8]})"

    def audio_path(self, row: dict) -> Path | None:
        """The clip a row names, only ever a regular file of the run's own audio folder
        (record.audio_file's rule): a row edited to name another place, a clip that is a symlink
        out of the folder, or an audio folder that is itself a link gives None."""
        if self.audio_dir is None:
            return None
        try:
            path = record.audio_file(self.audio_dir.parent, row)
        except (EvalkitError, OSError, RuntimeError):  # refused, or a symlink loop
            return None
        return path if path is not None and path.is_file() else None


def recorded_uri(run: LoadedRun) -> str | None:
    """The tracking URI the run itself was logged to: the natural home of its baselines."""
    return run.tracking_uri or (run.summary.get("tracking") or {}).get("uri")


def load_run(spec: str, tracking_uri: str | None = None, exclude_run_id: str | None = None,
             with_audio: bool = True, suite: str | None = None) -> LoadedRun:
    """`exclude_run_id` and `suite` (the candidate's) steer latest: and tag: to a fitting baseline."""
    folder = Path(spec)
    if folder.is_dir():
        summary, rows = record.read(folder)
        t = summary.get("tracking") or {}
        audio = folder / "audio"
        return LoadedRun(summary, rows, audio if audio.is_dir() else None, t.get("run_id"),
                         f"folder:{folder.resolve()}", t.get("uri"))
    uri = tracking_uri or tracking.default_uri()
    if spec.startswith("tag:"):
        run_id = find_baseline(spec[4:], uri, suite)
    elif spec.startswith("latest:"):
        run_id = find_latest(spec[7:], uri, exclude_run_id)
    elif is_run_id(spec):
        run_id = spec
    else:
        raise EvalkitError(f"run {spec!r} is neither a run folder, an MLflow run id, tag:NAME nor latest:EXPERIMENT")
    source = f"mlflow:{run_id}" if run_id == spec else f"{spec} -> mlflow:{run_id}"
    return _from_mlflow(run_id, uri, source, with_audio)


def _from_mlflow(run_id: str, uri: str, source: str, with_audio: bool) -> LoadedRun:
    dest = cache_dir("runs", run_id)
    wanted = [record.SUMMARY, record.TABLE_JSONL] + (["audio"] if with_audio else [])
    missing = [name for name in wanted if not (dest / name).exists()]
    if missing:
        c = tracking.client(uri)
        try:
            c.get_run(run_id)
        except Exception as exc:  # MLflow raises many kinds for an unknown run
            raise EvalkitError(f"MLflow run {run_id} not found at {uri} ({first_line(exc, 200)})") from None
        for name in missing:
            _download(c, run_id, name, dest, required=name != "audio")
    summary, rows = record.read(dest)
    audio = dest / "audio"
    return LoadedRun(summary, rows, audio if audio.is_dir() else None, run_id, source, uri)


def _download(c, run_id: str, name: str, dest: Path, required: bool) -> None:
    # Into a temporary folder first: an interrupted download must not pass for a cached run.
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        try:
            c.download_artifacts(run_id, name, tmp)
        except Exception as exc:
            if not required:  # a run whose every utterance failed has no audio
                return
            raise EvalkitError(f"MLflow run {run_id} has no {name} artifact: not an evalkit run? "
                               f"({first_line(exc, 200)})") from None
        os.replace(Path(tmp) / name, dest / name)


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise EvalkitError(f"baseline name {name!r} must be letters, digits, '_' or '-' (at most 64)")
    return name


def _tagged(c, name: str, suite: str | None) -> list:
    key = BASELINE_TAG.format(_check_name(name))
    experiments = [e.experiment_id for e in c.search_experiments()]
    if not experiments:
        return []
    found = c.search_runs(experiments, filter_string=f"tags.`{key}` = 'true'", order_by=["attributes.start_time DESC"])
    # The few holders of a name are filtered here: suite names need no quoting in a filter string.
    return [r for r in found if suite is None or r.data.tags.get("evalkit.suite") == suite]


def find_baseline(name: str, uri: str, suite: str | None = None) -> str:
    c = tracking.client(uri)
    try:
        runs = _tagged(c, name, suite)
    except EvalkitError:
        raise
    except Exception as exc:
        raise EvalkitError(f"cannot search MLflow at {uri} for baseline {name!r} ({first_line(exc, 200)})") from None
    if not runs:
        of = f" of suite {suite!r}" if suite else ""
        raise EvalkitError(f"no run{of} is tagged as baseline {name!r} at {uri} "
                           f"(set one with: evalkit baseline set RUN --name {name})")
    return runs[0].info.run_id


def find_latest(experiment: str, uri: str, exclude_run_id: str | None) -> str:
    c = tracking.client(uri)
    try:
        exp = c.get_experiment_by_name(experiment)
        runs = [] if exp is None else c.search_runs(
            [exp.experiment_id], filter_string="attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"], max_results=10)
    except Exception as exc:
        raise EvalkitError(f"cannot search MLflow experiment {experiment!r} at {uri} "
                           f"({first_line(exc, 200)})") from None
    if exp is None:
        raise EvalkitError(f"no MLflow experiment named {experiment!r} at {uri}")
    for r in runs:
        if r.info.run_id != exclude_run_id:
            return r.info.run_id
    raise EvalkitError(f"MLflow experiment {experiment!r} has no finished run other than the candidate")


def set_baseline(run: LoadedRun, name: str, uri: str) -> list[str]:
    """Tags `run` as baseline NAME of its suite and takes the tag off the run(s) of that suite that
    held it; returns those."""
    if run.mlflow_run_id is None:
        raise EvalkitError(f"{run.source} was never logged to MLflow, so it cannot be a named baseline "
                           f"(upload it first with: evalkit sync FOLDER)")
    key = BASELINE_TAG.format(_check_name(name))
    c = tracking.client(uri)
    try:
        c.get_run(run.mlflow_run_id)
        suite = (run.summary.get("suite") or {}).get("name")
        previous = [r.info.run_id for r in _tagged(c, name, suite) if r.info.run_id != run.mlflow_run_id]
        c.set_tag(run.mlflow_run_id, key, "true")
        for run_id in previous:
            c.delete_tag(run_id, key)
    except Exception as exc:
        raise EvalkitError(f"cannot tag MLflow run {run.mlflow_run_id} at {uri} ({first_line(exc, 200)})") from None
    return previous


VERDICT_TAG = "evalkit.verdict"
LAST_REPORT_TAG = "evalkit.report.last"


def log_report(run: LoadedRun, report_dir: Path, status: str, tags: dict[str, str], uri: str) -> bool:
    """The report becomes artifacts and tags of the candidate's MLflow run; True when it became the
    run's verdict.

    Every report sets `evalkit.report.last` to its status (pass | regressed | incomparable). A pass
    or regressed report also sets `evalkit.verdict` and `tags` (the baseline it was judged against)
    and its files go to `report/`. An incomparable report never replaces a verdict: when the run
    already holds `evalkit.verdict` pass or regressed, that tag, its baseline tags and the `report/`
    artifacts stay, and the incomparable report goes to `report-incomparable/` (returns False);
    on a run without such a verdict it is logged like any other (`evalkit.verdict=incomparable`).
    """
    c = tracking.client(uri)
    try:
        held = c.get_run(run.mlflow_run_id).data.tags.get(VERDICT_TAG)
        keep = status == "incomparable" and held in ("pass", "regressed")
        c.log_artifacts(run.mlflow_run_id, str(report_dir),
                        artifact_path="report-incomparable" if keep else "report")
        for k, v in ({} if keep else {VERDICT_TAG: status, **tags}).items():
            c.set_tag(run.mlflow_run_id, k, v)
        c.set_tag(run.mlflow_run_id, LAST_REPORT_TAG, status)
    except Exception as exc:
        raise EvalkitError(f"cannot log the report to MLflow run {run.mlflow_run_id} at {uri} "
                           f"({first_line(exc, 200)})") from None
    return not keep


def suite_folder(summary: dict) -> Path | None:
    """The folder of the suite a run used: where it was at run time, else the built-in suite of
    that name, but only if its content digest still matches (gates and references must belong to
    the suite that was scored)."""
    suite = summary.get("suite") or {}
    for candidate in (suite.get("source"), suite.get("name")):
        if not candidate:
            continue
        try:
            folder = suite_mod.resolve(candidate)
            if suite_mod.load(str(folder)).digest == suite.get("digest"):
                return folder
        except EvalkitError:
            continue
    return None


def _verified(folder: Path, id_sets, digest: str) -> dict[str, Path]:
    """The <id>.wav of `folder` for one of `id_sets`, only when they reproduce `digest` exactly as
    references.reference_digest computed it at run time: then they are, byte for byte, the audio
    the run was scored against. A wav that resolves outside the folder is never read."""
    if not digest or not folder.is_dir():
        return {}
    base = folder.resolve()
    tried = set()
    for ids in id_sets:
        ids = tuple(dict.fromkeys(str(i) for i in ids))
        if not ids or ids in tried:
            continue
        tried.add(ids)
        paths = {}
        for uid in ids:
            try:
                path = inside(base, f"{uid}.wav", "reference audio")
            except (EvalkitError, OSError, RuntimeError):  # outside the folder, or a symlink loop
                continue
            if path.is_file():
                paths[uid] = path
        try:
            if paths and reference_digest(paths) == digest:
                return paths
        except OSError:
            continue
    return {}


def reference_paths(summary: dict, ids=()) -> dict[str, Path]:
    """Reference audio per utterance id, for listening: the suite's refs, else a --reference-run folder.

    summary.json comes from whoever hands over the run folder, so a `folder:` or `mlflow:`
    reference it names is used only when its wavs reproduce the run's recorded
    `evalkit.reference_digest`: only the very audio the run was scored against is ever copied
    into a report (a summary edited to "folder:/etc" gives no references). The wavs are looked up
    for the utterance ids of the suite (the first `params.limit` of them, as the run did), or else
    for `ids` (the run's rows). The suite's own refs need no such check: suite_folder() accepts a
    suite only when its content digest matches, and the suite loader keeps refs inside the suite.
    """
    ref = str((summary.get("params") or {}).get("reference") or "")
    if ref.startswith(("folder:", "mlflow:")):
        digest = str((summary.get("tags") or {}).get("evalkit.reference_digest") or "")
        if ref.startswith("folder:"):
            folder = Path(ref[len("folder:"):])
            if not folder.is_absolute():
                return {}  # the run records the resolved folder; anything else was edited
            folder = folder / "audio" if (folder / record.SUMMARY).is_file() else folder
        else:
            run_id = ref[len("mlflow:"):]
            if not is_run_id(run_id):
                return {}
            folder = cache_dir("reference-runs", run_id) / "audio"
        return _verified(folder, (_suite_ids(summary), ids), digest)
    folder = suite_folder(summary)
    if folder is None:
        return {}
    return {u.id: u.reference for u in suite_mod.load(str(folder)).utterances if u.reference is not None}


def _suite_ids(summary: dict) -> list[str]:
    folder = suite_folder(summary)
    if folder is None:
        return []
    limit = (summary.get("params") or {}).get("limit")
    suite = suite_mod.load(str(folder))
    try:
        suite = suite.limited(int(limit) if limit is not None else None)
    except (TypeError, ValueError):
        pass
    return [u.id for u in suite.utterances]
