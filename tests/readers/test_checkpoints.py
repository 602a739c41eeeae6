"""Checkpoint reader: every format yields the same tensors, clear errors, optimizer mapping, order."""
from __future__ import annotations

import math
import os
import zipfile

import pytest
import torch

from builders import ckpt_builders as cb
from report_gen.core import InputError
from report_gen.facts.weights import weight_stats
from report_gen.readers.checkpoint import CheckpointError, hf, open_checkpoint, order_series, step_from_name, storage
from report_gen.readers.paths import is_checkpoint_path

PARAMS = ["conv1.weight", "conv1.bias", "bn1.weight", "bn1.bias", "fc.weight", "fc.bias"]


@pytest.fixture()
def state():
    return cb.tiny_state()


FORMATS = {
    "plain": lambda d, s: cb.write_plain(d / "w.pt", s),
    "legacy": lambda d, s: cb.write_legacy(d / "w.pt", s),
    "nested-model": lambda d, s: cb.write_nested(d / "w.pth", s, "model", epoch=2),
    "nested-state_dict": lambda d, s: cb.write_nested(d / "w.pth", s, "state_dict"),
    "nested-model_state_dict": lambda d, s: cb.write_nested(d / "w.pth", s, "model_state_dict"),
    "nested-net": lambda d, s: cb.write_nested(d / "w.pth", s, "net"),
    "nested-module": lambda d, s: cb.write_nested(d / "w.pth", s, "module"),
    "nested-ema": lambda d, s: cb.write_nested(d / "w.pth", s, "ema"),
    "lightning": lambda d, s: cb.write_lightning(d / "epoch=3-step=120.ckpt", s),
    "dataparallel": lambda d, s: cb.write_dataparallel(d / "w.pt", s),
    "safetensors": lambda d, s: cb.write_safetensors(d / "w.safetensors", s),
    "safetensors-sharded": lambda d, s: cb.write_sharded(d / "m", s, shards=3),
    "bin-sharded": lambda d, s: cb.write_sharded(d / "m", s, shards=2, fmt="bin"),
    "hf-folder": lambda d, s: cb.write_hf_folder(d / "checkpoint-500", s),
    "hf-folder-bin": lambda d, s: cb.write_hf_folder(d / "checkpoint-500", s, fmt="bin"),
    "hf-folder-sharded": lambda d, s: cb.write_hf_folder(d / "checkpoint-500", s, shards=2),
    "torchscript": lambda d, s: cb.write_torchscript(d / "w.pt", _model_with(s)),
    "whole-module": lambda d, s: cb.write_whole_module(d / "w.pt", _model_with(s)),
    "pickle": lambda d, s: _write_pickle(d / "w.pkl", s),
}


def _model_with(state):
    model = cb.TinyNet()
    model.load_state_dict(state)
    return model


def _write_pickle(path, state):
    import pickle

    path.write_bytes(pickle.dumps(dict(state)))
    return path


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_gives_the_same_tensors_and_roles(tmp_path, state, fmt):
    path = FORMATS[fmt](tmp_path, state)
    ckpt = open_checkpoint(str(path))
    keeps_order = "safetensors" not in ckpt.format and "sharded" not in ckpt.format
    arrange = list if keeps_order else sorted  # safetensors and shard indexes may sort names
    assert arrange(ckpt.tensors) == arrange(state)
    assert arrange(n for n, t in ckpt.tensors.items() if t.role == "param") == arrange(PARAMS)
    assert arrange(n for n, t in ckpt.tensors.items() if t.role == "buffer") == arrange(cb.BUFFER_NAMES)
    for name, ref in state.items():
        info = ckpt.tensors[name]
        assert info.shape == tuple(ref.shape)
        loaded = ckpt.load(name)
        assert loaded.dtype == torch.float32
        torch.testing.assert_close(loaded, ref.float(), rtol=0, atol=0)
    assert is_checkpoint_path(str(path))


