"""The restricted unpickler never runs code from a file, yet still yields the tensors."""
from __future__ import annotations

import io
import pickle
from argparse import Namespace

import numpy as np
import pytest
import torch

import ckpt_builders as cb
from report_gen.readers.checkpoints import CheckpointError, open_checkpoint
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
