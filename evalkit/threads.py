"""One BLAS thread per evalkit process: the parallelism of a run is its lanes (synthesis, Whisper,
the metric workers), one core each, not threads inside numpy's matrix products.

OpenBLAS starts a thread per core in every process that loads it (numpy's and SciPy's copies),
and its idle threads spin: on 2 cores, 20 clips of Piper + Whisper + DNSMOS spent 4.8 CPU
seconds of 51 in the spare BLAS threads of the main process and the DNSMOS worker, on the core
Whisper needed. With one thread the work is the same and every value identical (the products
are split across threads by output block, never within a sum).
"""

from __future__ import annotations

import contextlib


def one_blas_thread() -> None:
    """Limit every BLAS library loaded so far to one thread (call again after loading more)."""
    with contextlib.suppress(Exception):  # no threadpoolctl, or a BLAS it cannot drive: the defaults stand
        from threadpoolctl import threadpool_limits

        threadpool_limits(1, user_api="blas")