def test_same_weight_facts_from_zip_legacy_safetensors_torchscript(tmp_path, state):
    paths = [FORMATS[f](tmp_path / f, state) for f in ("plain", "legacy", "safetensors", "torchscript")
             if (tmp_path / f).mkdir() is None]
    facts = [weight_stats("conv1.weight", open_checkpoint(str(p)).load("conv1.weight")) for p in paths]
    for other in facts[1:]:
        assert other.mean == facts[0].mean and other.std == facts[0].std
        assert other.abs_quantiles == facts[0].abs_quantiles
        assert (other.unit_absmax == facts[0].unit_absmax).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("writer", ["plain", "legacy", "safetensors"])
def test_half_precision_is_read_as_float32(tmp_path, state, dtype, writer):
    half = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
    ckpt = open_checkpoint(str(FORMATS[writer](tmp_path, half)))
    assert ckpt.tensors["fc.weight"].dtype == str(dtype).replace("torch.", "")
    loaded = ckpt.load("fc.weight")
    assert loaded.dtype == torch.float32
    torch.testing.assert_close(loaded, half["fc.weight"].float(), rtol=0, atol=0)


def test_noncontiguous_and_shared_storage_views(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    sd = {"t": base.T, "row": base[2], "whole": base}
    for writer in ("plain", "legacy"):
        (tmp_path / writer).mkdir()
        ckpt = open_checkpoint(str(FORMATS[writer](tmp_path / writer, sd)))
        for name, ref in sd.items():
            torch.testing.assert_close(ckpt.load(name), ref)


def test_lightning_metadata_step_and_optimizer(tmp_path):
    model, opt = cb.trained_model_and_optimizer("adam", steps=3)
    path = cb.write_lightning(tmp_path / "last.ckpt", model.state_dict(), epoch=3, global_step=120,
                              optimizer_state=opt.state_dict())
    ckpt = open_checkpoint(str(path))
    assert (ckpt.step, ckpt.step_source) == (120, "content")
    assert ckpt.metadata["epoch"] == 3
    assert ckpt.metadata["hyper_parameters"] == {"lr": 0.1, "depth": 3}
    assert [p.kind for p in ckpt.problems] == ["unsafe-pickle-neutralised"]
    assert "argparse.Namespace" in ckpt.problems[0].message and ckpt.problems[0].severity == "info"
    optim = ckpt.optimizer
    assert optim["kind"] == "adam" and optim["mapping"] == "shapes-verified" and optim["step"] == 3
    assert set(optim["grad_rms"]) == set(PARAMS)
    params = dict(model.named_parameters())
    for name in PARAMS:
        st = opt.state[params[name]]
        expected = math.sqrt(st["exp_avg_sq"].double().mean().item() / (1 - 0.999 ** 3))
        assert optim["grad_rms"][name] == pytest.approx(expected, rel=1e-9)


def test_sgd_momentum_grad_rms_and_adamw_kind(tmp_path):
    model, opt = cb.trained_model_and_optimizer("sgd", steps=2)
    ckpt = open_checkpoint(str(cb.write_nested(tmp_path / "a.pt", model.state_dict(), "model",
                                               optimizer=opt.state_dict())))
    buf = opt.state[model.fc.weight]["momentum_buffer"]
    assert ckpt.optimizer["kind"] == "sgd"
    assert ckpt.optimizer["grad_rms"]["fc.weight"] == pytest.approx(
        buf.double().pow(2).mean().sqrt().item() * (1 - 0.9), rel=1e-9)
    model, opt = cb.trained_model_and_optimizer("adamw", steps=1)
    ckpt = open_checkpoint(str(cb.write_nested(tmp_path / "b.pt", model.state_dict(), "model",
                                               optimizer_state_dict=opt.state_dict())))
    assert ckpt.optimizer["kind"] == "adamw"


def test_frozen_parameters_make_the_mapping_ambiguous(tmp_path):
    model, opt = cb.trained_model_and_optimizer("adam", freeze=("conv1.bias",))
    ckpt = open_checkpoint(str(cb.write_nested(tmp_path / "a.pt", model.state_dict(), "model",
                                               optimizer=opt.state_dict())))
    assert ckpt.optimizer["mapping"] == "ambiguous"
    assert "conv1.bias" not in ckpt.optimizer["grad_rms"]
    assert "fc.weight" in ckpt.optimizer["grad_rms"]


def test_hf_trainer_folder_step_and_optimizer(tmp_path):
    model, opt = cb.trained_model_and_optimizer("adamw", steps=2)
    folder = cb.write_hf_folder(tmp_path / "checkpoint-500", model.state_dict(), global_step=480,
                                optimizer_state=opt.state_dict())
    ckpt = open_checkpoint(str(folder))
    assert (ckpt.step, ckpt.step_source) == (480, "content")
    assert ckpt.format == "hf-folder/safetensors"
    # safetensors sorts names, so only shapes unique in the model can be mapped
    assert ckpt.optimizer["mapping"] == "ambiguous"
    assert sorted(ckpt.optimizer["grad_rms"]) == ["conv1.weight", "fc.bias", "fc.weight"]
    params = dict(model.named_parameters())
    expected = math.sqrt(opt.state[params["fc.weight"]]["exp_avg_sq"].double().mean().item()
                         / (1 - 0.999 ** 2))
    assert ckpt.optimizer["grad_rms"]["fc.weight"] == pytest.approx(expected, rel=1e-9)
    bin_folder = cb.write_hf_folder(tmp_path / "checkpoint-600", model.state_dict(), fmt="bin",
                                    optimizer_state=opt.state_dict())
    assert open_checkpoint(str(bin_folder)).optimizer["mapping"] == "shapes-verified"
    assert not is_checkpoint_path(str(folder / "optimizer.pt"))


def test_safetensors_metadata_step(tmp_path, state):
    ckpt = open_checkpoint(str(cb.write_safetensors(tmp_path / "w.safetensors", state, {"step": "77"})))
    assert (ckpt.step, ckpt.step_source, ckpt.metadata["step"]) == (77, "content", "77")


def test_trust_pickles_is_recorded(tmp_path, state):
    path = cb.write_whole_module(tmp_path / "w.pt", _model_with(state))
    ckpt = open_checkpoint(str(path), trust_pickles=True)
    assert [p.kind for p in ckpt.problems] == ["trusted-pickle"]
    torch.testing.assert_close(ckpt.load("fc.weight"), state["fc.weight"])
    script = open_checkpoint(str(cb.write_torchscript(tmp_path / "s.pt", _model_with(state))),
                             trust_pickles=True)
    assert script.problems[0].kind == "trusted-pickle" and "torch.jit.load" in script.problems[0].message
    torch.testing.assert_close(script.load("conv1.weight"), state["conv1.weight"])


def test_load_reads_only_the_requested_tensor(tmp_path, monkeypatch, state):
    path = cb.write_whole_module(tmp_path / "w.pt", _model_with(state))  # restricted-unpickler path
    reads = []
    real = storage.read_exact
    monkeypatch.setattr(storage, "read_exact", lambda p, off, n: reads.append(n) or real(p, off, n))
    ckpt = open_checkpoint(str(path))
    ckpt.load("fc.weight")
    assert reads == [state["fc.weight"].numel() * 4]


# ---------------------------------------------------------------------------------------------
# clear diagnoses

def _error(path, **kwargs) -> CheckpointError:
    with pytest.raises(CheckpointError) as info:
        open_checkpoint(str(path), **kwargs)
    assert isinstance(info.value, InputError)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    return info.value


def test_lfs_pointer_message(tmp_path):
    path = cb.write_lfs_pointer(tmp_path / "model.pt")
    err = _error(path)
    assert err.kind == "lfs-pointer"
    assert str(err) == (f"{path}: this is a Git LFS pointer to a 267,832,560-byte file; "
                        "fetch it with `git lfs pull`")


def test_html_and_text_files(tmp_path):
    err = _error(cb.write_html(tmp_path / "model.pt"))
    assert err.kind == "text-file" and "HTML page" in str(err)
    (tmp_path / "notes.pth").write_text("just some notes\n")
    assert "text file" in str(_error(tmp_path / "notes.pth"))


def test_empty_truncated_and_v1(tmp_path, state):
    (tmp_path / "empty.pt").write_bytes(b"")
    assert _error(tmp_path / "empty.pt").kind == "empty-file"
    full = cb.write_plain(tmp_path / "full.pt", state)
    assert _error(cb.write_truncated(tmp_path / "cut.pt", full)).kind == "truncated"
    legacy = cb.write_legacy(tmp_path / "legacy.pt", state)
    assert _error(cb.write_truncated(tmp_path / "cut_legacy.pt", legacy, 0.9)).kind == "truncated"
    sf = cb.write_safetensors(tmp_path / "w.safetensors", state)
    assert _error(cb.write_truncated(tmp_path / "cut.safetensors", sf)).kind == "truncated"
    assert _error(cb.write_torchscript_v1(tmp_path / "old.pt")).kind == "torchscript-v1"


def test_optimizer_only_scheduler_only_and_empty_folder(tmp_path):
    model, opt = cb.trained_model_and_optimizer("adam", steps=1)
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    assert _error(tmp_path / "opt.pt").kind == "optimizer-only"
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2)
    torch.save(sched.state_dict(), tmp_path / "sched.pt")
    assert _error(tmp_path / "sched.pt").kind == "scheduler-only"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    assert _error(tmp_path / "run").kind == "no-weights"
    torch.save({"epoch": 3, "best": 0.5}, tmp_path / "meta.pt")
    err = _error(tmp_path / "meta.pt")
    assert err.kind == "no-weights" and "best, epoch" in str(err)


