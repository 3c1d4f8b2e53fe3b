"""glibc malloc settings for a process full of ONNX Runtime and CTranslate2 threads.

By default glibc gives each thread an arena of its own and hands freed memory back to the
kernel, so every clip's activations are page-faulted in afresh: Whisper base, one thread, 20
clips took 28.3 s, 7.6 s of it in the kernel (3.1 million page faults). With one arena that
keeps what it frees: 22.1 s, 0.01 s in the kernel, 159 faults. Allocation never changes a
value; it costs some resident memory that is not handed back (peak RSS stays well under
2 GiB, see benchmarks/floor.py).
"""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -2, -3, -8
_done = False


def keep_freed_memory() -> None:
    """Apply once, before the process starts threads (later threads would already have arenas)."""
    global _done
    if _done or not sys.platform.startswith("linux"):
        return
    _done = True
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...): its defaults stand
        return
    for param, value in ((_M_ARENA_MAX, 1), (_M_MMAP_THRESHOLD, 1 << 30), (_M_TRIM_THRESHOLD, 1 << 30),
                         (_M_TOP_PAD, 256 << 20)):
        mallopt(param, value)
