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


# ---------------------------------------------------------------------------------------------
# hostile files: a tiny pickle assembler (opcodes by hand, so nothing is ever pickled from a real
# object) and raw torch zip / legacy writers around it

import pickle  # noqa: E402
import struct  # noqa: E402


def pk_global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def pk_str(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def pk_bytes(raw: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(raw)) + raw


def pk_int(n: int) -> bytes:
    return b"J" + struct.pack("<i", n) if -2**31 <= n < 2**31 else b"L" + str(n).encode() + b"L\n"


def pk_tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def pk_list(*items: bytes) -> bytes:
    return b"]" + (b"(" + b"".join(items) + b"e" if items else b"")


def pk_call(func: bytes, args: bytes) -> bytes:
    return func + args + b"R"


def pk_build(obj: bytes, state: bytes) -> bytes:
    return obj + state + b"b"


def pk_dict(*pairs: tuple[bytes, bytes]) -> bytes:
    return b"}" + (b"(" + b"".join(k + v for k, v in pairs) + b"u" if pairs else b"")


PK_NONE, PK_FALSE, PK_TRUE = b"N", b"\x89", b"\x88"


def pk_dump(body: bytes) -> bytes:
    return b"\x80\x02" + body + b"."


def pk_storage_id(key: str, numel: int, storage_type: str = "FloatStorage", view: bytes | None = None) -> bytes:
    items = [pk_str("storage"), pk_global("torch", storage_type), pk_str(key), pk_str("cpu"), pk_int(numel)]
    if view is not None:
        items.append(view)
    return pk_tuple(*items)


def pk_tensor(key: str, numel: int, shape: tuple, stride: tuple, offset: int = 0,
              storage_type: str = "FloatStorage") -> bytes:
    """torch._utils._rebuild_tensor_v2(persistent storage, offset, shape, stride, False, OrderedDict())."""
    return pk_call(pk_global("torch._utils", "_rebuild_tensor_v2"),
                   pk_tuple(pk_storage_id(key, numel, storage_type) + b"Q", pk_int(offset),
                            pk_tuple(*[pk_int(s) for s in shape]), pk_tuple(*[pk_int(s) for s in stride]),
                            PK_FALSE, pk_call(pk_global("collections", "OrderedDict"), pk_tuple())))


def pk_namespace() -> bytes:
    """argparse.Namespace(): makes torch's weights_only loader refuse, so the restricted reader runs."""
    return pk_call(pk_global("argparse", "Namespace"), pk_tuple())


def pk_state_dict(*named: tuple[str, bytes]) -> bytes:
    return pk_dict(*[(pk_str(n), t) for n, t in named])


def write_raw_torch_zip(path: Path, data_pkl: bytes, storages: dict[str, bytes] | None = None,
                        compression: int = zipfile.ZIP_STORED) -> Path:
    """A torch zip by hand: archive/data.pkl + archive/data/<key> (+ archive/version)."""
    with zipfile.ZipFile(path, "w", compression) as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/version", "3\n")
        for key, raw in (storages or {}).items():
            zf.writestr(f"archive/data/{key}", raw)
    return path


def write_raw_legacy(path: Path, root_body: bytes, keys: list[str], blocks: list[tuple[int, bytes]]) -> Path:
    """A legacy (non-zip) torch file by hand: magic, protocol, sys info, root pickle, storage keys,
    then per key an int64 element count and the raw bytes."""
    with open(path, "wb") as f:
        f.write(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2))
        f.write(pickle.dumps(1001, protocol=2))
        f.write(pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2))
        f.write(pk_dump(root_body))
        f.write(pickle.dumps(keys, protocol=2))
        for numel, raw in blocks:
            f.write(struct.pack("<q", numel) + raw)
    return path


def pk_numpy_dtype(spec: str) -> bytes:
    return pk_call(pk_global("numpy", "dtype"), pk_tuple(pk_str(spec), PK_FALSE, PK_TRUE))


def pk_object_pointer_array() -> bytes:
    """The segfault reproduction: a 'V16' dtype re-BUILT into two object fields, then an ndarray
    whose raw bytes (0x41...) would be dereferenced by numpy as PyObject pointers."""
    obj = pk_numpy_dtype("O8")
    evil = pk_build(pk_numpy_dtype("V16"), pk_tuple(
        pk_int(3), pk_str("|"), PK_NONE, pk_tuple(pk_str("a"), pk_str("b")),
        pk_dict((pk_str("a"), pk_tuple(obj, pk_int(0))), (pk_str("b"), pk_tuple(obj, pk_int(8)))),
        pk_int(16), pk_int(1), pk_int(0)))
    arr = pk_call(pk_global("numpy.core.multiarray", "_reconstruct"),
                  pk_tuple(pk_global("numpy", "ndarray"), pk_tuple(pk_int(0)), b"C\x01b"))
    return pk_build(arr, pk_tuple(pk_int(1), pk_tuple(pk_int(1)), evil, PK_FALSE, b"C\x10" + b"\x41" * 16))
