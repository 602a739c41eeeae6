"""Checkpoint reader: every format yields the same tensors, clear errors, optimizer mapping, order."""
from __future__ import annotations

import math
import os
import zipfile

import pytest
import torch

import ckpt_builders as cb
from report_gen.core import InputError
from report_gen.facts.weights import weight_stats
from report_gen.readers import checkpoints as ck
from report_gen.readers.checkpoints import (CheckpointError, is_checkpoint_path, open_checkpoint,
                                            order_series)

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
    real = ck._read_exact
    monkeypatch.setattr(ck, "_read_exact", lambda p, off, n: reads.append(n) or real(p, off, n))
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
    assert ck.step_from_name(f"/runs/a/{name}") == expected


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
