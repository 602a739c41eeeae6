"""Explicit thread control: how many cores this process may really use, and how they are shared.

Called once at CLI/API start (`configure`). Without it torch and BLAS each start a thread per core
they see *on the machine*, whatever the process is allowed: on a shared CI runner (or with a process
pool beside them) the threads fight for the same cores and small matrix products slow down a
hundredfold. The plan:

    cores   = min(os.sched_getaffinity, the cgroup CPU quota)   (the cores actually available)
    jobs    = --jobs, else cores                                 (worker processes of one diagnose)
    threads = cores // jobs, at most OMP_NUM_THREADS when set    (torch intra-op, BLAS, per process)

so jobs x threads never exceeds the cores. The cgroup quota is read from cgroup v2 (`cpu.max`,
"max 100000" or "<quota> <period>") or v1 (`cpu.cfs_quota_us` / `cpu.cfs_period_us`, -1 = none), on
the process's own cgroup and each of its ancestors (the tightest wins); a fractional quota is rounded
down (1.5 CPUs -> 1), never below 1.
"""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from typing import Mapping

CGROUP_ROOT = "/sys/fs/cgroup"
PROC_CGROUP = "/proc/self/cgroup"
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
#: the user's own setting, before `configure` writes the plan into the environment
_USER_ENV = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "")}


@dataclass(frozen=True)
class Plan:
    cores: int  # cores this process may use
    jobs: int  # worker processes
    threads: int  # torch/BLAS threads per process

    def to_dict(self) -> dict[str, int]:
        return {"cores": self.cores, "jobs": self.jobs, "threads_per_process": self.threads}


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _ancestors(mount: str, rel: str) -> list[str]:
    """`mount/rel`, then each parent folder up to and including `mount` itself."""
    parts = [p for p in rel.strip("/").split("/") if p and p != ".."]
    return [os.path.join(mount, *parts[:i]) for i in range(len(parts), -1, -1)]


def _v2_quota(folder: str) -> float | None:
    text = _read(os.path.join(folder, "cpu.max"))
    if not text:
        return None
    fields = text.split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _v1_quota(folder: str) -> float | None:
    quota, period = _read(os.path.join(folder, "cpu.cfs_quota_us")), _read(os.path.join(folder, "cpu.cfs_period_us"))
    try:
        q, p = int(quota or ""), int(period or "")
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def cgroup_cpu_limit(root: str = CGROUP_ROOT, proc_cgroup: str = PROC_CGROUP) -> float | None:
    """The CPU quota of this process's cgroup (in CPUs, possibly fractional), or None when unlimited.

    Every line of /proc/self/cgroup is looked at: "0::/path" is cgroup v2 (files under `root`), a line
    whose controllers include "cpu" is v1 (files under `root`/<controllers>, e.g. cpu,cpuacct). In a
    container the recorded path may not exist below the mount (the namespace root is the mount), so
    the mount itself is always checked too.
    """
    text = _read(proc_cgroup)
    if text is None:
        return None
    limits: list[float] = []
    for line in text.splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, rel = fields
        if controllers == "":
            folders, quota = _ancestors(root, rel), _v2_quota
        elif "cpu" in controllers.split(","):
            mount = next((os.path.join(root, name) for name in (controllers, "cpu,cpuacct", "cpuacct,cpu", "cpu")
                          if os.path.isdir(os.path.join(root, name))), None)
            if mount is None:
                continue
            folders, quota = _ancestors(mount, rel), _v1_quota
        else:
            continue
        limits += [q for q in map(quota, folders) if q is not None]
    return min(limits) if limits else None


def affinity_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def available_cores(root: str = CGROUP_ROOT, proc_cgroup: str = PROC_CGROUP, affinity: int | None = None) -> int:
    """Cores this process may use: the CPU affinity mask, capped by the cgroup quota (rounded down, >= 1)."""
    cores = affinity if affinity is not None else affinity_cores()
    quota = cgroup_cpu_limit(root, proc_cgroup)
    if quota is not None:
        cores = min(cores, max(1, math.floor(quota + 1e-9)))
    return max(1, cores)


