"""The pickle pre-scan refuses hostile pickles cleanly and fast, and lets every real checkpoint through.

Each hostile pickle is assembled opcode by opcode here (a few hundred bytes, or a few MB of one
repeated opcode), never produced by pickling a real object.
"""
from __future__ import annotations

import argparse
import collections
import datetime
import decimal
import fractions
import io
import pickle
import random
import struct
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from builders import ckpt_builders as cb
from builders.hostile_tools import bounded_time, run_python
from builders.memtools import peak_memory
from report_gen.readers.checkpoint import CheckpointError, open_checkpoint
from report_gen.readers.pickle_guard import (MAX_DEPTH, MAX_MEMBER_BYTES, MAX_OBJECT_BYTES, MAX_OPCODES, Budget,
                                             PickleRefused, bounded_repr, scan_bytes, scan_torch_bytes,
                                             scan_torch_file)
from report_gen.readers.safe_unpickle import restricted_load, storage_ref_from_pid

# ------------------------------------------------------------------------------------ builders


def dag(levels: int = 60) -> bytes:
    """((), ()) then ((T, T)) ... through DUP: `levels` levels, 2**levels leaves when unfolded."""
    return b")" + b"2\x86" * levels


def deep_tuple(depth: int = 200_000) -> bytes:
    return b")" + b"\x85" * depth


def proto2(body: bytes) -> bytes:
    return b"\x80\x02" + body + b"."


def as_dict_key(value: bytes) -> bytes:
    return b"}" + value + b"Ns"


