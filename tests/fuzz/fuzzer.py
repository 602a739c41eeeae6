"""Fuzz `report-gen diagnose` with mutated event files, torch checkpoints, pickles and safetensors headers.

    python tests/fuzz/fuzzer.py --seconds 1800 [--seed 0] [--findings DIR]   # a long run (not collected by pytest)

tests/test_fuzz.py runs it for ~40 s in CI. Each input is a run folder holding an event file and one
checkpoint (a torch zip, a legacy torch file, a plain pickle or a safetensors file), one or both
mutated: byte flips, insertions, deletions, truncations, extreme integers, splices, and
structure-aware mutations that keep the outer layer valid so the inner one is reached (records
re-framed with valid CRCs, data.pkl edited and the zip rewritten with valid CRCs, stored or
deflated, bomb opcodes spliced into a pickle, safetensors header JSON edited). Every pickle carries
a call of `fuzz_canary.pwn(marker)`. After each input the invariants are checked:

* a clean exit: 0 or 1 with report.json written, or 2 with ONE error line that is an input error
  (an "internal error" is a finding: damage must become a problem, not lose the report);
* bounded time (`--case-seconds`, idle-equivalent, scaled by a reference loop as the tests do)
  and bounded memory (the worker runs under RLIMIT_AS: its start + `--memory-mb`; its peak RSS is
  reported);
* nothing outside -o touched: the input folder and a bystander file (the target of symlinks planted
  as report.json / report.md / report_files in the output folder of every third input) unchanged;
* nothing executed: no canary marker file.

A worker process runs the inputs; the supervisor restarts it after a crash or a hang and records
the input (its files are kept under --findings). The last line printed is a JSON summary.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import random
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
ROOT = TESTS.parent

KINDS = ("events", "torch-zip", "legacy", "pickle", "safetensors")
EXTREMES = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 2**31 - 1, 2**31, 2**32 - 1, 2**63 - 1, 2**64 - 1)
# opcodes that build a lot from a few bytes, or nest: spliced into pickles
BOMB_PIECES = (b"\x8f" * 4096, b"}" * 4096, b"(" * 4096, b")" + b"\x85" * 4096, b")" + b"2\x86" * 64,
               b"]" * 2048 + b"a" * 2047, b"\x8e" + struct.pack("<Q", 1 << 40), b"X\xff\xff\xff\x7f",
               b"cos\nsystem\n", b"\x8c\x02os\x8c\x06system\x93", b"Q", b"h\xff", b"r\xff\xff\xff\xff")


# ---------------------------------------------------------------------------------------------- seeds


def make_seeds(marker: str) -> dict[str, bytes]:
    """Valid inputs of every kind (each pickle carries the canary payload)."""
    import pickle

    import numpy as np
    import torch

    from builders import ckpt_builders as cb
    import fuzz_canary
    from builders.event_builders import (frame, make_hist_event, make_scalar_event, make_text_event, make_version_event)

    records = [make_version_event()]
    for step in range(40):
        loss = float("nan") if step == 33 else 2.0 / (step + 1)
        records.append(make_scalar_event("train/loss", step, loss))
        records.append(make_scalar_event("val/loss", step, 2.5 / (step + 1)))
        if step % 10 == 0:
            records.append(make_hist_event("weight_hist/fc.weight", step, np.linspace(-1, 1, 50) * (step + 1)))
    records.append(make_text_event("notes", 0, "hello"))
    state = cb.tiny_state()
    payload = fuzz_canary.Payload(marker)

    def saved(obj, **kwargs) -> bytes:
        buf = io.BytesIO()
        torch.save(obj, buf, **kwargs)
        return buf.getvalue()

    from safetensors.torch import save as save_safetensors

    return {
        "events": b"".join(frame(r) for r in records),
        "torch-zip": saved({"state_dict": state, "global_step": 7, "evil": payload}),
        "legacy": saved({"state_dict": state, "global_step": 7, "evil": payload}, _use_new_zipfile_serialization=False),
        "pickle": pickle.dumps({"fc.weight": np.ones((4, 4), np.float32), "evil": payload, "step": 7}, protocol=4),
        "safetensors": save_safetensors({k: v.contiguous() for k, v in state.items()}, {"step": "7"}),
    }


# ------------------------------------------------------------------------------------------ mutators


def _bytes_mutation(rng: random.Random, data: bytes, other: bytes) -> bytes:
    data = bytearray(data)
    op = rng.randrange(7)
    n = len(data)
    if n == 0:
        return bytes(rng.randbytes(rng.randrange(1, 64)))
    at = rng.randrange(n)
    if op == 0:  # flip a few bytes
        for _ in range(rng.randrange(1, 9)):
            data[rng.randrange(n)] ^= 1 << rng.randrange(8)
    elif op == 1:  # insert random bytes
        data[at:at] = rng.randbytes(rng.randrange(1, 256))
    elif op == 2:  # delete a range
        del data[at:at + rng.randrange(1, max(2, n // 8))]
    elif op == 3:  # truncate
        del data[rng.randrange(n):]
    elif op == 4:  # duplicate a range
        chunk = data[at:at + rng.randrange(1, 512)]
        where = rng.randrange(n)
        data[where:where] = chunk
    elif op == 5:  # an extreme integer, 1/2/4/8 bytes little-endian
        width = rng.choice((1, 2, 4, 8))
        value = rng.choice(EXTREMES) & ((1 << (8 * width)) - 1)
        data[at:at + width] = value.to_bytes(width, "little")
    else:  # splice a piece of another seed
        start = rng.randrange(max(1, len(other)))
        data[at:at] = other[start:start + rng.randrange(1, 1024)]
    return bytes(data)


def _records(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        if pos + 16 + length > len(data):
            break
        out.append(data[pos + 12:pos + 12 + length])
        pos += 16 + length
    return out


def mutate_events(rng: random.Random, data: bytes, other: bytes) -> bytes:
    from builders.event_builders import frame, masked_crc

    if rng.random() < 0.4:
        return _bytes_mutation(rng, data, other)
    records = _records(data)
    i = rng.randrange(len(records))
    if rng.random() < 0.2:  # a valid header that lies about the length, in mid-file
        header = struct.pack("<Q", rng.choice((1 << 40, 1 << 30, 2**63 - 1, len(data) * 2)))
        lie = header + struct.pack("<I", masked_crc(header))
        framed = [frame(r) for r in records]
        framed.insert(i, lie)
        return b"".join(framed)
    records[i] = _bytes_mutation(rng, records[i], other)  # a mutated proto behind valid CRCs
    return b"".join(frame(r) for r in records)


def _rezip(rng: random.Random, data: bytes, edit) -> bytes:
    """The torch zip with its data.pkl replaced by edit(data.pkl), rewritten with valid CRCs."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    compression = zipfile.ZIP_DEFLATED if rng.random() < 0.3 else zipfile.ZIP_STORED
    with zipfile.ZipFile(out, "w", compression) as dst:
        for info in src.infolist():
            raw = src.read(info)
            if info.filename.endswith("data.pkl"):
                raw = edit(raw)
            dst.writestr(info.filename, raw)
    return out.getvalue()


