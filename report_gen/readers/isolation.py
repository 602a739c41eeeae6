"""--isolate: each checkpoint is first opened in a worker process with CPU, memory and time limits.

Why: the checkpoint reader leans on third-party parsers (torch's zip reader and weights-only
unpickler, zipfile, safetensors, numpy). The pre-scan of `pickle_guard` removes the crashes and
bombs known today, but a parser bug found tomorrow (a C++ assertion, a stack overflow, a hang)
would kill or freeze the whole report. In a worker, any crash, hang or memory blow-up on one file
is one "unreadable" Problem naming what happened, and the rest of the report is kept.

How: a `multiprocessing` forkserver, started once with torch and the checkpoint reader imported
(the one slow step: a torch import), forks a worker that serves file after file; before each file
the worker sets its limits, runs `open_checkpoint` on it and reports the outcome through a pipe:

* memory: RLIMIT_AS = the worker's address space before the file + the file's size (torch maps
  it) + `MEMORY_BYTES`; a MemoryError or a failed allocation is reported as the memory limit;
* CPU: RLIMIT_CPU = what the worker used so far + `CPU_SECONDS` (+ 1 s per 64 MiB of file);
* wall time: the parent kills the worker after `WALL_SECONDS` (+ 1 s per 32 MiB of file).

A worker that crashed, hung or hit a limit is replaced by a fresh one for the next file.

The worker only *vets* the file: a checkpoint the worker could open is then opened again in the
parent (the same deterministic code on the same bytes, the file's identity checked between the
two), because tensors are read lazily later and cannot cross a process boundary; a file the worker
refused (a CheckpointError) is not parsed again in the parent at all. Tensor reads in the parent are
report_gen's own bounded byte reads or copies out of a checked mapping, not third-party parsing.

Not a sandbox: the worker has the parent's file-system and network access. With --trust-pickles
nothing is isolated (vetting would run the file's code twice); trusted files are read in process.

Cost (benchmarks/bench_hostile.py isolate, README-hostile.md): the forkserver start once per
process (a torch import), then a second open per checkpoint (the worker's) and a pipe round trip. That is why it is opt-in (`--isolate`), recommended
for artifacts of untrusted pull requests in CI, where one crash otherwise costs the whole report.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from report_gen.core import ProblemKind

MEMORY_BYTES = 2 << 30
CPU_SECONDS = 60
WALL_SECONDS = 120

_PRELOAD = ["torch", "report_gen.readers.checkpoint"]


@dataclass(frozen=True)
class Verdict:
    """What a worker made of one file: `ok`, or the CheckpointError's (kind, problem, severity)."""

    ok: bool
    kind: str = ""
    problem: str = ""
    severity: str | None = None


def limits_for(size: int) -> tuple[int, int, float]:
    """(extra address space bytes, CPU seconds, wall seconds) for a file of `size` bytes."""
    return size + MEMORY_BYTES, CPU_SECONDS + size // (64 << 20), WALL_SECONDS + size / (32 << 20)


def _default_open(path: str) -> Any:
    from report_gen.readers.checkpoint import open_checkpoint

    return open_checkpoint(path)


def _address_space() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _set_limits(extra_bytes: int, cpu_seconds: int) -> None:
    """Soft limits for the next file, counted from what the worker has used so far (soft limits
    can be raised again for the file after, up to the inherited hard limits)."""
    import resource

    def soft(which: int, value: int) -> None:
        hard = resource.getrlimit(which)[1]
        resource.setrlimit(which, (value if hard == resource.RLIM_INFINITY else min(value, hard), hard))

    try:
        base = _address_space()
        if base:
            soft(resource.RLIMIT_AS, base + extra_bytes)
        soft(resource.RLIMIT_CPU, int(_cpu_seconds()) + 1 + cpu_seconds)
    except (ValueError, OSError):  # pragma: no cover - limits refused: the wall-time kill remains
        pass


def _open_one(path: str, extra_bytes: int, opener: Callable[[str], Any]) -> Verdict:
    from report_gen.readers.checkpoint import CheckpointError

    try:
        opener(path)
        return Verdict(True)
    except CheckpointError as exc:
        return Verdict(False, exc.kind.value, exc.problem, exc.severity)
    except MemoryError:
        return Verdict(False, ProblemKind.UNREADABLE.value, "the reader ran out of its memory limit "
                                                            f"({extra_bytes >> 20:,} MiB beyond its start)")
    except BaseException as exc:  # noqa: BLE001 - reported, the parent decides
        last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        where = f" at {os.path.basename(last[0].filename)}:{last[0].lineno}" if last else ""
        return Verdict(False, ProblemKind.UNREADABLE.value, f"the reader failed ({type(exc).__name__}{where})")


