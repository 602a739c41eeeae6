"""The restricted unpickler never runs code from a file, yet still yields the tensors."""
from __future__ import annotations

import collections
import io
import pickle
import struct
from argparse import Namespace

import numpy as np
import pytest
import torch

from builders import ckpt_builders as cb
from report_gen.readers.checkpoint import CheckpointError, open_checkpoint
from report_gen.readers.safe_unpickle import Placeholder, is_dangerous_global, restricted_load


def test_malicious_checkpoint_is_read_without_running_the_payload(tmp_path):
    marker = tmp_path / "pwned"
    state = cb.tiny_state()
    path = cb.write_malicious(tmp_path / "evil.pt", state, marker)
    ckpt = open_checkpoint(str(path))
    assert not marker.exists()
    torch.testing.assert_close(ckpt.load("fc.weight"), state["fc.weight"])
    (problem,) = ckpt.problems
    assert problem.kind == "unsafe-pickle-neutralised" and problem.severity == "warning"
    assert "tries to call posix.system, io.open" in problem.message


def test_payload_without_tensors_is_refused_clearly(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(cb.MarkerWriter(str(marker))))
    with pytest.raises(CheckpointError) as info:
        open_checkpoint(str(path))
    assert info.value.kind == "unsafe-pickle" and "posix.system" in str(info.value)
    assert not marker.exists()


def test_only_trust_pickles_runs_the_payload(tmp_path):
    marker = tmp_path / "pwned"
    path = cb.write_malicious(tmp_path / "evil.pt", cb.tiny_state(), marker)
    ckpt = open_checkpoint(str(path), trust_pickles=True)
    assert marker.exists()  # proves the file really is malicious, and the gate is the flag
    assert [p.kind for p in ckpt.problems] == ["trusted-pickle"]


def test_placeholders_record_everything_and_call_nothing():
    payload = pickle.dumps({"ns": Namespace(lr=0.1, layers=[1, 2]), "evil": cb.MarkerWriter("/x")})
    obj, replaced = restricted_load(io.BytesIO(payload))
    assert replaced == ["argparse.Namespace", "posix.system"]
    ns = obj["ns"]
    assert isinstance(ns, Placeholder) and ns.global_name == "argparse.Namespace"
    assert ns.attributes == {"lr": 0.1, "layers": [1, 2]}
    assert obj["evil"].args == ("touch /x",)


def test_numpy_scalars_arrays_and_dtypes_are_rebuilt():
    value = {"f": np.float32(1.5), "i": np.int64(7), "a": np.arange(4.0), "d": np.dtype("int16")}
    obj, replaced = restricted_load(io.BytesIO(pickle.dumps(value)))
    assert replaced == []
    assert obj["f"] == np.float32(1.5) and obj["i"] == 7 and obj["d"] == np.dtype("int16")
    np.testing.assert_array_equal(obj["a"], np.arange(4.0))


@pytest.mark.parametrize("name,dangerous", [("posix.system", True), ("subprocess.Popen", True),
                                            ("builtins.eval", True), ("io.open", True),
                                            ("argparse.Namespace", False),
                                            ("builtins.set", False)])
def test_dangerous_globals(name, dangerous):
    assert is_dangerous_global(name) is dangerous


# ---------------------------------------------------------------------------------------------
# numpy: nothing real reaches pickle's state setting; only plain numeric data is rebuilt

_OPEN_BOTH = """
import io, sys
from report_gen.readers.checkpoint import CheckpointError, open_checkpoint
from report_gen.readers.safe_unpickle import restricted_load
obj, replaced = restricted_load(open(sys.argv[1], "rb"))
print("replaced", replaced, type(obj["hparams"]).__mro__[-2].__name__)
for path in sys.argv[1:]:
    try:
        ckpt = open_checkpoint(path)
        print("opened", path, sorted(ckpt.tensors), ckpt.metadata)
    except CheckpointError as exc:
        print("refused", exc.kind, exc)
"""


