"""Finished runs as data, wherever they live: the RUN spec grammar, named baselines, LoadedRun.

A RUN spec (compare, report, baseline) is, in this order:
- a local run folder (summary.json + utterances.jsonl + audio/, see evalkit.record);
- `tag:NAME`: the run tagged as the named baseline NAME (`evalkit baseline set`);
- `latest:EXPERIMENT`: the newest FINISHED run of that MLflow experiment, other than the candidate;
- a 32-hex run id: an MLflow run id, else summary.json's `run_id` (the evalkit run id, found by
  the MLflow tag evalkit.run_id); both are 32 hex digits, so the MLflow id is tried first.
Every MLflow call goes through the gateway, evalkit.tracking: MLflow runs are downloaded once into
its one cache of runs (`runs/<MLflow run id>/`, shared with --reference-run); logged artifacts never
change, so the cached copy is always the run.

Named baselines are the tag `evalkit.baseline.NAME=true`, one key per name, so a run can be the
baseline of several names at once (`nightly` and `release-1.2`). A name is per suite (tag
`evalkit.suite`): the ko-base and en-base nightlies each have their own `nightly`. `baseline set`
moves the tag: one run per suite holds a name, and re-pointing it to an older run (a rollback) works.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path

from . import record, tracking
from . import suite as suite_mod
from .errors import EvalkitError
from .references import reference_digest
from .types import Row
from .untrusted import inside, is_run_id

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
BASELINE_TAG = "evalkit.baseline.{}"


@dataclass(frozen=True)
class LoadedRun:
    summary: record.RunRecord
    rows: list[Row]
    audio_dir: Path | None
    mlflow_run_id: str | None
    source: str  # how it was named and found, for messages and the report
    tracking_uri: str | None = None  # where mlflow_run_id lives

    @property
    def label(self) -> str:
        return f"{self.summary.model_name} ({self.summary.run_id[:8]})"

    def audio_path(self, row: Row) -> Path | None:
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
    return run.tracking_uri or run.summary.tracking.uri


def load_run(spec: str, tracking_uri: str | None = None, exclude_run_id: str | None = None,
             with_audio: bool = True, suite: str | None = None) -> LoadedRun:
    """`exclude_run_id` and `suite` (the candidate's) steer latest: and tag: to a fitting baseline."""
    folder = Path(spec)
    if folder.is_dir():
        summary, rows = record.load(folder)
        audio = folder / "audio"
        return LoadedRun(summary, rows, audio if audio.is_dir() else None, summary.tracking.run_id,
                         f"folder:{folder.resolve()}", summary.tracking.uri)
    uri = tracking_uri or tracking.default_uri()
    if spec.startswith("tag:"):
        run_id = find_baseline(spec[4:], uri, suite)
    elif spec.startswith("latest:"):
        run_id = tracking.find_latest(uri, spec[7:], exclude_run_id)
    elif is_run_id(spec):
        run_id = spec
    else:
        raise EvalkitError(f"run {spec!r} is neither a run folder, an MLflow run id, summary.json's run_id, "
                           "tag:NAME nor latest:EXPERIMENT")
    return _from_mlflow(spec, run_id, uri, with_audio)


def _from_mlflow(spec: str, run_id: str, uri: str, with_audio: bool) -> LoadedRun:
    wanted = [record.SUMMARY, record.TABLE_JSONL] + (["audio"] if with_audio else [])
    # A run whose every utterance failed logged no audio.
    mlflow_run_id, dest = tracking.fetch_run(uri, run_id, wanted, optional=["audio"])
    if mlflow_run_id == spec:
        source = f"mlflow:{mlflow_run_id}"
    elif spec == run_id:  # found by its evalkit run id
        source = f"evalkit run {spec} -> mlflow:{mlflow_run_id}"
    else:
        source = f"{spec} -> mlflow:{mlflow_run_id}"
    summary, rows = record.load(dest)
    audio = dest / "audio"
    return LoadedRun(summary, rows, audio if audio.is_dir() else None, mlflow_run_id, source, uri)


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise EvalkitError(f"baseline name {name!r} must be letters, digits, '_' or '-' (at most 64)")
    return name


def _tagged(name: str, uri: str, suite: str | None) -> list[str]:
    """MLflow run ids holding baseline NAME (of `suite`, when given), newest first."""
    found = tracking.find_tagged(uri, BASELINE_TAG.format(_check_name(name)),
                                 what=f"cannot search MLflow for baseline {name!r}")
    # The few holders of a name are filtered here: suite names need no quoting in a filter string.
    return [r.run_id for r in found if suite is None or r.tags.get("evalkit.suite") == suite]


def find_baseline(name: str, uri: str, suite: str | None = None) -> str:
    runs = _tagged(name, uri, suite)
    if not runs:
        of = f" of suite {suite!r}" if suite else ""
        raise EvalkitError(f"no run{of} is tagged as baseline {name!r} at {tracking.redact(uri)} "
                           f"(set one with: evalkit baseline set RUN --name {name})")
    return runs[0]


def set_baseline(run: LoadedRun, name: str, uri: str) -> list[str]:
    """Tags `run` as baseline NAME of its suite and takes the tag off the run(s) of that suite that
    held it; returns those."""
    if run.mlflow_run_id is None:
        raise EvalkitError(f"{run.source} was never logged to MLflow, so it cannot be a named baseline "
                           f"(upload it first with: evalkit sync FOLDER)")
    key = BASELINE_TAG.format(_check_name(name))
    previous = [r for r in _tagged(name, uri, run.summary.suite.name) if r != run.mlflow_run_id]
    tracking.set_tags(uri, run.mlflow_run_id, {key: "true"})  # first: an unknown run moves nothing
    for run_id in previous:
        tracking.delete_tag(uri, run_id, key)
    return previous


VERDICT_TAG = tracking.VERDICT_TAG
LAST_REPORT_TAG = tracking.LAST_REPORT_TAG


def log_report(run: LoadedRun, report_dir: Path, status: str, tags: dict[str, str], uri: str) -> bool:
    """The report becomes artifacts and tags of the candidate's MLflow run; True when it became the
    run's verdict (an incomparable report never replaces a pass/regressed one: tracking.log_report)."""
    if run.mlflow_run_id is None:
        raise EvalkitError(f"{run.source} was never logged to MLflow: its report stays local")
    return tracking.log_report(uri, run.mlflow_run_id, report_dir, status, tags)


def suite_folder(summary: record.RunRecord) -> Path | None:
    """The folder of the suite a run used: where it was at run time, else the built-in suite of
    that name, but only if its content digest still matches (gates and references must belong to
    the suite that was scored)."""
    for candidate in (summary.suite.source, summary.suite.name):
        if not candidate:
            continue
        try:
            folder = suite_mod.resolve(candidate)
            if suite_mod.load(str(folder)).digest == summary.suite.digest:
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


def reference_paths(summary: record.RunRecord, ids=()) -> dict[str, Path]:
    """Reference audio per utterance id, for listening: the suite's refs, else a --reference-run folder.

    summary.json comes from whoever hands over the run folder, so a `folder` or `mlflow`
    reference it names is used only when its wavs reproduce the run's recorded reference digest:
    only the very audio the run was scored against is ever copied into a report (a summary
    edited to name /etc gives no references). The wavs are looked up for the utterance ids of
    the suite (the first `params.limit` of them, as the run did), or else for `ids` (the run's
    rows). The suite's own refs need no such check: suite_folder() accepts a suite only when its
    content digest matches, and the suite loader keeps refs inside the suite.
    """
    ref = summary.reference
    if ref.kind in ("folder", "mlflow"):
        if ref.kind == "folder":
            folder = Path(ref.location)
            if not folder.is_absolute():
                return {}  # the run records the resolved folder; anything else was edited
            folder = folder / "audio" if (folder / record.SUMMARY).is_file() else folder
        else:
            if not is_run_id(ref.location):
                return {}
            folder = tracking.run_cache(ref.location) / "audio"  # where references.resolve fetched it
        return _verified(folder, (_suite_ids(summary), ids), ref.digest)
    suite = suite_folder(summary)
    if suite is None:
        return {}
    return {u.id: u.reference for u in suite_mod.load(str(suite)).utterances if u.reference is not None}


def _suite_ids(summary: record.RunRecord) -> list[str]:
    folder = suite_folder(summary)
    if folder is None:
        return []
    limit = summary.params.get("limit")
    suite = suite_mod.load(str(folder))
    with contextlib.suppress(TypeError, ValueError):
        suite = suite.limited(int(limit) if limit is not None else None)
    return [u.id for u in suite.utterances]
