"""Where evalkit keeps things it derives once per machine (assembled model files)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    root = os.environ.get("EVALKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "evalkit")
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