def _pickle_edit(rng: random.Random, pkl: bytes, other: bytes) -> bytes:
    if rng.random() < 0.5:
        at = rng.randrange(2, max(3, len(pkl) - 1))
        return pkl[:at] + rng.choice(BOMB_PIECES) + pkl[at:]
    return _bytes_mutation(rng, pkl, other)


def mutate_torch_zip(rng: random.Random, data: bytes, other: bytes) -> bytes:
    if rng.random() < 0.3:
        return _bytes_mutation(rng, data, other)
    return _rezip(rng, data, lambda pkl: _pickle_edit(rng, pkl, other))


def mutate_pickle(rng: random.Random, data: bytes, other: bytes) -> bytes:
    return _pickle_edit(rng, data, other)


def mutate_safetensors(rng: random.Random, data: bytes, other: bytes) -> bytes:
    if rng.random() < 0.3:
        return _bytes_mutation(rng, data, other)
    (n,) = struct.unpack_from("<Q", data, 0)
    header, body = json.loads(data[8:8 + n]), data[8 + n:]
    names = [k for k in header if k != "__metadata__"]
    name = rng.choice(names)
    entry = header[name]
    op = rng.randrange(6)
    if op == 0:
        entry["dtype"] = rng.choice(["F16", "F64", "I8", "BOOL", "F8_E4M3", "X99", "", "U64"])
    elif op == 1:
        entry["shape"] = [rng.choice((0, 1, -1, 2**31, 2**62, 10**30)) for _ in range(rng.randrange(0, 5))]
    elif op == 2:
        entry["data_offsets"] = [rng.choice((0, 1, len(body), 2**63, -5)), rng.choice((0, len(body) + 1, 2**64))]
    elif op == 3:
        header["__metadata__"] = {"step": rng.choice(["1" + "0" * 5000, "-3", "1e308", "x"])}
    elif op == 4:
        header[name] = [[[[[[[[[[]]]]]]]]]] if rng.random() < 0.5 else "nested"
    else:
        header[f"extra.{rng.randrange(10**6)}"] = dict(entry)
    text = json.dumps(header).encode()
    if rng.random() < 0.2:
        return struct.pack("<Q", rng.choice(EXTREMES)) + text + body
    return struct.pack("<Q", len(text)) + text + body


