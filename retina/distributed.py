"""Scale-out on Dask distributed: one computation, on one process or on a cluster, with one signature.

Every entry point that can use a cluster takes ``client=`` (a
:class:`dask.distributed.Client`; ``None`` runs in this process, unchanged):
:func:`retina.sweep.sweep`, :func:`retina.attribute`,
:func:`retina.datasets.simulate_dataset` and
:func:`retina.train.train_ensemble`.  The pattern is stumpy's
``stumped(client, ...)`` beside ``stump(...)``: the client is the only extra.

How work is shared (the same for every entry point):

* large read-only inputs (models, movies) go to the workers once,
  :meth:`~dask.distributed.Client.scatter` ed with ``broadcast=True``;
* the work is cut into *items* (a sweep's grid point, a batch of attribution
  windows, a simulation chunk) and items are grouped into tasks sized to
  about :data:`TARGET_TASK_S` seconds from the measured time of the first
  ones (:func:`run_items`), at most a few tasks per worker in flight;
* the driver (this process) is the only writer: results come back as tasks
  finish and the caller writes them (into its resumable ``.partial`` file);
* a worker that dies has its tasks rerun elsewhere by the scheduler; a task
  that raises stops the run with an error naming the item, after everything
  already finished has been handed to the caller.

Dask is imported only when a client is used: ``import retina`` never imports it.
Workers set :func:`retina.set_num_threads` so that N workers on a machine
never run N x cores threads, and warm the kernels once (:class:`RetinaWorker`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ._progress import progress_bar

__all__ = ["require", "check_client", "local_client", "connect", "client_from_options", "run_items", "map_in_order",
           "RetinaWorker", "worker_count", "TARGET_TASK_S"]

log = logging.getLogger("retina.distributed")

EXTRA = "install the 'dist' extra: pip install 'retina[dist]'"
TARGET_TASK_S = 1.0
"""Seconds of work a task should hold: above this, the scheduler's per-task cost (a few ms) is negligible."""


def require():
    """The ``distributed`` module, or an error that names the extra to install."""
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(f"running on a Dask cluster needs dask.distributed, which is not installed: {EXTRA}") \
            from exc
    return distributed


def check_client(client, name: str = "client"):
    """``None`` or a running :class:`dask.distributed.Client`; anything else is refused by name."""
    if client is None:
        return None
    dist = require()
    if not isinstance(client, dist.Client):
        raise ValueError(f"{name} must be a dask.distributed.Client or None, got {type(client).__name__}")
    if client.status not in ("running", "connecting", "newly-created"):
        raise ValueError(f"{name} is not connected (status {client.status!r}): open a new Client")
    return client


def worker_count(client) -> int:
    """Worker threads the scheduler knows now (at least 1)."""
    workers = client.scheduler_info().get("workers", {})
    return max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))


# ----------------------------------------------------------------- workers
def _warm():
    """Compile (or load from Numba's cache) the kernels a worker will use, once."""
    import numpy as np

    from .attribution import attribute
    from .model import RetinaCNN

    net = RetinaCNN.random(2, seed=0, channels=(2, 2), kernel_sizes=(3, 3), history=4, frame_shape=(8, 8))
    movie = np.random.default_rng(0).standard_normal((6, 8, 8)).astype(np.float32)
    net.predict(movie)
    attribute(net, movie, n_steps=2)


def RetinaWorker(threads: int | None = None, warm: bool = True):  # noqa: N802 (a class factory)
    """A :class:`distributed.WorkerPlugin` that sets the kernels' thread count and warms them on each worker.

    ``threads``: :func:`retina.set_num_threads` on the worker (default: the
    environment variable ``RETINA_THREADS``, else the machine's cores divided
    by ``RETINA_WORKERS_PER_HOST``, else 1: one kernel thread per Dask
    thread, so a cluster sized the usual way, one Dask thread per core, is
    never oversubscribed).
    """
    dist = require()

    class _RetinaWorker(dist.WorkerPlugin):  # type: ignore[name-defined]
        name = "retina"

        def __init__(self, threads, warm):
            self.threads, self.warm = threads, warm

        def setup(self, worker):
            from ._threads import _ceiling, set_num_threads

            n = self.threads or _default_threads()
            set_num_threads(min(n, _ceiling()))
            if self.warm:
                _warm()

    return _RetinaWorker(threads, warm)