def test_zip_without_data_pkl(tmp_path):
    with zipfile.ZipFile(tmp_path / "x.pt", "w") as zf:
        zf.writestr("readme.txt", "hello")
    assert _error(tmp_path / "x.pt").kind == "not-a-checkpoint"


# ---------------------------------------------------------------------------------------------
# names and order

@pytest.mark.parametrize("name,expected", [
    ("epoch_3.pt", 3), ("ckpt-1200.pth", 1200), ("epoch=3-step=120.ckpt", 120),
    ("checkpoint-500", 500), ("model_step_40.safetensors", 40), ("last.ckpt", None),
    ("iter_0009000.pth", 9000),
])
def test_step_from_name(name, expected):
    assert step_from_name(f"/runs/a/{name}") == expected


@pytest.mark.parametrize("name,expected", [
    ("w.pt", True), ("w.pth", True), ("w.ckpt", True), ("pytorch_model.bin", True),
    ("model.safetensors", True), ("model.safetensors.index.json", True), ("w.pkl", True),
    ("model-00001-of-00002.safetensors", False), ("optimizer.pt", False), ("rng_state_0.pth", False),
    ("events.out.tfevents.1.host", False), ("config.json", False), ("training_args.bin", False),
])
def test_is_checkpoint_path_by_name(tmp_path, name, expected):
    assert is_checkpoint_path(str(tmp_path / name)) is expected