MUTATORS = {"events": mutate_events, "torch-zip": mutate_torch_zip, "legacy": _bytes_mutation,
            "pickle": mutate_pickle, "safetensors": mutate_safetensors}
FILE_NAMES = {"torch-zip": "model.pt", "legacy": "legacy.pt", "pickle": "state.pkl",
              "safetensors": "model.safetensors"}


def make_case(rng: random.Random, seeds: dict[str, bytes]) -> dict[str, bytes]:
    """{file name: bytes} of one run folder: an event file and one checkpoint, one or both mutated."""
    ckpt = rng.choice(KINDS[1:])
    target = rng.choice(("events", ckpt, "both"))
    files = {}
    for kind, name in (("events", "events.out.tfevents.1700000000.fuzz"), (ckpt, FILE_NAMES[ckpt])):
        data = seeds[kind]
        if target in (kind, "both"):
            for _ in range(rng.choice((1, 1, 1, 2, 3))):
                other = seeds[rng.choice(KINDS)]
                try:
                    data = MUTATORS[kind](rng, data, other)
                except Exception:  # noqa: BLE001 - an earlier mutation broke the structure: bytes then
                    data = _bytes_mutation(rng, data, other)
        files[name] = data
    return files


# --------------------------------------------------------------------------------------- the worker


def _snapshot(folder: Path) -> dict[str, str]:
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            out[str(path.relative_to(folder))] = hashlib.sha1(path.read_bytes()).hexdigest()
    return out


def run_case(index: int, files: dict[str, bytes], work: Path, marker: Path, case_seconds: float,
             formats: str) -> dict:
    """Diagnose one input in process and check the invariants; the record of what happened."""
    import logging

    from report_gen.cli import main

    case = work / f"case{index}"
    run, out, bystander = case / "run", case / "out", case / "bystander"
    run.mkdir(parents=True)
    bystander.mkdir()
    (bystander / "victim.json").write_text("precious\n")
    for name, data in files.items():
        (run / name).write_bytes(data)
    hostile_out = index % 3 == 0
    if hostile_out:  # an output folder planted with links pointing outside it
        out.mkdir()
        (out / "report.json").symlink_to(bystander / "victim.json")
        (out / "report.md").symlink_to(bystander / "victim.json")
        (out / "report_files").symlink_to(bystander, target_is_directory=True)
    before_in, before_by = _snapshot(run), _snapshot(bystander)
    logging.getLogger().handlers.clear()  # main() installs its handler on the stderr redirected below
    err = io.StringIO()
    from builders.hostile_tools import IDLE_SECONDS_PER_SPIN  # bounds are idle-equivalent seconds, as in the tests

    allowed = case_seconds / IDLE_SECONDS_PER_SPIN * _SPIN[0]
    start = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(["diagnose", str(run), "-o", str(out), "-q", "--format", formats])
        except BaseException as exc:  # noqa: BLE001 - anything escaping main is a finding
            rc = f"raised {type(exc).__name__}: {str(exc)[:200]}"
    took = time.perf_counter() - start
    failures = []
    stderr = [line for line in err.getvalue().splitlines() if line.strip()]
    errors = [line for line in stderr if "error:" in line]
    if rc in (0, 1):
        if not (out / "report.json").is_file() or (out / "report.json").is_symlink():
            failures.append("exit 0/1 without a report.json")
    elif rc == 2:
        if len(errors) != 1 or "internal error" in errors[0]:
            failures.append(f"exit 2 without one input-error line: {stderr[-3:]}")
    else:
        failures.append(f"unclean exit: {rc!r}")
    if took > allowed:
        failures.append(f"took {took:.1f} s, allowed {allowed:.1f} s")
    if _snapshot(run) != before_in:
        failures.append("the input folder changed")
    if _snapshot(bystander) != before_by:
        failures.append("a file outside -o changed")
    if marker.exists():
        failures.append("the canary ran: code from an input was executed")
        marker.unlink()
    kinds: list[str] = []
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        report = json.loads((out / "report.json").read_text(encoding="utf-8"))
        kinds = sorted({p["kind"] for r in report["inputs"]["runs"] for p in r["problems"]})
    shutil.rmtree(case, ignore_errors=True)
    return {"case": index, "rc": rc if isinstance(rc, int) else -1, "seconds": round(took, 3),
            "failures": failures, "kinds": kinds,
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}


_SPIN = [0.05]  # seconds of hostile_tools.spin() in this worker