def test_crafted_object_dtype_array_does_not_crash_the_reader(tmp_path):
    """A dtype re-BUILT into object fields + raw 0x41 bytes used to make numpy dereference
    attacker pointers (segfault, exit 139). Run in a subprocess so a regression cannot kill pytest."""
    import subprocess
    import sys

    evil = cb.pk_object_pointer_array()
    plain = tmp_path / "hparams.pkl"
    plain.write_bytes(cb.pk_dump(cb.pk_dict((cb.pk_str("hparams"), evil), (cb.pk_str("note"), cb.pk_str("hi")))))
    zipped = cb.write_raw_torch_zip(tmp_path / "model.pt", cb.pk_dump(cb.pk_dict(
        (cb.pk_str("state_dict"), cb.pk_state_dict(("fc.weight", cb.pk_tensor("0", 4, (2, 2), (2, 1))))),
        (cb.pk_str("hparams"), evil))), {"0": np.ones(4, np.float32).tobytes()})
    done = subprocess.run([sys.executable, "-c", _OPEN_BOTH, str(plain), str(zipped)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1, 2), (done.returncode, done.stderr[-2000:])
    assert "refused no-weights" in done.stdout
    assert "opened" in done.stdout and "['fc.weight']" in done.stdout
    assert "numpy.core.multiarray._reconstruct" in done.stdout  # the array stayed a placeholder
    assert "'numpy.dtype']" in done.stdout and "Placeholder" in done.stdout


@pytest.mark.parametrize("value", [
    np.array([1, None], dtype=object),  # object array: raw state is a list, never bytes
    np.zeros(2, dtype=[("a", "f4"), ("b", "i4")]),  # structured
    np.zeros(2, dtype="U3"),  # unicode: not a plain numeric kind
    np.zeros(2, dtype="M8[s]"),  # datetime
    np.dtype("O"),
])
def test_non_numeric_numpy_values_become_placeholders(value):
    obj, replaced = restricted_load(io.BytesIO(pickle.dumps({"v": value}, protocol=2)))
    assert isinstance(obj["v"], Placeholder)
    assert any(name.startswith("numpy") for name in replaced)


def test_numpy_size_mismatch_stays_inert():
    # a float64 array claiming 4 elements backed by 8 bytes, and a scalar with too few bytes
    arr = cb.pk_build(cb.pk_call(cb.pk_global("numpy.core.multiarray", "_reconstruct"),
                                 cb.pk_tuple(cb.pk_global("numpy", "ndarray"), cb.pk_tuple(cb.pk_int(0)), b"C\x01b")),
                      cb.pk_tuple(cb.pk_int(1), cb.pk_tuple(cb.pk_int(4)), cb.pk_numpy_dtype("f8"), cb.PK_FALSE,
                                  b"C\x08" + b"\0" * 8))
    scalar = cb.pk_call(cb.pk_global("numpy.core.multiarray", "scalar"),
                        cb.pk_tuple(cb.pk_numpy_dtype("f8"), b"C\x04" + b"\0" * 4))
    obj, _ = restricted_load(io.BytesIO(cb.pk_dump(cb.pk_list(arr, scalar))))
    assert all(isinstance(v, Placeholder) for v in obj)


def test_plain_numpy_values_are_rebuilt_exactly():
    value = {"be": np.arange(3, dtype=">i4"), "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
             "bool": np.bool_(True), "c": np.complex64(1 + 2j), "u8": np.uint8(255), "f16": np.float16(0.5),
             "empty": np.zeros((0, 3), np.float32), "shared": [np.float64(2.5)] * 2}
    for protocol in (2, 4, 5):
        obj, replaced = restricted_load(io.BytesIO(pickle.dumps(value, protocol=protocol)))
        assert replaced == []
        for key in ("be", "fortran", "empty"):
            assert isinstance(obj[key], np.ndarray) and obj[key].dtype == value[key].dtype
            np.testing.assert_array_equal(obj[key], value[key])
        assert obj["bool"] is np.True_ or obj["bool"] == np.True_
        assert obj["c"] == value["c"] and obj["u8"] == 255 and obj["f16"] == np.float16(0.5)
        assert obj["shared"] == [2.5, 2.5]


def test_numpy_hparams_of_a_lightning_checkpoint_come_back_as_numbers(tmp_path):
    state = cb.tiny_state()
    path = tmp_path / "last.ckpt"
    torch.save({"global_step": np.int64(120), "state_dict": state,
                "hyper_parameters": {"lr": np.float64(0.1), "depth": np.int64(3), "flag": np.bool_(True),
                                     "betas": np.array([0.9, 0.99])},
                "hparams": Namespace(wd=np.float32(0.5))}, path)
    ckpt = open_checkpoint(str(path))
    hp = ckpt.metadata["hyper_parameters"]
    assert hp["lr"] == 0.1 and hp["depth"] == 3 and hp["flag"] is True
    assert isinstance(hp["lr"], float) and isinstance(hp["depth"], int)
    assert ckpt.metadata["hparams"] == {"wd": 0.5}
    assert (ckpt.step, ckpt.step_source) == (120, "content")
    torch.testing.assert_close(ckpt.load("fc.weight"), state["fc.weight"])


def test_build_never_reaches_real_objects():
    """BUILD (state setting) on an allow-listed function or on a shared placeholder class is dropped:
    one file cannot re-configure the reader for the next one."""
    from report_gen.readers import safe_unpickle as su

    defaults = su._rebuild_tensor.__defaults__
    payload = cb.pk_list(
        cb.pk_build(cb.pk_global("torch._utils", "_rebuild_tensor_v2"),
                    cb.pk_tuple(cb.PK_NONE, cb.pk_dict((cb.pk_str("__defaults__"), cb.pk_tuple(cb.pk_int(1)))))),
        cb.pk_build(cb.pk_global("argparse", "Namespace"),
                    cb.pk_tuple(cb.PK_NONE, cb.pk_dict((cb.pk_str("global_name"), cb.pk_str("pwned"))))),
        cb.pk_build(cb.pk_global("collections", "OrderedDict"), cb.pk_dict((cb.pk_str("x"), cb.pk_int(1)))))
    restricted_load(io.BytesIO(cb.pk_dump(payload)))
    assert su._rebuild_tensor.__defaults__ == defaults
    assert su.placeholder_class("argparse.Namespace").global_name == "argparse.Namespace"
    assert not hasattr(collections.OrderedDict, "x")


@pytest.mark.parametrize("name", [
    "pickle.loads", "_pickle.loads", "marshal.loads", "types.FunctionType", "types.CodeType",
    "torch.hub.load", "torch.hub._download_url_to_file", "importlib.import_module", "ctypes.CDLL",
    "sys.modules", "runpy.run_path", "code.interact", "shutil.rmtree", "socket.socket",
    "requests.get", "urllib.request.urlopen", "numpy.testing._private.utils.runstring",
    "builtins.__import__", "operator.attrgetter",
])
def test_more_dangerous_globals(name):
    assert is_dangerous_global(name) is True


@pytest.mark.parametrize("name", ["types.SimpleNamespace", "torch.hubx.load", "collections.OrderedDict",
                                  "pathlib.PosixPath", "builtins.object", "torch._utils._rebuild_tensor_v2"])
def test_harmless_globals_stay_harmless(name):
    assert is_dangerous_global(name) is False


class _NestedPickle:
    """Unpickling this calls pickle.loads (a classic second-stage payload)."""

    def __reduce__(self):
        return (pickle.loads, (b"\x80\x02N.",))


def test_pickle_loads_payload_is_a_warning(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"state_dict": cb.tiny_state(), "x": _NestedPickle()}, path)
    ckpt = open_checkpoint(str(path))
    (problem,) = ckpt.problems
    assert problem.severity == "warning" and "tries to call pickle.loads" in problem.message


def test_claimed_lengths_are_not_allocated_before_the_data_is_there():
    """BYTEARRAY8 / BINBYTES8 / FRAME claiming gigabytes in a 30-byte pickle: nothing big is allocated."""
    from builders.memtools import peak_memory

    huge = struct.pack("<Q", 5 << 30)
    for payload in (b"\x80\x05\x96" + huge + b"abc.", b"\x80\x04\x8e" + huge + b"abc.",
                    b"\x80\x04\x95" + huge + b"N."):
        with peak_memory() as mem:
            try:
                restricted_load(io.BytesIO(payload))
            except (pickle.UnpicklingError, EOFError):
                pass
        assert mem["peak"] < 1 << 20, payload[:3]