def test_order_series_content_then_name_then_mtime(tmp_path, state):
    paths = {
        "b": cb.write_nested(tmp_path / "zz.pt", state, "model", global_step=50),  # content
        "a": cb.write_plain(tmp_path / "ckpt-10.pt", state),  # filename
        "c": cb.write_plain(tmp_path / "epoch_200.pt", state),
        "late": cb.write_plain(tmp_path / "last.pt", state),  # mtime only
        "early": cb.write_plain(tmp_path / "first.pt", state),
    }
    os.utime(paths["early"], (1000, 1000))
    os.utime(paths["late"], (2000, 2000))
    opened = [open_checkpoint(str(p)) for p in paths.values()]
    ordered = [os.path.basename(c.path) for c in order_series(opened)]
    assert ordered == ["ckpt-10.pt", "zz.pt", "epoch_200.pt", "first.pt", "last.pt"]
    assert [c.step_source for c in order_series(opened)] == ["filename", "content", "filename",
                                                             "mtime", "mtime"]


# ---------------------------------------------------------------------------------------------
# hostile and damaged files: only CheckpointError, checked at open time, bounded memory

import io  # noqa: E402
import json  # noqa: E402
import tarfile  # noqa: E402
from builders.memtools import peak_memory  # noqa: E402

import numpy as np  # noqa: E402

