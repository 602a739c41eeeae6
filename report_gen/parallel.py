"""A process pool for the independent pieces of ONE diagnose (runs, or the tensors of one run's checkpoints).

- Workers are forked (no re-import of torch; the parent's read-only state is shared copy-on-write),
  each with the thread budget of `runtime.plan` (jobs x threads <= cores).
- Results come back in the order of the inputs, whatever order the workers finish in, so the report
  does not depend on scheduling. Workers return compact results (numbers, findings, details), never
  open files or tensors.
- A worker that dies (a segfault in a library, the OOM killer, os._exit) loses only its own task: the
  tasks the broken pool did not finish are retried one by one in fresh single-worker pools, and a task
  that kills its worker again becomes a `Crashed` outcome, which the caller turns into a Problem of that
  file or run. An exception raised by the task itself is returned the same way (tasks should not raise).
- A worker may start processes of its own (they are not daemonic): `--isolate` vets checkpoints in a
  limited child; a forkserver the parent had started is forgotten in the worker (`_forget_parents_forkserver`).
- A pool only pays when the work is large enough: `worth_a_pool(total_bytes, n)` is the measured rule
  (benchmarks/bench_parallel.py: forking and collecting costs ~0.1-0.3 s on a busy 2-core machine).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Sequence

#: below this much input per diagnose (bytes of the files to read), pieces are processed in this process
MIN_POOL_BYTES = 32 << 20
#: ... and a piece must be at least this large on average for a pool to pay (a fork and a result pickle each)
MIN_PIECE_BYTES = 1 << 20

_IN_WORKER = False


@dataclass
class Crashed:
    """A task whose worker died, or that raised: `message` says which."""

    message: str


def in_worker() -> bool:
    """True inside a pool worker (nested pools are never started: the cores are already in use)."""
    return _IN_WORKER


def worth_a_pool(total_bytes: int, pieces: int, jobs: int) -> bool:
    """Whether `pieces` independent tasks over `total_bytes` of input should go to a pool of `jobs`."""
    return (jobs >= 2 and pieces >= 2 and not _IN_WORKER and sys.platform.startswith("linux")
            and total_bytes >= MIN_POOL_BYTES and total_bytes / pieces >= MIN_PIECE_BYTES)


def _forget_parents_forkserver() -> None:
    """A forked worker cannot use a forkserver its parent started (--isolate's, `readers.isolation`): that
    server is not the worker's child (multiprocessing's waitpid on it fails), so every checkpoint vetted
    in the worker would fail. Forget it (and close the worker's copy of the descriptor that keeps it
    alive): the worker starts its own forkserver when it needs one."""
    try:
        from multiprocessing import forkserver

        server = forkserver._forkserver
    except (ImportError, AttributeError):  # pragma: no cover - no forkserver on this platform
        return
    alive = getattr(server, "_forkserver_alive_fd", None)
    if getattr(server, "_forkserver_pid", None) is None:
        return
    for attr in ("_forkserver_address", "_forkserver_alive_fd", "_forkserver_authkey", "_forkserver_pid"):
        if hasattr(server, attr):
            setattr(server, attr, None)
    if alive is not None:
        try:
            os.close(alive)
        except OSError:
            pass


def _init(threads: int) -> None:
    global _IN_WORKER
    _IN_WORKER = True
    _forget_parents_forkserver()
    from report_gen import runtime

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    runtime.apply_threads(threads)


def _call(func: Callable[[Any], Any], item: Any) -> Any:
    try:
        return func(item)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent as this task's outcome
        return Crashed(f"{type(exc).__name__}: {exc}")


def _pool(workers: int, threads: int):
    import multiprocessing  # imported when a pool is made: one run never needs them
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"),
                               initializer=_init, initargs=(threads,))


def run_tasks(func: Callable[[Any], Any], items: Sequence[Any], jobs: int, threads: int = 1) -> list[Any]:
    """func(item) for every item in a pool of `jobs` forked workers; results in item order, a task whose
    worker died (twice) or that raised is a `Crashed`. `func` must be a module-level function."""
    from concurrent.futures.process import BrokenProcessPool

    results: list[Any] = [None] * len(items)
    pending: list[int] = []
    with _pool(min(jobs, len(items)), threads) as pool:
        futures = [pool.submit(_call, func, item) for item in items]
        for i, future in enumerate(futures):
            try:
                results[i] = future.result()
            except BrokenProcessPool:
                pending.append(i)
    for i in pending:  # the pool broke: every unfinished task again, alone, to find the one that kills
        try:
            with _pool(1, threads) as alone:
                results[i] = alone.submit(_call, func, items[i]).result()
        except BrokenProcessPool:
            results[i] = Crashed("the worker process died (killed by a signal or the out-of-memory killer, "
                                 "or a crash in a native library)")
    return results
