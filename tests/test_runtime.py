"""Thread control: the cores really available (affinity, cgroup v1/v2 quotas) and how they are shared."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from report_gen import runtime


def _v2(tmp_path, cpu_max: dict[str, str], cgroup_line: str = "0::/user.slice/job"):
    root = tmp_path / "cgroup"
    for rel, text in cpu_max.items():
        d = root / rel
        d.mkdir(parents=True, exist_ok=True)
        (d / "cpu.max").write_text(text + "\n")
    (root / "user.slice" / "job").mkdir(parents=True, exist_ok=True)
    proc = tmp_path / "proc_cgroup"
    proc.write_text(cgroup_line + "\n")
    return str(root), str(proc)


def _v1(tmp_path, quota: int, period: int = 100000, controllers: str = "cpu,cpuacct", rel: str = "/docker/abc"):
    root = tmp_path / "cgroup"
    d = root / controllers / rel.strip("/")
    d.mkdir(parents=True)
    (d / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (d / "cpu.cfs_period_us").write_text(f"{period}\n")
    proc = tmp_path / "proc_cgroup"
    proc.write_text(f"12:memory:/docker/abc\n4:{controllers}:{rel}\n0::/\n")
    return str(root), str(proc)


def test_v2_quota_of_own_cgroup(tmp_path):
    root, proc = _v2(tmp_path, {"user.slice/job": "150000 100000"})
    assert runtime.cgroup_cpu_limit(root, proc) == pytest.approx(1.5)
    assert runtime.available_cores(root, proc, affinity=8) == 1  # 1.5 CPUs: rounded down


def test_v2_unlimited_and_parent_limit(tmp_path):
    root, proc = _v2(tmp_path, {"user.slice/job": "max 100000", "user.slice": "300000 100000"})
    assert runtime.cgroup_cpu_limit(root, proc) == pytest.approx(3.0)  # the tighter ancestor counts
    assert runtime.available_cores(root, proc, affinity=8) == 3
    assert runtime.available_cores(root, proc, affinity=2) == 2  # affinity is tighter still


def test_v2_no_limit_anywhere(tmp_path):
    root, proc = _v2(tmp_path, {"user.slice/job": "max 100000"})
    assert runtime.cgroup_cpu_limit(root, proc) is None
    assert runtime.available_cores(root, proc, affinity=6) == 6


def test_v2_namespace_root_is_the_mount(tmp_path):
    """In a container /proc/self/cgroup says "0::/" and the quota sits on the mount itself."""
    root, proc = _v2(tmp_path, {"": "200000 100000"}, cgroup_line="0::/")
    assert runtime.available_cores(root, proc, affinity=16) == 2


def test_v1_quota(tmp_path):
    root, proc = _v1(tmp_path, quota=250000)
    assert runtime.cgroup_cpu_limit(root, proc) == pytest.approx(2.5)
    assert runtime.available_cores(root, proc, affinity=32) == 2


def test_v1_unlimited_quota_and_tiny_quota(tmp_path):
    root, proc = _v1(tmp_path, quota=-1)
    assert runtime.available_cores(root, proc, affinity=4) == 4
    root2, proc2 = _v1(tmp_path / "b", quota=20000)  # 0.2 CPU: still one core
    assert runtime.available_cores(root2, proc2, affinity=4) == 1


def test_missing_or_garbage_files(tmp_path):
    assert runtime.cgroup_cpu_limit(str(tmp_path / "none"), str(tmp_path / "none")) is None
    root, proc = _v2(tmp_path, {"user.slice/job": "garbage"})
    assert runtime.available_cores(root, proc, affinity=3) == 3


def test_plan_shares_cores_and_respects_omp():
    assert runtime.plan(None, cores=4, environ={}) == runtime.Plan(cores=4, jobs=4, threads=1)
    assert runtime.plan(1, cores=4, environ={}) == runtime.Plan(cores=4, jobs=1, threads=4)
    assert runtime.plan(2, cores=4, environ={}) == runtime.Plan(cores=4, jobs=2, threads=2)
    assert runtime.plan(1, cores=4, environ={"OMP_NUM_THREADS": "2"}).threads == 2  # the user's cap
    assert runtime.plan(1, cores=2, environ={"OMP_NUM_THREADS": "16"}).threads == 2  # never more than cores
    assert runtime.plan(8, cores=2, environ={}).threads == 1
    for p in (runtime.plan(j, cores=c, environ={}) for j in (None, 1, 2, 3) for c in (1, 2, 3, 8)):
        assert p.jobs * p.threads <= max(p.cores, p.jobs)


def test_configure_sets_torch_threads_in_a_fresh_process():
    code = ("import torch; from report_gen import runtime; p = runtime.configure(1); "
            "import os; print(p.threads, torch.get_num_threads(), os.environ['OMP_NUM_THREADS'])")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    threads, torch_threads, omp = out.split()
    assert threads == torch_threads == omp == "1"
    env.pop("OMP_NUM_THREADS")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    threads, torch_threads, omp = map(int, out.split())
    assert threads == torch_threads == omp == runtime.available_cores()


def test_configure_limits_numpy_blas_loaded_before_the_plan():
    """numpy (and its OpenBLAS, which starts a thread per core of the machine) is imported before the CLI
    knows --jobs: the plan must still reach it. One job per available core leaves one BLAS thread each."""
    code = ("import json, numpy, threadpoolctl; from report_gen import runtime; "
            "p = runtime.configure(runtime.available_cores()); "
            "print(json.dumps([p.threads, [i['num_threads'] for i in threadpoolctl.threadpool_info() "
            "if i['user_api'] == 'blas']]))")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    threads, blas = json.loads(out)
    assert threads == 1 and blas and set(blas) == {1}


_HEAP_PROBE = """
import sys, numpy as np
from report_gen import runtime
applied = runtime.tune_allocator() if sys.argv[1] == "tuned" else None
a = np.ones(20 << 20, dtype=np.uint8)  # a 20 MB temporary, as the readers make by the dozen
address = a.ctypes.data
heap = [tuple(int(x, 16) for x in line.split()[0].split("-")) for line in open("/proc/self/maps") if "[heap]" in line]
print(applied, any(lo <= address < hi for lo, hi in heap))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and /proc/self/maps are Linux's")
def test_tuned_allocator_serves_large_temporaries_from_the_heap():
    """Untuned, glibc maps a fresh 20 MB block from the system for the array (and unmaps it when freed:
    page faults for every such array); tuned (the CLI's process), it comes from the heap, to be reused."""
    def probe(mode):
        done = subprocess.run([sys.executable, "-c", _HEAP_PROBE, mode], capture_output=True, text=True, check=True)
        return done.stdout.split()

    assert probe("plain") == ["None", "False"]
    assert probe("tuned") == ["True", "True"]


def test_the_cli_makes_its_plan_before_numpy_loads_its_blas(tmp_path):
    """`report-gen diagnose` plans threads before importing numpy, so OpenBLAS starts with the plan's
    thread count from the environment (no threadpoolctl needed in the CLI)."""
    from builders.event_builders import make_scalar_event, make_version_event, write_records

    write_records(tmp_path / "run" / "events.out.tfevents.1",
                  [make_version_event()] + [make_scalar_event("train/loss", s, 1.0 / (s + 1), 1.7e9 + s) for s in range(50)])
    code = textwrap.dedent("""
        import sys, report_gen.cli as cli
        from report_gen import runtime
        seen, real = [], runtime.configure
        def spy(jobs=None):
            seen.append("numpy" in sys.modules)
            return real(jobs)
        runtime.configure = spy
        cli.main(["diagnose", sys.argv[1], "-o", sys.argv[2], "-q", "--jobs", "2"])
        import threadpoolctl
        print(seen, sorted({i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"}))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run"), str(tmp_path / "out")],
                          capture_output=True, text=True, env=env)
    assert done.stdout.strip().splitlines()[-1] == "[False] [1]", (done.stdout, done.stderr)
