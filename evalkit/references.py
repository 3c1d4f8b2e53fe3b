"""Reference audio for reference-based metrics: from the suite, or from another run.

`--reference-run SPEC` compares each utterance with the same utterance of another run, which is
how a nightly job measures drift from the last good checkpoint. SPEC is, in this order:
- a local run folder (holding summary.json and audio/<id>.wav);
- any folder of <utterance id>.wav files;
- a 32-hex run id: an MLflow run id, else an evalkit run id (summary.json's `run_id`), whose
  `audio/` artifacts are fetched through the MLflow gateway (evalkit.tracking.fetch_run) into its
  one cache of runs, the one `evalkit compare`/`report` use: a run downloaded for either is not
  downloaded again.
Without it, a suite's own references (`reference:` per utterance, or refs/<id>.wav) are used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from . import tracking
from .cache import sha256_file
from .errors import EvalkitError
from .types import Suite
from .untrusted import is_run_id


@dataclass(frozen=True)
class References:
    kind: str  # where they came from, for provenance: suite | folder | mlflow
    location: str  # the suite's name, the folder's absolute path, the MLflow run id
    paths: Mapping[str, Path]  # utterance id -> wav

    @property
    def source(self) -> str:
        return f"{self.kind}:{self.location}"

    @property
    def digest(self) -> str:
        return reference_digest(self.paths)


def reference_digest(paths: Mapping[str, Path]) -> str:
    """What a run records as evalkit.reference_digest: every utterance id with its wav's sha256.
    runs.reference_paths recomputes it to play only the very audio a run was scored against."""
    h = hashlib.sha256()
    for uid in sorted(paths):
        h.update(uid.encode() + b"\0" + bytes.fromhex(sha256_file(paths[uid])))
    return h.hexdigest()


def from_suite(suite: Suite) -> References | None:
    paths = {u.id: u.reference for u in suite.utterances if u.reference is not None}
    return References("suite", suite.name, paths) if paths else None


def resolve(spec: str, suite: Suite, tracking_uri: str) -> References:
    folder = Path(spec)
    if folder.is_dir():
        audio = folder / "audio" if (folder / "summary.json").is_file() else folder
        return _from_folder(audio, suite, "folder", str(folder.resolve()))
    if is_run_id(spec):
        return _from_mlflow(spec, suite, tracking_uri)
    raise EvalkitError(f"--reference-run {spec!r} is neither a folder nor a run id (MLflow's or summary.json's)")


def _from_folder(folder: Path, suite: Suite, kind: str, location: str) -> References:
    paths = {u.id: folder / f"{u.id}.wav" for u in suite.utterances if (folder / f"{u.id}.wav").is_file()}
    if not paths:
        raise EvalkitError(f"{folder} holds no <utterance id>.wav for any utterance of suite {suite.name}")
    return References(kind, location, paths)


def _from_mlflow(run_id: str, suite: Suite, uri: str) -> References:
    # Recorded by its MLflow run id: runs.reference_paths finds the audio in the same cache.
    mlflow_run_id, dest = tracking.fetch_run(uri, run_id, ["audio"])
    return _from_folder(dest / "audio", suite, "mlflow", mlflow_run_id)