def _env_threads(environ: Mapping[str, str]) -> int | None:
    value = environ.get("OMP_NUM_THREADS", "").strip().split(",")[0]
    try:
        n = int(value)
    except ValueError:
        return None
    return n if n >= 1 else None


def plan(jobs: int | None = None, *, cores: int | None = None, environ: Mapping[str, str] | None = None) -> Plan:
    """How `cores` (default: available_cores()) are shared by `jobs` processes (default: one per core).

    threads per process = cores // jobs (>= 1), capped by OMP_NUM_THREADS when it is set; more jobs
    than cores are allowed (the user asked) but then each gets one thread.
    """
    environ = _USER_ENV if environ is None else environ
    cores = available_cores() if cores is None else max(1, int(cores))
    jobs = cores if jobs is None or jobs < 1 else int(jobs)
    threads = max(1, cores // jobs)
    cap = _env_threads(environ)
    if cap is not None:
        threads = min(threads, cap)
    return Plan(cores=cores, jobs=jobs, threads=threads)


_APPLIED: Plan | None = None


def configure(jobs: int | None = None) -> Plan:
    """Decide the plan and apply it to this process: environment variables for libraries not yet
    imported (and for worker processes), torch's intra- and inter-op threads if torch is imported,
    and numpy's BLAS through threadpoolctl when it is installed. Returns the plan."""
    global _APPLIED
    p = plan(jobs)
    for var in _THREAD_VARS:
        os.environ[var] = str(p.threads)
    apply_threads(p.threads)
    _APPLIED = p
    return p


def current() -> Plan:
    """The plan applied by `configure`, else the default plan (not applied)."""
    return _APPLIED if _APPLIED is not None else plan()


def configure_single() -> Plan:
    """One process, one torch/BLAS thread: for a task of a pool that already uses the cores (a sweep
    worker), so that a diagnose inside it starts neither threads nor processes of its own."""
    global _APPLIED
    p = Plan(cores=1, jobs=1, threads=1)
    for var in _THREAD_VARS:
        os.environ[var] = "1"
    apply_threads(1)
    _APPLIED = p
    return p


def ensure_configured(jobs: int | None = None) -> Plan:
    """The API's start (engine.diagnose): `configure(jobs)` unless the CLI (or the caller) already did;
    an explicit `jobs` different from the applied plan's re-plans."""
    if _APPLIED is None or (jobs is not None and jobs != _APPLIED.jobs):
        return configure(jobs)
    return _APPLIED


def apply_threads(threads: int) -> None:
    """Set torch's and BLAS's thread counts in this process (what is already imported)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:  # already set, or inter-op work already started: it keeps its pool
            pass
    if threads >= (os.cpu_count() or 1) or "numpy" not in sys.modules:
        return  # nothing to lower: BLAS starts at most a thread per machine core, or reads the plan when loaded
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a declared dependency
        return
    threadpool_limits(limits=threads, user_api="blas")  # numpy's OpenBLAS, loaded before the plan was made


#: glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: arrays up to this size come from the heap and are reused there: glibc's own ceiling for its dynamic
#: mmap threshold (32 MiB on 64-bit), set from the start instead of learnt after the first frees
MMAP_THRESHOLD = 32 << 20
#: free memory at the top of the heap kept for the next arrays before it is returned to the system
TRIM_THRESHOLD = 128 << 20


def tune_allocator() -> bool:
    """For the CLI's own process (never called by the library API: a host process keeps its allocator).

    The readers and facts make many short-lived arrays of one to a few tens of megabytes (a column of
    a million values is 8 MB). glibc gives each one fresh pages from mmap and unmaps them when freed
    until its dynamic threshold has learnt better, so every array pays its page faults again; that
    was a fifth of reading a 1M-scalar file. Here they come from the heap and are reused. Peak memory
    is unchanged (a freed block is reused, not kept beside a new one) and memory above
    TRIM_THRESHOLD is still returned. True when applied (glibc); a no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # pragma: no cover - no C library to ask
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