def _default_threads() -> int:
    """Kernel threads per task on a worker: ``RETINA_THREADS``, else the cores over ``RETINA_WORKERS_PER_HOST``,
    else 1 (each Dask thread stands for one core, the usual sizing of a Dask cluster: never oversubscribed)."""
    n = os.environ.get("RETINA_THREADS", "")
    if n.isdigit() and int(n) > 0:
        return int(n)
    per_host = os.environ.get("RETINA_WORKERS_PER_HOST", "")
    if per_host.isdigit() and int(per_host) > 0:
        return max(1, (os.cpu_count() or 1) // int(per_host))
    return 1


def prepare(client, threads: int | None = None, warm: bool = True) -> None:
    """Register :func:`RetinaWorker` on ``client``'s workers (idempotent: registered once per client)."""
    if getattr(client, "_retina_prepared", False):
        return
    client.register_plugin(RetinaWorker(threads, warm), name="retina")
    client._retina_prepared = True


def local_client(workers: int, *, threads: int | None = None, dashboard: bool = True, warm: bool = True):
    """An embedded :class:`~distributed.LocalCluster` of ``workers`` single-threaded processes and its client.

    Each worker runs the kernels on ``threads`` threads (default: this
    machine's cores // ``workers``, at least 1), so the cluster never
    oversubscribes the cores.  Close the client and ``client.cluster`` when
    done (or use :func:`client_from_options`).
    """
    from ._validate import check_int

    workers = check_int("workers", workers, minimum=1)
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    dist = require()
    env = {"NUMBA_NUM_THREADS": str(threads), "RETINA_WORKERS_PER_HOST": str(workers),
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "RETINA_NO_PROGRESS": "1"}
    cluster = dist.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                dashboard_address=":0" if dashboard else None, env=env,
                                silence_logs=logging.ERROR)
    client = dist.Client(cluster)
    prepare(client, threads, warm)
    return client


def connect(scheduler: str, *, timeout: float = 10.0, warm: bool = True):
    """A client of an existing scheduler: a ``tcp://host:port`` style address or a scheduler file's path."""
    dist = require()
    if not isinstance(scheduler, str) or not scheduler:
        raise ValueError(f"scheduler must be an address like tcp://host:8786 or a scheduler file, got {scheduler!r}")
    try:
        if os.path.isfile(scheduler):
            client = dist.Client(scheduler_file=scheduler, timeout=f"{timeout}s")
        elif "://" in scheduler or ":" in scheduler:
            client = dist.Client(scheduler, timeout=f"{timeout}s")
        else:
            raise ValueError(f"scheduler must be an address like tcp://host:8786 or an existing scheduler file, "
                             f"got {scheduler!r} (no such file)")
    except (OSError, TimeoutError) as exc:
        raise RuntimeError(f"cannot reach the Dask scheduler at {scheduler!r} within {timeout:g} s: {exc}") \
            from None
    prepare(client, None, warm)
    return client


@contextlib.contextmanager
def client_from_options(scheduler: str | None = None, workers: int | None = None, *,
                        echo: Callable[[str], Any] | None = None) -> Iterator[Any]:
    """The client the command line's ``--scheduler`` / ``--workers`` ask for (``None`` when neither is given).

    An embedded cluster started here is closed on exit; a client of an
    existing scheduler is closed but the scheduler and its workers are not.
    The dashboard's address is passed to ``echo`` (and logged).
    """
    if scheduler is not None and workers is not None:
        raise ValueError("give either --scheduler (an existing cluster) or --workers (a local one), not both")
    if scheduler is None and workers is None:
        yield None
        return
    client = connect(scheduler) if scheduler is not None else local_client(workers)  # type: ignore[arg-type]
    try:
        n = len(client.scheduler_info().get("workers", {}))
        line = f"dask: {n} workers at {client.scheduler.address}; dashboard {client.dashboard_link}"
        if echo is not None:
            echo(line)
        else:
            log.info(line)
        yield client
    finally:
        cluster = getattr(client, "cluster", None) if scheduler is None else None
        client.close()
        if cluster is not None:
            cluster.close()


# ----------------------------------------------------------------- running items
def _run_batch(fn, batch, shared):
    """On a worker: the items of one task, each timed (the driver sizes later tasks from these times)."""
    from ._threads import apply

    apply()
    out = []
    for item in batch:
        t0 = time.perf_counter()
        out.append((item, fn(item, *shared), time.perf_counter() - t0))
    return out