ONES = np.ones(64, np.float32).tobytes()


def _lightning_like(path, named_tensors, storages, extra=(), compression=zipfile.ZIP_STORED):
    """A torch zip the weights-only loader refuses (argparse.Namespace), so the restricted reader runs."""
    body = cb.pk_dict((cb.pk_str("hyper_parameters"), cb.pk_namespace()),
                      (cb.pk_str("state_dict"), cb.pk_state_dict(*named_tensors)), *extra)
    return cb.write_raw_torch_zip(path, cb.pk_dump(body), storages, compression)


def test_missing_storage_drops_only_that_tensor(tmp_path):
    path = _lightning_like(tmp_path / "a.pt", [("fc.weight", cb.pk_tensor("0", 4, (2, 2), (2, 1))),
                                               ("fc.bias", cb.pk_tensor("1", 2, (2,), (1,)))], {"0": ONES[:16]})
    ckpt = open_checkpoint(str(path))
    assert list(ckpt.tensors) == ["fc.weight"]
    problem = next(p for p in ckpt.problems if p.kind == "unreadable-tensor")
    assert problem.severity == "warning" and problem.count == 1 and "data/1 is missing" in problem.message
    torch.testing.assert_close(ckpt.load("fc.weight"), torch.ones(2, 2))


@pytest.mark.parametrize("tensor,reason", [
    (cb.pk_tensor("0", 4, (2, 2), (-2, 1), offset=3), "negative"),  # negative stride
    (cb.pk_tensor("0", 4, (8, 8), (8, 1)), "needs 64 elements"),  # beyond the 16-byte entry
    (cb.pk_tensor("0", 4, (2, 2), (2, 1), offset=2), "needs 6 elements"),  # offset pushes it out
    (cb.pk_tensor("0", 200_000_000, (200_000_000,), (1,)), "needs 200,000,000"),  # 800 MB claim
    (cb.pk_tensor("0", 4, (10**9,), (0,)), "repeat"),  # stride 0: 4 GB from 4 bytes
    (cb.pk_tensor("0", 4, (2, 2), (2,)), "do not match"),
], ids=["negative-stride", "beyond-entry", "offset-beyond", "huge-claim", "stride-0", "ndim-mismatch"])
def test_bad_views_are_refused_when_the_file_is_opened(tmp_path, tensor, reason):
    path = _lightning_like(tmp_path / "b.pt", [("fc.weight", tensor)], {"0": ONES[:16]})
    with peak_memory() as mem:
        err = _error(path)
    assert err.kind == "corrupt" and reason in str(err)
    assert mem["peak"] < 16 << 20


def test_overread_does_not_reach_the_next_zip_record(tmp_path):
    """64 floats claimed from a 16-byte entry: the bytes after it (the next record) are never read."""
    path = _lightning_like(tmp_path / "c.pt", [("w", cb.pk_tensor("0", 4, (8, 8), (8, 1))),
                                               ("ok", cb.pk_tensor("1", 4, (4,), (1,)))],
                           {"0": ONES[:16], "1": ONES[:16]})
    ckpt = open_checkpoint(str(path))
    assert list(ckpt.tensors) == ["ok"]
    with pytest.raises(CheckpointError) as info:
        ckpt.load("w")
    assert info.value.kind == "missing-tensor"


def test_legacy_storage_bounds_are_checked(tmp_path):
    def legacy(name, view_numel, shape, stride):
        root = cb.pk_dict((cb.pk_str("w"), cb.pk_call(
            cb.pk_global("torch._utils", "_rebuild_tensor_v2"),
            cb.pk_tuple(cb.pk_storage_id("k0", view_numel) + b"Q", cb.pk_int(0),
                        cb.pk_tuple(*map(cb.pk_int, shape)), cb.pk_tuple(*map(cb.pk_int, stride)), cb.PK_FALSE,
                        cb.pk_call(cb.pk_global("collections", "OrderedDict"), cb.pk_tuple())))))
        return cb.write_raw_legacy(tmp_path / name, root, ["k0"], [(4, ONES[:16])])

    good = open_checkpoint(str(legacy("good.pt", 4, (2, 2), (2, 1))))
    torch.testing.assert_close(good.load("w"), torch.ones(2, 2))
    assert _error(legacy("over.pt", 4, (4, 4), (4, 1))).kind == "corrupt"
    assert _error(legacy("neg.pt", 4, (2, 2), (-1, 1))).kind == "corrupt"