def _serve(conn: Any, opener: Callable[[str], Any]) -> None:
    """The worker: (path, extra bytes, CPU seconds) in, a Verdict out, until None or the pipe closes."""
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        path, extra_bytes, cpu_seconds = job
        _set_limits(extra_bytes, cpu_seconds)
        conn.send(_open_one(path, extra_bytes, opener))


@contextlib.contextmanager
def _without_main():
    """While a worker starts: multiprocessing would re-run the parent's __main__ in it (the user's
    script, if the API is called from one without a __main__ guard, or stdin); the worker needs
    only this module, so that step is left out."""
    from multiprocessing import spawn

    original = spawn.get_preparation_data

    def preparation(name: str) -> dict:
        data = original(name)
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
        return data

    spawn.get_preparation_data = preparation
    try:
        yield
    finally:
        spawn.get_preparation_data = original


def _input_size(path: str) -> int:
    """Bytes of a checkpoint file, or of the files directly in a model folder (0 when unreadable)."""
    try:
        if os.path.isdir(path):
            with os.scandir(path) as entries:
                return sum(e.stat().st_size for e in entries if e.is_file())
        return os.stat(path).st_size
    except OSError:
        return 0


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class Isolation:
    """Vets checkpoints in a worker process; one instance per reading of a run's checkpoints.

    One worker (forked from the forkserver) serves file after file, each under its own limits; a
    worker that crashed, hung or hit a limit is replaced for the next file. `opener(path)` is what
    the worker runs (open_checkpoint by default; tests pass a module-level function that crashes).
    Raises RuntimeError at construction where forkserver is unavailable. Use as a context manager
    or call `close`.
    """

    def __init__(self, opener: Callable[[str], Any] = _default_open) -> None:
        if sys.platform == "win32" or "forkserver" not in multiprocessing.get_all_start_methods():
            raise RuntimeError("--isolate needs a POSIX system (multiprocessing forkserver)")
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(_PRELOAD)
        self._opener = opener
        self._worker: Any = None
        self._conn: Any = None

    def __enter__(self) -> "Isolation":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        ours, theirs = self._ctx.Pipe(duplex=True)
        self._worker = self._ctx.Process(target=_serve, args=(theirs, self._opener), daemon=True)
        with _without_main():
            self._worker.start()
        theirs.close()
        self._conn = ours

    def _discard(self) -> int | None:
        """End the current worker (killed if still running); its exit code."""
        worker, self._worker = self._worker, None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if worker is None:
            return None
        if worker.is_alive():
            worker.kill()
        worker.join()
        return worker.exitcode

    def vet(self, path: str) -> Verdict:
        """Open `path` in the worker; the Verdict (a crash, hang or limit is a not-ok Verdict)."""
        extra, cpu, wall = limits_for(_input_size(path))
        if self._worker is None or not self._worker.is_alive():
            self._discard()
            self._start()
        hung = False
        try:
            self._conn.send((path, extra, cpu))
            if self._conn.poll(wall):
                verdict = self._conn.recv()
            else:
                verdict, hung = None, True
        except (EOFError, OSError):  # the worker died before answering
            verdict = None
        if verdict is not None:
            return verdict
        if not hung:
            self._worker.join(10)  # dead: the forkserver reports its exit status shortly
        code = self._discard()
        if hung:
            return Verdict(False, ProblemKind.UNREADABLE.value,
                           f"the reader did not finish within {wall:.0f} s in an isolated worker (killed); not read")
        if code is not None and code < 0:
            why = _signal_name(-code)
            if -code == getattr(signal, "SIGXCPU", -1):
                why += f", over its {cpu} s CPU limit"
            elif -code in (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGILL):
                why += ", a crash in a parser"
            return Verdict(False, ProblemKind.UNREADABLE.value, f"the reader was killed by {why} in an isolated "
                                                                f"worker; not read")
        return Verdict(False, ProblemKind.UNREADABLE.value, f"the reader exited with status {code} in an isolated "
                                                            f"worker; not read")

    def close(self) -> None:
        """Stop the worker (the forkserver itself ends with this process)."""
        if self._worker is not None and self._worker.is_alive() and self._conn is not None:
            try:
                self._conn.send(None)
                self._worker.join(5)
            except OSError:
                pass
        self._discard()


__all__ = ["CPU_SECONDS", "MEMORY_BYTES", "WALL_SECONDS", "Isolation", "Verdict", "limits_for"]