def run_items(client, fn: Callable, items: Sequence, *, shared: Sequence = (),
              on_result: Callable[[Any, Any], None], label: Callable[[Any], str] = str,
              desc: str = "", unit: str = "item", progress: bool = False, target_s: float = TARGET_TASK_S,
              max_batch: int | None = None, in_flight: int | None = None) -> dict:
    """Run ``fn(item, *shared)`` for every item on the cluster; ``on_result(item, value)`` on the driver.

    ``shared`` values are scattered to every worker once.  The first tasks
    hold one item each; later ones group as many items as fit in
    ``target_s`` seconds by the mean item time measured so far (at most
    ``max_batch``, and never fewer tasks than two per worker thread while
    items remain).  At most ``in_flight`` tasks (default 2 per worker thread
    plus 1) are submitted at once, so results never pile up.  Results arrive
    in completion order.  A task that raises stops the run: no new task is
    started, the tasks already running finish and are handed to
    ``on_result``, then a :class:`RuntimeError` names the failed item.

    Returns a dict of timings: ``tasks``, ``items``, ``item_s`` (mean item
    time on the workers), ``task_overhead_s`` (worker-thread seconds the run
    occupied beyond its items' own time, per task: scheduling, transfers and
    the idle tail) and ``wall_s``.
    """
    dist = require()
    items = list(items)
    t_start = time.perf_counter()
    stats = {"tasks": 0, "items": len(items), "item_s": float("nan"), "task_overhead_s": float("nan"),
             "wall_s": 0.0}
    if not items:
        return stats
    threads = worker_count(client)
    in_flight = in_flight or 2 * threads + 1
    futures_shared = [client.scatter([v], broadcast=True, hash=False)[0] for v in shared]  # one object each
    pending = list(items)
    item_times: list[float] = []
    ac = dist.as_completed()
    started: dict[str, list] = {}

    def next_batch():
        if not item_times:
            size = 1
        else:
            mean = sum(item_times) / len(item_times)
            size = max(1, math.ceil(target_s / max(mean, 1e-9)))
            size = min(size, max(1, math.ceil(len(pending) / (2 * threads))))
        if max_batch:
            size = min(size, max_batch)
        batch, pending[:] = pending[:size], pending[size:]
        return batch

    def submit():
        batch = next_batch()
        fut = client.submit(_run_batch, fn, batch, futures_shared, pure=False)
        started[fut.key] = batch
        ac.add(fut)
        stats["tasks"] += 1

    for _ in range(min(in_flight, len(pending))):
        submit()
    bar = progress_bar(range(len(items)), total=len(items), desc=desc, unit=unit, enabled=progress)
    bar_update = getattr(bar, "update", None)
    failure = None
    try:
        for fut in ac:
            batch = started.pop(fut.key)
            if fut.status != "finished":
                exc = fut.exception() if fut.status == "error" else RuntimeError(f"task {fut.status}")
                if failure is None:
                    names = ", ".join(label(i) for i in batch)
                    failure = f"{desc or 'task'} failed at {names}: {type(exc).__name__}: {exc}"
                continue
            done = fut.result()
            for item, value, seconds in done:
                item_times.append(seconds)
                on_result(item, value)
            if bar_update is not None:
                bar_update(len(done))
            if pending and failure is None:
                submit()
    finally:
        if hasattr(bar, "close"):
            bar.close()
        for f in futures_shared:
            f.release()
    if failure is not None:
        raise RuntimeError(failure + " (the items that finished were handed over; nothing else was started)")
    stats["wall_s"] = time.perf_counter() - t_start
    stats["item_s"] = sum(item_times) / len(item_times)
    # worker-thread time the run occupied that items did not use, per task (scheduling, transfer, idle tail)
    stats["task_overhead_s"] = max(0.0, stats["wall_s"] * threads - sum(item_times)) / stats["tasks"]
    log.info("%s: %d items in %d tasks on %d worker threads, %.3f s per item, %.1f s", desc, len(items),
             stats["tasks"], threads, stats["item_s"], stats["wall_s"])
    return stats


def map_in_order(client, fn: Callable, items: Sequence, *, shared: Sequence = (), commit: Callable[[Any, Any], None],
                 label: Callable[[Any], str] = str, desc: str = "", unit: str = "item",
                 progress: bool = False) -> None:
    """``commit(item, fn(item, *shared))`` for every item, in the items' order.

    Without a client the items run here, one after the other.  With one they
    run on the cluster (:func:`run_items`) and a result that arrives before
    its predecessors waits for them, so whatever ``commit`` accumulates
    (sums, a stream's state, file writes) sees the same order as in process.
    """
    items = list(items)
    if client is None:
        for item in progress_bar(items, total=len(items), desc=desc, unit=unit, enabled=progress):
            commit(item, fn(item, *shared))
        return
    waiting: dict = {}
    order = iter(items)
    upcoming = [next(order, None)]

    def arrived(item, value):
        waiting[item] = value
        while upcoming[0] is not None and upcoming[0] in waiting:
            commit(upcoming[0], waiting.pop(upcoming[0]))
            upcoming[0] = next(order, None)

    run_items(client, fn, items, shared=shared, on_result=arrived, label=label, desc=desc, unit=unit,
              progress=progress)