def test_non_numeric_optimizer_values_do_not_break_the_file(tmp_path):
    opt = cb.pk_dict(
        (cb.pk_str("state"), cb.pk_dict((cb.pk_int(0), cb.pk_dict(
            (cb.pk_str("exp_avg_sq"), cb.pk_tensor("1", 4, (2, 2), (2, 1))), (cb.pk_str("step"), cb.pk_int(3)))))),
        (cb.pk_str("param_groups"), cb.pk_list(cb.pk_dict(
            (cb.pk_str("params"), cb.pk_list(cb.pk_int(0))),
            (cb.pk_str("betas"), cb.pk_tuple(cb.pk_str("0.9"), cb.pk_str("x"))),
            (cb.pk_str("momentum"), cb.pk_str("y"))))))
    path = _lightning_like(tmp_path / "d.pt", [("fc.weight", cb.pk_tensor("0", 4, (2, 2), (2, 1)))],
                           {"0": ONES[:16], "1": ONES[:16]}, [(cb.pk_str("optimizer"), opt)])
    ckpt = open_checkpoint(str(path))
    assert ckpt.optimizer["kind"] == "adam" and ckpt.optimizer["grad_rms"] == {"fc.weight": 1.0}


def test_optimizer_state_with_a_missing_storage_is_skipped(tmp_path):
    opt = cb.pk_dict(
        (cb.pk_str("state"), cb.pk_dict((cb.pk_int(0), cb.pk_dict(
            (cb.pk_str("exp_avg_sq"), cb.pk_tensor("9", 4, (2, 2), (2, 1))))))),
        (cb.pk_str("param_groups"), cb.pk_list(cb.pk_dict((cb.pk_str("params"), cb.pk_list(cb.pk_int(0)))))))
    path = _lightning_like(tmp_path / "d.pt", [("fc.weight", cb.pk_tensor("0", 4, (2, 2), (2, 1)))],
                           {"0": ONES[:16]}, [(cb.pk_str("optimizer"), opt)])
    assert open_checkpoint(str(path)).optimizer["grad_rms"] == {}


@pytest.mark.parametrize("step", ["²", "٣", "9" * 5000, "-3", "1e3"],
                         ids=["superscript", "arabic-indic", "5000-digits", "negative", "float-text"])
def test_odd_step_strings_are_ignored(tmp_path, state, step):
    path = cb.write_nested(tmp_path / "ckpt-7.pt", state, "model", step=step)
    ckpt = open_checkpoint(str(path))
    assert (ckpt.step, ckpt.step_source) == (7, "filename")


def test_open_checkpoint_raises_only_checkpoint_error(tmp_path, monkeypatch, state):
    path = cb.write_plain(tmp_path / "w.pt", state)

    def boom(*_args, **_kwargs):
        raise RuntimeError("internal failure\nsecond line")

    monkeypatch.setattr(hf, "checkpoint_from_tree", boom)
    err = _error(path)
    assert err.kind == "unreadable" and "RuntimeError: internal failure" in str(err)


