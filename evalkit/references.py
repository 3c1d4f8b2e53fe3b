"""Reference audio for reference-based metrics: from the suite, or from another run.

`--reference-run SPEC` compares each utterance with the same utterance of another run, which is
how a nightly job measures drift from the last good checkpoint. SPEC is, in this order:
- a local run folder (holding summary.json and audio/<id>.wav);
- any folder of <utterance id>.wav files;
- an MLflow run id, whose `audio/` artifacts are downloaded once into the evalkit cache.
Without it, a suite's own references (`reference:` per utterance, or refs/<id>.wav) are used.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .cache import cache_dir, sha256_file
from .errors import EvalkitError, first_line
from .types import Suite
from .untrusted import is_run_id


@dataclass(frozen=True)
class References:
    source: str  # where they came from, for provenance
    paths: Mapping[str, Path]  # utterance id -> wav

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
    return References(f"suite:{suite.name}", paths) if paths else None


def resolve(spec: str, suite: Suite, tracking_uri: str) -> References:
    folder = Path(spec)
    if folder.is_dir():
        audio = folder / "audio" if (folder / "summary.json").is_file() else folder
        return _from_folder(audio, suite, f"folder:{folder.resolve()}")
    if is_run_id(spec):
        return _from_mlflow(spec, suite, tracking_uri)
    raise EvalkitError(f"--reference-run {spec!r} is neither a folder nor an MLflow run id")


def _from_folder(folder: Path, suite: Suite, source: str) -> References:
    paths = {u.id: folder / f"{u.id}.wav" for u in suite.utterances if (folder / f"{u.id}.wav").is_file()}
    if not paths:
        raise EvalkitError(f"{folder} holds no <utterance id>.wav for any utterance of suite {suite.name}")
    return References(source, paths)


def _from_mlflow(run_id: str, suite: Suite, uri: str) -> References:
    dest = cache_dir("reference-runs", run_id)
    if not any(dest.glob("audio/*.wav")):
        from . import tracking

        try:
            tracking.client(uri).download_artifacts(run_id, "audio", str(dest))
        except Exception as exc:  # MLflow raises many kinds: unknown run, unreachable server
            raise EvalkitError(f"cannot fetch the audio of MLflow run {run_id} from {uri}: "
                               f"{first_line(exc, 160)}") from None
    return _from_folder(dest / "audio", suite, f"mlflow:{run_id}")
