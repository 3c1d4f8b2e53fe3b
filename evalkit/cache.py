"""Content-addressed, per-machine cache: assembled model files and derived results
(transcripts), keyed by the hash of what produced them, so re-scoring never redoes work.

Root: $EVALKIT_CACHE, else $XDG_CACHE_HOME/evalkit, else ~/.cache/evalkit.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .types import Audio


def cache_dir(*parts: str) -> Path:
    root = os.environ.get("EVALKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "evalkit")
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


_DIGESTS: dict[tuple, str] = {}  # (device, inode, size, mtime ns) -> sha256, for this process
_DIGESTS_KEPT = 4096


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes. Remembered for this process while the file's identity, size
    and modification time stay the same: a sweep's evaluation key, the adapter that loads the
    checkpoint and the next suite on the same checkpoint would otherwise each read gigabytes again."""
    st = os.stat(path)
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key in _DIGESTS:
        return _DIGESTS[key]
    h = hashlib.sha256()
    for block in blocks(path):
        h.update(block)
    if len(_DIGESTS) >= _DIGESTS_KEPT:
        _DIGESTS.pop(next(iter(_DIGESTS)))
    _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def blocks(path: str | Path) -> Iterator[bytes]:
    """A file's bytes in 4 MiB blocks: checkpoints and models can be gigabytes."""
    with open(path, "rb") as f:
        yield from iter(lambda: f.read(1 << 22), b"")


def audio_digest(audio: Audio) -> str:
    h = hashlib.sha256(f"{audio.sample_rate}|float32|".encode())
    h.update(np.ascontiguousarray(audio.samples, dtype=np.float32).tobytes())
    return h.hexdigest()


def key(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


class JsonCache:
    """One JSON document per key; a write is atomic, a corrupt entry reads as a miss."""

    def __init__(self, kind: str) -> None:
        self.root = cache_dir(kind)

    def _path(self, k: str) -> Path:
        return self.root / k[:2] / f"{k}.json"

    def get(self, k: str) -> dict | None:
        try:
            return json.loads(self._path(k).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def put(self, k: str, value: dict) -> None:
        path = self._path(k)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, path)
        except OSError:
            pass  # a cache that cannot be written only costs time, never results