def test_load_failures_are_checkpoint_errors(tmp_path, state):
    path = cb.write_whole_module(tmp_path / "w.pt", _model_with(state))  # restricted reader
    ckpt = open_checkpoint(str(path))
    path.write_bytes(path.read_bytes()[:200])  # rewritten (cut) after it was opened
    with pytest.raises(CheckpointError) as info:
        ckpt.load("fc.weight")
    assert info.value.kind in ("truncated", "corrupt", "unreadable-tensor")
    plain = cb.write_plain(tmp_path / "p.pt", state)  # torch.load(mmap=True) reader
    mapped = open_checkpoint(str(plain))
    # a live run rewrites last.ckpt: rewritten in place (truncated), touching the old mapping would
    # kill the process (SIGBUS), so any change since opening is refused. Replaced here (new inode)
    # so that a regression fails this test instead of crashing pytest.
    (tmp_path / "new.pt").write_bytes(plain.read_bytes()[:100])
    os.replace(tmp_path / "new.pt", plain)
    with pytest.raises(CheckpointError) as info:
        mapped.load("fc.weight")
    assert info.value.kind == "unreadable-tensor" and "changed on disk" in str(info.value)


def test_read_exact_checks_the_size_before_allocating(tmp_path):
    path = tmp_path / "small.bin"
    path.write_bytes(b"\0" * 100)
    with peak_memory() as mem, pytest.raises(CheckpointError) as info:
        storage.read_exact(str(path), 10, 10**12)
    assert info.value.kind == "truncated" and mem["peak"] < 1 << 20


def _compressed_zero_storage(path, entry_mb=64):
    """A re-zipped (deflate) checkpoint: a 64 MB zero storage of which the tensor needs 16 bytes."""
    body = cb.pk_dict((cb.pk_str("hyper_parameters"), cb.pk_namespace()),
                      (cb.pk_str("state_dict"), cb.pk_state_dict(("w", cb.pk_tensor("0", 4, (2, 2), (2, 1))),
                                                                 ("tail", cb.pk_tensor("0", 4, (4,), (1,), offset=(entry_mb << 18) - 4)))))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", cb.pk_dump(body))
        with zf.open("archive/data/0", "w") as dst:
            dst.write(np.arange(4, dtype=np.float32).tobytes())
            chunk = bytes(1 << 20)
            for _ in range(entry_mb):
                dst.write(chunk)
    return path


def test_compressed_entries_are_streamed_not_inflated_whole(tmp_path):
    path = _compressed_zero_storage(tmp_path / "bomb.pt")
    assert path.stat().st_size < 1 << 20
    ckpt = open_checkpoint(str(path))
    with peak_memory() as mem:
        head = ckpt.load("w")
        tail = ckpt.load("tail")  # streams through the entry, keeping only 1 MiB chunks
    torch.testing.assert_close(head, torch.arange(4.0).reshape(2, 2))
    torch.testing.assert_close(tail, torch.zeros(4))
    assert mem["peak"] < 8 << 20


def test_rezipped_checkpoint_without_refusal_reads_through_the_stream(tmp_path, state):
    plain = cb.write_plain(tmp_path / "p.pt", state)
    rezipped = tmp_path / "z.pt"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(rezipped, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    ckpt = open_checkpoint(str(rezipped))
    torch.testing.assert_close(ckpt.load("conv1.weight"), state["conv1.weight"])


def test_torch_load_failure_is_corrupt_not_truncated(tmp_path, state):
    plain = cb.write_plain(tmp_path / "p.pt", state)
    broken = tmp_path / "broken.pt"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(broken, "w") as dst:
        for info in src.infolist():
            if not info.filename.endswith("/data/0"):
                dst.writestr(info, src.read(info))
    err = _error(broken)
    assert err.kind == "corrupt" and "torch.load failed" in str(err)
    assert _error(cb.write_truncated(tmp_path / "cut.pt", plain)).kind == "truncated"


def test_stray_bin_and_tar_files_are_not_checkpoints(tmp_path, state):
    (tmp_path / "notes.txt").write_text("hello\n")
    with tarfile.open(tmp_path / "data.tar", "w") as tar:
        tar.add(tmp_path / "notes.txt", arcname="notes.txt")
    (tmp_path / "vocab.bin").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "notes.bin").write_text("hello\n")
    for name in ("data.tar", "vocab.bin", "notes.bin"):
        assert not is_checkpoint_path(str(tmp_path / name)), name
    assert _error(tmp_path / "data.tar").kind == "not-a-checkpoint"
    assert _error(tmp_path / "vocab.bin").kind == "not-a-checkpoint"
    # torch, legacy and safetensors content keeps a .bin a checkpoint, as does the HF name
    assert is_checkpoint_path(str(cb.write_plain(tmp_path / "w.bin", state)))
    assert is_checkpoint_path(str(cb.write_legacy(tmp_path / "l.bin", state)))
    assert is_checkpoint_path(str(cb.write_safetensors(tmp_path / "s.bin", state)))
    assert is_checkpoint_path(str(cb.write_lfs_pointer(tmp_path / "pytorch_model.bin")))
    with tarfile.open(tmp_path / "old.tar", "w") as tar:  # the pre-0.4 torch tar layout
        for name in ("sys_info", "pickle", "tensors", "storages"):
            info = tarfile.TarInfo(name)
            info.size = 4
            tar.addfile(info, io.BytesIO(b"\0" * 4))
    assert is_checkpoint_path(str(tmp_path / "old.tar")) and _error(tmp_path / "old.tar").kind == "legacy-tar"