def _limit_memory(memory_mb: int) -> None:
    with open("/proc/self/status", encoding="ascii") as f:
        size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    limit = size + (memory_mb << 20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def worker(args: argparse.Namespace) -> None:
    """Run cases first..first+count-1 of the seeded sequence; one JSON line per case on stdout,
    the case's files written to <findings>/current first (kept by the supervisor on a crash)."""
    sys.path[:0] = [str(HERE), str(TESTS)]
    os.environ.setdefault("MPLBACKEND", "Agg")
    work = Path(args.work)
    marker = work / "CANARY-RAN"
    seeds = make_seeds(str(marker))
    import report_gen.cli  # noqa: F401 - imported before the memory limit is measured
    import report_gen.readers.checkpoint  # noqa: F401

    from builders.hostile_tools import spin

    _SPIN[0] = spin()
    _limit_memory(args.memory_mb)
    current = Path(args.findings) / "current"
    index = args.first
    while time.time() < args.until and index < args.first + args.count:
        rng = random.Random(f"{args.seed}:{index}")
        files = make_case(rng, seeds)
        shutil.rmtree(current, ignore_errors=True)
        current.mkdir(parents=True)
        for name, data in files.items():
            (current / name).write_bytes(data)
        formats = "json,md,html" if index % 10 == 0 else "json"
        record = run_case(index, files, work, marker, args.case_seconds, formats)
        record["files"] = {name: len(data) for name, data in files.items()}
        print(json.dumps(record), flush=True)
        index += 1


# ----------------------------------------------------------------------------------- the supervisor


def supervise(args: argparse.Namespace) -> dict:
    findings = Path(args.findings)
    findings.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    until = time.time() + args.seconds  # the whole budget, worker start-ups included
    index, records, failures, crashes = 0, [], [], 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    while time.monotonic() - start < args.seconds and index < args.max_inputs:
        with tempfile.TemporaryDirectory(prefix="fuzz-") as work:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--work", work, "--first", str(index),
                   "--count", str(args.max_inputs - index), "--until", str(until), "--seed", str(args.seed),
                   "--findings", str(findings), "--case-seconds", str(args.case_seconds),
                   "--memory-mb", str(args.memory_mb)]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            hard = args.hard_timeout
            last = time.monotonic()
            import selectors

            sel = selectors.DefaultSelector()
            sel.register(proc.stdout, selectors.EVENT_READ)
            hung = False
            while True:
                ready = sel.select(timeout=5)
                if ready:
                    line = proc.stdout.readline()
                    if not line:
                        break
                    record = json.loads(line)
                    records.append(record)
                    last = time.monotonic()
                    index = record["case"] + 1
                    if record["failures"]:
                        failures.append(record)
                        shutil.copytree(findings / "current", findings / f"case{record['case']}", dirs_exist_ok=True)
                elif time.monotonic() - last > hard + (60 if not records else 0):  # (the first case includes start-up)
                    hung = True
                    proc.kill()
                    break
                if proc.poll() is not None and not ready:
                    break
            proc.wait()
            stderr = proc.stderr.read()
            if hung or proc.returncode != 0:
                crashes += 1
                what = "hang (killed)" if hung else f"worker died (status {proc.returncode})"
                failures.append({"case": index, "failures": [what], "stderr": stderr[-600:]})
                if (findings / "current").exists():
                    shutil.copytree(findings / "current", findings / f"case{index}", dirs_exist_ok=True)
                index += 1
    rcs: dict[str, int] = {}
    kinds: dict[str, int] = {}
    for r in records:
        rcs[str(r["rc"])] = rcs.get(str(r["rc"]), 0) + 1
        for kind in r.get("kinds", []):
            kinds[kind] = kinds.get(kind, 0) + 1
    return {"inputs": len(records) + crashes, "seconds": round(time.monotonic() - start, 1), "seed": args.seed,
            "exit_codes": rcs, "problem_kinds": dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
            "failures": failures, "crashes": crashes,
            "max_case_seconds": max((r["seconds"] for r in records), default=0.0),
            "peak_rss_mb": max((r["maxrss_mb"] for r in records), default=0)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600.0, help="total time budget (start-up included)")
    parser.add_argument("--max-inputs", type=int, default=10**9)
    parser.add_argument("--seed", default="0")
    parser.add_argument("--findings", default=str(ROOT / "fuzz-findings"), help="inputs that broke an invariant")
    parser.add_argument("--case-seconds", type=float, default=20.0, help="idle-equivalent bound per input")
    parser.add_argument("--hard-timeout", type=float, default=300.0, help="wall seconds before a worker is killed")
    parser.add_argument("--memory-mb", type=int, default=3072, help="address space allowed beyond the start")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--until", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=10**9, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    summary = supervise(args)
    print(json.dumps(summary))
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