def torch_zip(data_pkl: bytes, compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/version", "3\n")
    return buf.getvalue()


HOSTILE = {
    "deep tuple as dict key": proto2(as_dict_key(deep_tuple())),
    "DAG tuple as dict key": proto2(as_dict_key(dag())),
    "DAG tuple as dict key (SETITEMS)": proto2(b"}(" + dag() + b"Nu"),
    "DAG tuple as dict key (DICT)": proto2(b"(" + dag() + b"Nd"),
    "DAG tuple as set member": b"\x80\x04\x8f(" + dag() + b"\x90.",
    "DAG tuple as frozenset member": b"\x80\x04(" + dag() + b"\x91.",
    "DAG tuple given to builtins.set": proto2(b"cbuiltins\nset\n](" + dag() + b"e\x85R"),
    "DAG tuple as OrderedDict pair key": proto2(b"ccollections\nOrderedDict\n](" + dag() + b"N\x86e\x85R"),
    "DAG tuple given to set (protocol 4)": b"\x80\x04\x8c\x08builtins\x8c\x03set\x93](" + dag() + b"e\x85R.",
    # the list is empty when the argument tuple is built, filled afterwards through the memo
    "DAG tuple put in set()'s list late": proto2(b"cbuiltins\nset\n]q\x01\x85h\x01" + dag() + b"a0R"),
    "DAG tuple inside torch.Size used as key": proto2(b"}ctorch\nSize\n" + dag() + b"\x85RNs"),
    "DAG tuple as persistent id": proto2(dag() + b"Q"),
    "list in a persistent id": proto2(b"]" + b"\x85Q"),
    "marks nested 24 M deep": b"(" * (24 << 20) + b"N.",
    "32 M EMPTY_SET": b"\x80\x04" + b"\x8f" * (32 << 20) + b".",
    "32 M EMPTY_DICT": b"\x80\x04" + b"}" * (32 << 20) + b".",
    "4 M memo reads": b"\x80\x04]q\x00" + b"h\x000" * (2 << 20) + b".",
    "list nested 1 M deep": b"\x80\x04" + b"]" * 5 + b"a" * 4 + b"]" * (1 << 20) + b"a" * ((1 << 20) - 1) + b".",
    "unknown opcode": b"\x80\x02\xff.",
    "no STOP": b"\x80\x02}",
    "BINBYTES8 claiming 5 GiB": b"\x80\x04\x8e" + struct.pack("<Q", 5 << 30) + b"abc.",
    "memo index never stored": b"\x80\x02h\x07.",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_pickle_is_refused_fast_with_one_line(name):
    data = HOSTILE[name]
    with bounded_time(2.0):
        with pytest.raises(PickleRefused) as info:
            scan_bytes(data)
    message = str(info.value)
    assert "\n" not in message and len(message) < 300
    assert message.startswith("pickle: refused before unpickling: ")


@pytest.mark.parametrize("name", ["deep tuple as dict key", "DAG tuple as dict key", "32 M EMPTY_SET",
                                  "DAG tuple as persistent id", "DAG tuple put in set()'s list late"])
def test_restricted_load_refuses_before_unpickling(name):
    calls = []
    with bounded_time(2.0), pytest.raises(PickleRefused):
        restricted_load(io.BytesIO(HOSTILE[name]), lambda pid: calls.append(pid))
    assert calls == []


def test_the_scan_memory_follows_the_object_budget():
    """Refusing a memory bomb costs about the budget, whatever the size of the bomb: 4x more bomb,
    the same peak. A small budget, so tracemalloc (slow here) stays quick."""
    budget = Budget(object_bytes=256 << 10)
    for unit in (b"}", b"\x8f", b"h\x00)R"):
        peaks = []
        for count in (64 << 10, 256 << 10):
            bomb = b"\x80\x02cfoo\nBar\nq\x00" + unit * count + b"."
            with peak_memory() as mem, pytest.raises(PickleRefused, match="memory bomb"):
                scan_bytes(bomb, budget=Budget(object_bytes=budget.object_bytes))
            peaks.append(mem["peak"] - len(bomb))
        assert peaks[1] < 1.2 * peaks[0] + (64 << 10) and peaks[1] < 2 * budget.object_bytes + (512 << 10), peaks


def test_a_deflated_bomb_member_is_refused_from_its_declared_size(tmp_path):
    """65 MiB of EMPTY_SET deflate to ~65 KB: refused before a byte is inflated."""
    path = tmp_path / "bomb.pt"
    path.write_bytes(torch_zip(b"\x80\x04" + b"\x8f" * (65 << 20) + b".", zipfile.ZIP_DEFLATED))
    assert path.stat().st_size < 200_000
    with peak_memory() as mem, pytest.raises(PickleRefused, match="declares 68,157,443 bytes"):
        scan_torch_file(str(path))
    assert mem["peak"] < 1 << 20


def test_a_deflated_member_below_the_cap_but_too_inflated_is_refused(tmp_path):
    path = tmp_path / "bomb.pt"
    path.write_bytes(torch_zip(b"\x80\x04" + b"N0" * (8 << 20) + b"N.", zipfile.ZIP_DEFLATED))
    with pytest.raises(PickleRefused, match="zip bomb"):
        scan_torch_file(str(path))


def test_every_pickle_member_of_a_zip_is_scanned(tmp_path):
    path = tmp_path / "two.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"a": 1}, protocol=2))
        zf.writestr("archive/constants.pkl", HOSTILE["DAG tuple as dict key"])
    with pytest.raises(PickleRefused, match="constants.pkl"):
        scan_torch_file(str(path))


def test_pickles_of_one_file_share_one_budget(tmp_path):
    """Five pickles of a legacy torch file, each small, together over the budget: refused."""
    body = cb.pk_list(*[cb.pk_int(i) for i in range(400)])
    path = cb.write_raw_legacy(tmp_path / "legacy.pt", body, [], [])
    assert scan_torch_file(str(path))  # fits the default budget
    with pytest.raises(PickleRefused, match="opcodes in one file"):
        scan_torch_file(str(path), budget=Budget(opcodes=300))


def test_a_hostile_torch_save_blob_nested_in_a_plain_pickle_is_refused():
    blob = torch_zip(HOSTILE["deep tuple as dict key"])
    outer = proto2(cb.pk_call(cb.pk_global("torch.storage", "_load_from_bytes"), cb.pk_tuple(cb.pk_bytes(blob))))
    with bounded_time(2.0), pytest.raises(PickleRefused, match="nested more than"):
        restricted_load(io.BytesIO(outer))
    assert pytest.raises(PickleRefused, scan_torch_bytes, blob)


def test_nested_blobs_draw_on_the_outer_files_budget():
    tensor_blob = io.BytesIO()
    torch.save(torch.arange(4.0), tensor_blob)
    one = cb.pk_call(cb.pk_global("torch.storage", "_load_from_bytes"), cb.pk_tuple(cb.pk_bytes(tensor_blob.getvalue())))
    outer = proto2(cb.pk_list(*[one] * 20))
    value, _ = restricted_load(io.BytesIO(outer))
    assert len(value) == 20 and torch.equal(value[3], torch.arange(4.0))
    per_blob = sum(s.opcodes for s in scan_torch_bytes(tensor_blob.getvalue()).values())
    with pytest.raises(PickleRefused, match="opcodes in one file"):
        restricted_load(io.BytesIO(outer), budget=Budget(opcodes=per_blob * 10))


def test_a_payload_behind_a_bomb_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    payload = cb.pk_call(cb.pk_global("os", "system"), cb.pk_tuple(cb.pk_str(f"touch {marker}")))
    data = proto2(cb.pk_list(payload, b"}" + dag() + b"Ns"))
    with pytest.raises(PickleRefused):
        restricted_load(io.BytesIO(data))
    path = tmp_path / "evil.pkl"
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as info:
        open_checkpoint(str(path))
    assert "refused before unpickling" in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()


def test_a_hostile_legacy_checkpoint_is_one_clean_error(tmp_path):
    path = cb.write_raw_legacy(tmp_path / "legacy.pt", b"}" + deep_tuple() + b"Ns", [], [])
    with bounded_time(2.0), pytest.raises(CheckpointError) as info:
        open_checkpoint(str(path))
    assert "refused before unpickling" in str(info.value)


_TORCH_LOAD_AFTER_SCAN = textwrap.dedent("""
    import sys, torch
    from report_gen.readers.pickle_guard import PickleRefused, scan_torch_file
    path, scan = sys.argv[1], sys.argv[2] == "scan"
    try:
        if scan:
            scan_torch_file(path)
        torch.load(path, weights_only=True)
        print("loaded")
    except PickleRefused as exc:
        print("refused:", exc)
    except Exception as exc:
        print("error:", type(exc).__name__)
""")


def test_scan_torch_file_protects_torch_load(tmp_path):
    """Scan first, torch.load(weights_only=True) only what the scan accepts: a clean refusal each
    time, in a child process (one torch import for all three files)."""
    paths = []
    for i, name in enumerate(["deep tuple as dict key", "DAG tuple as dict key", "DAG tuple as set member"]):
        paths.append(tmp_path / f"hostile{i}.pt")
        paths[-1].write_bytes(torch_zip(HOSTILE[name]))
    good = cb.write_plain(tmp_path / "good.pt", cb.tiny_state())
    code = "\n".join(_TORCH_LOAD_AFTER_SCAN.replace("sys.argv[1], sys.argv[2]", f"{str(p)!r}, 'scan'")
                     for p in [*paths, good])
    done = run_python(code, timeout=120)
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stderr[-300:]
    assert [line.split(":")[0] for line in lines] == ["refused"] * 3 + ["loaded"], lines


def test_without_the_scan_torch_load_crashes_on_a_deep_key(tmp_path):
    """The hazard is real: torch.load(weights_only=True) itself dies (SIGSEGV) on 200 k nested tuples."""
    path = tmp_path / "hostile.pt"
    path.write_bytes(torch_zip(HOSTILE["deep tuple as dict key"]))
    code = _TORCH_LOAD_AFTER_SCAN.replace("sys.argv[1], sys.argv[2]", f"{str(path)!r}, 'no'")
    done = run_python(code, timeout=120)
    assert done.returncode != 0 and "loaded" not in done.stdout


_BOMBS = [name for name in HOSTILE if name not in ("unknown opcode", "no STOP", "memo index never stored")]
_OPEN_EACH = textwrap.dedent("""
    import json, sys
    from report_gen.readers.checkpoint import read_checkpoints
    _, problems = read_checkpoints(json.loads(sys.argv[1]))
    print(json.dumps([(p.file, p.kind, p.severity, p.message) for p in problems]))
""")


def test_open_checkpoint_on_a_hostile_torch_zip_is_one_clean_error(tmp_path):
    path = tmp_path / "hostile.pt"
    path.write_bytes(torch_zip(HOSTILE["deep tuple as dict key"]))
    code = (f"from report_gen.readers.checkpoint import CheckpointError, open_checkpoint\n"
            f"try:\n    open_checkpoint({str(path)!r})\nexcept CheckpointError as exc:\n"
            f"    print('clean:', exc.kind, exc)\n")
    done = run_python(code, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("clean: hostile-pickle"), (done.returncode, done.stdout)
    assert "refused before unpickling" in done.stdout and done.stdout.count("\n") == 1


def test_every_bomb_in_every_container_is_one_hostile_pickle_problem(tmp_path):
    """Each bomb as a stored torch zip (torch.load(weights_only=True) would read it), a deflated
    one (the restricted path), a legacy file and a plain pickle: one warning each, in one child
    process (a crash there fails the test instead of the run), and nothing else is lost: the good
    checkpoint beside them is read."""
    import json

    paths = []
    for i, name in enumerate(_BOMBS):
        body = HOSTILE[name]
        containers = [("zip.pt", torch_zip(body)), ("deflated.pt", torch_zip(body, zipfile.ZIP_DEFLATED))]
        if body.startswith(b"\x80"):  # (without a PROTO opcode a plain file is not sniffed as a pickle)
            containers.append(("plain.pkl", body))
        for suffix, data in containers:
            paths.append(tmp_path / f"bomb{i}.{suffix}")
            paths[-1].write_bytes(data)
    paths.append(cb.write_raw_legacy(tmp_path / "legacy.pt", b"}" + dag() + b"Ns", [], []))
    good = cb.write_plain(tmp_path / "good.pt", cb.tiny_state())
    code = _OPEN_EACH.replace("sys.argv[1]", repr(json.dumps([str(p) for p in [*paths, good]])))
    done = run_python(code, timeout=300)
    assert done.returncode == 0, done.stderr[-500:]
    problems = json.loads(done.stdout)
    assert [p[0] for p in problems] == [str(p) for p in paths]  # one each, the good file none
    for file, kind, severity, message in problems:
        assert (kind, severity) == ("hostile-pickle", "warning"), (file, kind, message)
        assert "refused before unpickling" in message and "\n" not in message and len(message) < 600


# ------------------------------------------------------------------------------ real pickles pass


def _lightning_with_adam(model: nn.Module) -> dict:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    return {"epoch": 3, "global_step": 1200, "pytorch-lightning_version": "2.1.0",
            "state_dict": collections.OrderedDict(("model." + k, v) for k, v in model.state_dict().items()),
            "hyper_parameters": argparse.Namespace(lr=0.1, layers=[1, 2, 3]),
            "optimizer_states": [opt.state_dict()], "lr_schedulers": [{"step_size": 3}],
            "callbacks": {"ModelCheckpoint": {"best_model_score": torch.tensor(0.5)}}}


def _every_checkpoint_kind(tmp_path: Path) -> list[Path]:
    state = cb.tiny_state()
    model, opt = cb.trained_model_and_optimizer()
    hf = cb.write_hf_folder(tmp_path / "hf", state, fmt="bin", optimizer_state=opt.state_dict())
    return [
        cb.write_plain(tmp_path / "plain.pt", state),
        cb.write_nested(tmp_path / "nested.pt", state, "model_state_dict", epoch=2),
        cb.write_lightning(tmp_path / "lightning.ckpt", state, optimizer_state=opt.state_dict()),
        cb.write_dataparallel(tmp_path / "dp.pt", state),
        cb.write_legacy(tmp_path / "legacy.pt", state),
        cb.write_torchscript(tmp_path / "script.pt", cb.tiny_model()),
        cb.write_whole_module(tmp_path / "module.pt", cb.tiny_model()),
        cb.write_malicious(tmp_path / "evil.pt", state, tmp_path / "marker"),
        cb.write_plain(tmp_path / "optimizer.pt", opt.state_dict()),
        hf / "pytorch_model.bin", hf / "optimizer.pt",
        *sorted((p for p in (cb.write_sharded(tmp_path / "shards", state, fmt="bin").parent.iterdir())
                 if p.suffix == ".bin")),
    ]


def test_every_checkpoint_kind_passes_the_scan(tmp_path):
    paths = _every_checkpoint_kind(tmp_path)
    for path in paths:
        stats = scan_torch_file(str(path))
        assert stats, path
        assert all(s.max_depth < 20 for s in stats.values()), path
    script = scan_torch_file(str(tmp_path / "script.pt"))
    assert any(name.endswith("constants.pkl") for name in script)
    assert len(scan_torch_file(str(tmp_path / "legacy.pt"))) == 5
    assert not (tmp_path / "marker").exists()


def test_plain_pickles_of_tensors_and_numpy_pass_and_load():
    state = cb.tiny_state()
    value, _ = restricted_load(io.BytesIO(pickle.dumps(state)))  # tensors as nested torch.save blobs
    torch.testing.assert_close(value["fc.weight"], state["fc.weight"])
    arrays = {"w": np.arange(6.0).reshape(2, 3), "step": np.int64(7)}
    for protocol in range(2, 6):
        value, _ = restricted_load(io.BytesIO(pickle.dumps(arrays, protocol=protocol)))
        np.testing.assert_array_equal(value["w"], arrays["w"])


def test_a_large_real_checkpoint_uses_a_small_part_of_the_budgets():
    """700 parameter tensors with Adam state in a Lightning-like dict: under 1/8 of each budget
    (the numbers MAX_OPCODES and MAX_OBJECT_BYTES are justified by)."""
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(350)])
    buf = io.BytesIO()
    torch.save(_lightning_with_adam(model), buf)
    (stats,) = scan_torch_bytes(buf.getvalue()).values()
    assert stats.opcodes * 8 < MAX_OPCODES
    assert stats.object_bytes * 8 < MAX_OBJECT_BYTES
    assert stats.nbytes * 100 < MAX_MEMBER_BYTES
    assert stats.max_depth * 10 < MAX_DEPTH


class _Point(collections.namedtuple("_Point", "x y")):
    pass


def _corpus() -> list:
    shared = (1, 2, "x")
    looped: list = []
    looped.append(looped)
    selfref: dict = {}
    selfref["self"] = selfref
    return [None, True, 1, -5, 2**70, 1.5, "s", "é" * 300, b"b" * 300, bytearray(b"xy"), (), (1,), (1, 2),
            (1, 2, 3), tuple(range(10)), [], [1, [2, [3]]], {}, {"a": 1, (1, 2): [3]}, set(), {1, 2, (3, 4)},
            frozenset({1, "a"}), collections.OrderedDict(a=1), collections.Counter("abca"),
            collections.defaultdict(list, a=[1]), complex(1, 2), datetime.datetime(2020, 1, 1),
            decimal.Decimal("1.5"), fractions.Fraction(1, 3), argparse.Namespace(a=1, b=[1]), np.arange(5),
            np.float32(1), {"shared": [shared, shared, {shared: shared}]}, list(range(1000)),
            {i: str(i) for i in range(300)}, _Point(1, 2), {_Point(1, (2, 3)): 1}, slice(1, 2), range(5),
            [[]] * 3, looped, selfref, {frozenset({(1, 2)}): {(("a", 1), ("b", 2))}}]


@pytest.mark.parametrize("protocol", range(6))
def test_ordinary_python_values_pass_at_every_protocol(protocol):
    for value in _corpus():
        data = pickle.dumps(value, protocol=protocol)
        assert scan_bytes(data + b"trailing bytes").nbytes == len(data), repr(value)[:60]


def test_fuzzed_pickles_are_refused_or_read_never_crash():
    """Bounded fuzz: 3,000 pickles with 1-3 random bytes changed. The scan only ever raises
    PickleRefused; whatever it accepts, the restricted unpickler reads or rejects without crashing."""
    rng = random.Random(14)
    corpus = [pickle.dumps(v, protocol=p) for v in _corpus() for p in (0, 2, 4, 5)]
    accepted = refused = 0
    with bounded_time(30.0):
        for _ in range(3000):
            data = bytearray(rng.choice(corpus))
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            try:
                scan_bytes(bytes(data))
            except PickleRefused:
                refused += 1
                continue
            accepted += 1
            try:
                restricted_load(io.BytesIO(bytes(data)))
            except Exception:  # noqa: BLE001 - a malformed pickle may fail in many ways, never crash
                pass
    assert accepted > 500 and refused > 500


# ------------------------------------------------------------------------------- bounded repr


def test_bounded_repr_of_hostile_values_is_fast_and_short():
    t: tuple = ()
    for _ in range(60):
        t = (t, t)
    deep: tuple = ()
    for _ in range(100_000):
        deep = (deep,)
    with bounded_time(1.0):
        for value in (t, deep, 10**5000, "a\x1b]0;title\x07" * 100, {"k": [t] * 1000}):
            text = bounded_repr(value, 80)
            assert len(text) <= 80 and text.isprintable()


def test_storage_ids_in_messages_go_through_the_bounded_repr():
    t: tuple = ()
    for _ in range(60):
        t = (t, t)
    with bounded_time(1.0), pytest.raises(pickle.UnpicklingError) as info:
        storage_ref_from_pid(("not storage", t))
    assert len(str(info.value)) < 120
    with pytest.raises(pickle.UnpicklingError, match="malformed storage id"):
        storage_ref_from_pid(("storage", storage_ref_from_pid.__globals__["StorageType"](torch.float32),
                              10**5000, "cpu", 4))


def test_a_hostile_probe_input_is_an_input_error(tmp_path):
    """--probe FILE goes through torch.load(weights_only=True): scanned first, so one clean line."""
    path = tmp_path / "batch.pt"
    path.write_bytes(torch_zip(HOSTILE["deep tuple as dict key"]))
    code = ("from report_gen.core import InputError\nfrom report_gen.probe import load_probe_input\n"
            f"try:\n    load_probe_input({str(path)!r}, None)\nexcept InputError as exc:\n    print('clean:', exc)\n")
    done = run_python(code, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("clean:") and "refused" in done.stdout, done.stderr[-300:]