def _index(folder, weight_map):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.safetensors.index.json"
    path.write_text(json.dumps({"weight_map": weight_map}))
    return path


@pytest.mark.parametrize("shard", ["ABSOLUTE", "../outside/secret.safetensors", "sub/../../outside/secret.safetensors"])
def test_shard_paths_must_stay_inside_the_index_folder(tmp_path, state, shard):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.safetensors"
    secret.write_text("https://x-access-token:SECRET_TOKEN@github.com\n")
    shard = str(secret) if shard == "ABSOLUTE" else shard
    err = _error(_index(tmp_path / "run", {"x": shard}))
    assert err.kind == "unsafe-path" and "SECRET_TOKEN" not in str(err)
    assert _error(tmp_path / "run").kind == "unsafe-path"  # the folder route too


def test_symlinked_shards_outside_the_folder_are_refused(tmp_path, state):
    outside = tmp_path / "elsewhere.safetensors"
    outside.write_text("SECRET_TOKEN\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "model-00001-of-00001.safetensors").symlink_to(outside)
    err = _error(_index(run, {"x": "model-00001-of-00001.safetensors"}))
    assert err.kind == "unsafe-path" and "SECRET_TOKEN" not in str(err)
    link = run / "model.pt"
    link.symlink_to(outside)
    assert "SECRET_TOKEN" not in str(_error(link))  # content behind a link is never quoted


def test_hf_cache_snapshot_links_into_blobs_are_allowed(tmp_path, state):
    repo = tmp_path / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True)
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    cb.write_safetensors(repo / "blobs" / "f00d", state)
    (snapshot / "model-00001-of-00001.safetensors").symlink_to("../../blobs/f00d")
    ckpt = open_checkpoint(str(_index(snapshot, dict.fromkeys(state, "model-00001-of-00001.safetensors"))))
    torch.testing.assert_close(ckpt.load("fc.weight"), state["fc.weight"])


def test_compressed_entry_far_larger_than_its_tensors_need_is_refused(tmp_path):
    path = _compressed_zero_storage(tmp_path / "bomb.pt", entry_mb=80)  # 'w' needs 16 bytes of 80 MB
    ckpt = open_checkpoint(str(path))
    assert list(ckpt.tensors) == ["tail"]  # 'tail' really needs the whole entry
    problem = next(p for p in ckpt.problems if p.kind == "unreadable-tensor")
    assert "zip bomb" in problem.message and problem.count == 1


def test_stride_0_repetition_is_bounded_per_file(tmp_path):
    # each view repeats one stored value ~1M times (allowed alone); twelve of them exceed the file budget
    views = [(f"w{i}", cb.pk_tensor("0", 4, (1000, 1000), (0, 0))) for i in range(12)]
    ckpt = open_checkpoint(str(_lightning_like(tmp_path / "amp.pt", views, {"0": ONES[:16]})))
    assert 0 < len(ckpt.tensors) < 12
    problem = next(p for p in ckpt.problems if p.kind == "unreadable-tensor")
    assert "stride-0 views" in problem.message and problem.count == 12 - len(ckpt.tensors)
