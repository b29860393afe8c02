"""One thread setting for every compiled kernel: Numba's parallel loops and ``scipy.fft``'s workers.

:func:`set_num_threads` is the library's single knob.  It sets Numba's thread
count in the calling thread and the number of workers the kernels pass to
``scipy.fft``; :func:`apply` re-applies it in another thread (Numba's setting is
per thread), which is what a Dask worker's task does before it runs a kernel.
The default is every thread Numba was started with (``NUMBA_NUM_THREADS``,
normally the number of cores).
"""

from __future__ import annotations

import contextlib
import threading

from ._validate import check_int

__all__ = ["set_num_threads", "get_num_threads", "num_threads", "apply", "run_chunks"]

_setting: int | None = None
_pool = None
_pool_size = 0
_pool_lock = threading.Lock()


def _ceiling() -> int:
    from numba import config

    return int(config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]


_local = threading.local()


def get_num_threads() -> int:
    """The thread count the kernels use (Numba and ``scipy.fft`` alike); 1 inside :func:`serial`."""
    if getattr(_local, "serial", False):
        return 1
    return _setting if _setting is not None else _ceiling()


def set_num_threads(n: int | None) -> int:
    """Use ``n`` threads in every kernel (``None``: back to the default); returns the previous setting.

    ``n`` may not exceed ``NUMBA_NUM_THREADS`` (fixed when Numba starts: set
    that environment variable to go higher).
    """
    global _setting
    previous = get_num_threads()
    if n is None:
        _setting = None
    else:
        _setting = check_int("n", n, minimum=1, maximum=_ceiling())
    apply()
    return previous


def apply() -> None:
    """Make the current thread follow the setting (Numba keeps its thread count per thread)."""
    import numba

    numba.set_num_threads(get_num_threads())


@contextlib.contextmanager
def num_threads(n: int | None):
    """``with num_threads(1): ...``: a temporary setting."""
    previous = _setting
    set_num_threads(n)
    try:
        yield
    finally:
        set_num_threads(previous)


@contextlib.contextmanager
def serial():
    """``with serial(): ...``: the kernels this thread calls run on this thread alone (the setting of other
    threads is unchanged); for work that is itself one of several pieces on the kernel threads."""
    import numba

    before = getattr(_local, "serial", False)
    _local.serial = True
    numba.set_num_threads(1)
    try:
        yield
    finally:
        _local.serial = before
        numba.set_num_threads(get_num_threads())


CHUNKS_PER_THREAD = 4
""":func:`run_chunks` cuts its range into about this many chunks per thread."""


def _get_pool(n: int):
    """The kernels' thread pool, with at least ``n`` threads (grown, never shrunk)."""
    global _pool, _pool_size
    from concurrent.futures import ThreadPoolExecutor

    with _pool_lock:
        if _pool is None or _pool_size < n:
            _pool, _pool_size = ThreadPoolExecutor(max_workers=n, thread_name_prefix="retina-kernel"), n
        return _pool


def run_chunks(n: int, fn, threads: int | None = None, *, stop: threading.Event | None = None) -> None:
    """Call ``fn(lo, hi)`` over the chunks of ``range(n)`` on :func:`get_num_threads` threads (or ``threads``).

    ``fn`` must release the GIL (a ``nogil`` Numba kernel) to run in parallel.
    The range is cut into about :data:`CHUNKS_PER_THREAD` chunks per thread,
    taken one at a time by whichever thread is free: a core slowed by another
    process takes fewer chunks instead of holding up the rest.  The calling
    thread takes chunks too, beside ``threads - 1`` pool threads, so a region
    wakes one thread fewer and the caller, already running, starts at once
    (on a loaded machine a woken thread can wait a scheduler slice for a
    core).  The first exception a chunk raises is re-raised here, after the
    other threads have stopped taking chunks.  A serial kernel run this way
    also compiles faster than a Numba ``prange`` loop around it.

    ``stop``, when given, is set as soon as a chunk raises (a Ctrl-C reaches
    the calling thread's chunk), so that an ``fn`` that loops over many items
    can check it between items and the others' chunks end early.
    """
    k = min(threads or get_num_threads(), n)
    if k <= 1:
        if n > 0:
            fn(0, n)
        return
    chunk = -(-n // (CHUNKS_PER_THREAD * k))
    starts = iter(range(0, n, chunk))
    lock = threading.Lock()
    failed: list[BaseException] = []

    def take():
        while True:
            with lock:
                lo = None if failed else next(starts, None)
            if lo is None:
                return
            try:
                fn(lo, min(n, lo + chunk))
            except BaseException as exc:
                with lock:
                    failed.append(exc)
                if stop is not None:
                    stop.set()
                return

    pool = _get_pool(k - 1)
    helpers = [pool.submit(take) for _ in range(k - 1)]
    take()
    for f in helpers:
        f.result()
    if failed:
        raise failed[0]
