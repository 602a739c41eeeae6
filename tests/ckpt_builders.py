"""Writers for every checkpoint format report_gen reads, with tiny tensors (importable by any test).

All builders take a destination path and a state dict (usually `tiny_state()`), so the same weights
can be written in each format and the facts compared.
"""
from __future__ import annotations

import argparse
import json
import os
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

BUFFER_NAMES = ("bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked")


class TinyNet(nn.Module):
    """conv -> batchnorm -> linear; parameter order: conv1.weight, conv1.bias, bn1.weight, bn1.bias,
    fc.weight, fc.bias (buffers: bn1.running_mean/var/num_batches_tracked)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3)
        self.bn1 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn1(self.conv1(x)).mean(dim=(2, 3)))


def tiny_model(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    model = TinyNet()
    with torch.no_grad():
        model.bn1.running_mean.uniform_(-1, 1)
        model.bn1.running_var.uniform_(0.5, 2)
        model.bn1.num_batches_tracked.fill_(7)
    return model


def tiny_state(seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict((k, v.clone()) for k, v in tiny_model(seed).state_dict().items())


def trained_model_and_optimizer(kind: str = "adam", steps: int = 3, seed: int = 0,
                                freeze: tuple[str, ...] = ()) -> tuple[TinyNet, torch.optim.Optimizer]:
    """A TinyNet after `steps` optimizer steps (adam | adamw | sgd with momentum 0.9)."""
    model = tiny_model(seed)
    for name, p in model.named_parameters():
        p.requires_grad_(name not in freeze)
    params = [p for p in model.parameters() if p.requires_grad]
    if kind == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    elif kind == "adamw":
        opt = torch.optim.AdamW(params, lr=1e-3)
    else:
        opt = torch.optim.Adam(params, lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(2, 2, 5, 5, generator=generator)).pow(2).sum().backward()
        opt.step()
    return model, opt


def write_plain(path: Path, state: dict, **save_kwargs) -> Path:
    torch.save(state, path, **save_kwargs)
    return path


def write_nested(path: Path, state: dict, key: str, **extra) -> Path:
    torch.save({key: state, **extra}, path)
    return path


def write_lightning(path: Path, state: dict, *, epoch: int = 3, global_step: int = 120,
                    optimizer_state: dict | None = None) -> Path:
    """A PyTorch Lightning .ckpt: `model.` prefix, Namespace hyper-parameters, optimizer_states."""
    torch.save({
        "epoch": epoch,
        "global_step": global_step,
        "pytorch-lightning_version": "2.1.0",
        "state_dict": OrderedDict((f"model.{k}", v) for k, v in state.items()),
        "hyper_parameters": argparse.Namespace(lr=0.1, depth=3),
        "optimizer_states": [optimizer_state] if optimizer_state else [],
        "lr_schedulers": [],
    }, path)
    return path


def write_dataparallel(path: Path, state: dict) -> Path:
    torch.save(OrderedDict((f"module.{k}", v) for k, v in state.items()), path)
    return path


def write_legacy(path: Path, state: dict) -> Path:
    torch.save(state, path, _use_new_zipfile_serialization=False)
    return path


def write_safetensors(path: Path, state: dict, metadata: dict[str, str] | None = None) -> Path:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=metadata)
    return path


def _split(state: dict, shards: int) -> list[dict]:
    names = list(state)
    size = -(-len(names) // shards)
    return [{n: state[n] for n in names[i:i + size]} for i in range(0, len(names), size)]


def write_sharded(folder: Path, state: dict, *, shards: int = 2, fmt: str = "safetensors") -> Path:
    """HF sharded weights + index: model-0000i-of-0000n.safetensors or pytorch_model-...bin."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = _split(state, shards)
    stem, ext = ("model", "safetensors") if fmt == "safetensors" else ("pytorch_model", "bin")
    weight_map = {}
    for i, part in enumerate(parts, start=1):
        shard = f"{stem}-{i:05d}-of-{len(parts):05d}.{ext}"
        if fmt == "safetensors":
            write_safetensors(folder / shard, part)
        else:
            torch.save(part, folder / shard)
        weight_map.update(dict.fromkeys(part, shard))
    index = folder / f"{stem}.{ext}.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return index


def write_hf_folder(folder: Path, state: dict, *, fmt: str = "safetensors", shards: int = 1,
                    global_step: int | None = None, optimizer_state: dict | None = None) -> Path:
    """A Hugging Face model/Trainer checkpoint folder (config.json, weights, trainer_state.json)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "tiny", "architectures": ["TinyNet"]}))
    if shards > 1:
        write_sharded(folder, state, shards=shards, fmt=fmt)
    elif fmt == "safetensors":
        write_safetensors(folder / "model.safetensors", state)
    else:
        torch.save(state, folder / "pytorch_model.bin")
    if global_step is not None:
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": global_step, "epoch": 1.0}))
    if optimizer_state is not None:
        torch.save(optimizer_state, folder / "optimizer.pt")
    return folder


def write_torchscript(path: Path, model: nn.Module) -> Path:
    torch.jit.save(torch.jit.script(model.eval()), str(path))
    return path


def write_whole_module(path: Path, model: nn.Module) -> Path:
    torch.save(model, path)
    return path


def write_lfs_pointer(path: Path, size: int = 267_832_560) -> Path:
    path.write_text("version https://git-lfs.github.com/spec/v1\n"
                    "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
                    f"size {size}\n")
    return path


def write_html(path: Path) -> Path:
    path.write_text("<!DOCTYPE html>\n<html><body>404 Not Found</body></html>\n")
    return path


def write_truncated(path: Path, source: Path, keep: float = 0.5) -> Path:
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def write_torchscript_v1(path: Path) -> Path:
    """The layout of pre-1.4 TorchScript archives (model.json + tensors/), enough to be recognised."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/version", "1\n")
        zf.writestr("archive/model.json", json.dumps({"protoVersion": "1"}))
        zf.writestr("archive/tensors/0", b"\0" * 16)
    return path


class MarkerWriter:
    """Unpickling this runs a shell command that creates `marker` (a malicious pickle payload)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class MarkerOpener:
    """Unpickling this calls builtins.open(marker, "w"), which creates the file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_malicious(path: Path, state: dict | None, marker: Path) -> Path:
    """A torch zip checkpoint whose pickle would create `marker` twice over when unpickled."""
    payload = {"evil": MarkerWriter(str(marker)), "evil2": MarkerOpener(str(marker))}
    if state is not None:
        payload["state_dict"] = state
    torch.save(payload, path)
    return path
