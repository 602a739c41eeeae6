"""Open PyTorch checkpoints of every common shape, lazily and without running code from them.

Layers, from the bytes up:

1. sniffing (`_sniff`): empty file, Git LFS pointer, text/HTML, zip, legacy torch, plain pickle,
   safetensors, tar; each unusable case is a `CheckpointError` with a one-line message and a `kind`;
2. a *tree* per file (`_TorchTree`): the unpickled object where tensors are either real tensors
   (from `torch.load(weights_only=True, mmap=True)`) or `TensorRef`s (restricted unpickler), plus a
   `materialise(leaf)` that returns one float32 tensor reading only that tensor's bytes;
3. interpretation (`_checkpoint_from_tree`): find the state dict (plain, nested under
   model/state_dict/..., Lightning, DataParallel, a pickled or scripted module), strip prefixes,
   split params from buffers, pick metadata and the training step, and map optimizer state back
   to parameter names.

safetensors files, shards (`*.index.json`) and Hugging Face folders are read through `safe_open`.
Only `trust_pickles=True` ever calls `torch.load(weights_only=False)` or `torch.jit.load`.
"""
from __future__ import annotations

import ctypes
import io
import json
import math
import mmap
import os
import pickle
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch

from report_gen.core import InputError, Problem
from report_gen.numeric import float64_sum
from report_gen.readers.safe_unpickle import (
    Placeholder,
    StorageRef,
    TensorRef,
    is_dangerous_global,
    restricted_load,
    storage_ref_from_pid,
)
from report_gen.readers.paths import (
    _folder_weights_file,
    is_checkpoint_path,
)
from report_gen.readers.types import CheckpointData, TensorInfo

Leaf = Any  # torch.Tensor | TensorRef


class CheckpointError(InputError):
    """Nothing usable could be read from a checkpoint. `kind` is a short machine-readable key:
    "empty-file", "lfs-pointer", "text-file", "truncated", "not-a-checkpoint", "optimizer-only",
    "scheduler-only", "no-weights", "unsafe-pickle", "torchscript-v1", "legacy-tar", "unsupported"."""

    def __init__(self, path: str, kind: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.kind = kind


# --------------------------------------------------------------------------------------------
# sniffing

_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."


def _sniff(path: str) -> str:
    """Classify a file by its first bytes: "zip" | "legacy" | "pickle" | "safetensors".

    Raises CheckpointError for files that cannot be a checkpoint at all.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(1024)
    except OSError as exc:
        raise CheckpointError(path, "unreadable", f"cannot read file ({exc.strerror})") from None
    if size == 0:
        raise CheckpointError(path, "empty-file", "file is empty (0 bytes)")
    if head.startswith(b"version https://git-lfs"):
        match = re.search(rb"size (\d+)", head)
        target = f"a {int(match.group(1)):,}-byte file" if match else "a file"
        raise CheckpointError(path, "lfs-pointer",
                              f"this is a Git LFS pointer to {target}; fetch it with `git lfs pull`")
    if head.startswith(b"PK"):
        return "zip"
    if head.startswith(_LEGACY_MAGIC):
        return "legacy"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if head[:1] == b"\x80":
        return "pickle"
    if len(head) > 262 and head[257:262] == b"ustar":
        raise CheckpointError(path, "legacy-tar", "this is a pre-0.4 torch tar checkpoint, which is "
                                                  "not supported; re-save it with a recent torch")
    raise CheckpointError(path, *_describe_non_checkpoint(head))


def _describe_non_checkpoint(head: bytes) -> tuple[str, str]:
    """(kind, message) for bytes that are no known checkpoint format."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if not text or any(ord(c) < 32 and c not in "\t\n\r" for c in text):
        return "not-a-checkpoint", "unknown binary format (not torch zip/legacy, pickle or safetensors)"
    first = text.strip().splitlines()[0][:40] if text.strip() else ""
    what = "an HTML page" if "<html" in text.lower() or "<!doctype" in text.lower() else "a text file"
    return "text-file", f"this is {what} (starts with {first!r}), not a checkpoint"


# --------------------------------------------------------------------------------------------
# reading storage bytes


def _read_exact(path: str, offset: int, nbytes: int) -> bytearray:
    buf = bytearray(nbytes)
    with open(path, "rb") as f:
        f.seek(offset)
        got = f.readinto(buf)
    if got != nbytes:
        raise CheckpointError(path, "truncated", f"tensor data ends early (wanted {nbytes} bytes at "
                                                 f"offset {offset}, got {got})")
    return buf


def _tensor_from_bytes(buf: bytearray, ref: TensorRef, first: int) -> torch.Tensor:
    """Build the float32 tensor `ref` from the bytes of its storage starting at element `first`."""
    flat = torch.frombuffer(buf, dtype=ref.dtype) if len(buf) else torch.empty(0, dtype=ref.dtype)
    view = flat.as_strided(ref.shape, ref.stride, ref.offset - first)
    return view.to(torch.float32) if view.dtype != torch.float32 else view.contiguous()


class _ZipStorages:
    """Byte ranges of `<archive>/data/<key>` entries in a torch zip, read without extracting."""

    def __init__(self, path: str, zf: zipfile.ZipFile, prefix: str) -> None:
        self.path = path
        self._entries = {info.filename[len(prefix):]: info for info in zf.infolist()
                         if info.filename.startswith(prefix)}

    def _data_offset(self, info: zipfile.ZipInfo) -> int:
        with open(self.path, "rb") as f:
            f.seek(info.header_offset)
            header = f.read(30)
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        return info.header_offset + 30 + name_len + extra_len

    def read(self, ref: TensorRef) -> torch.Tensor:
        first, count = ref.element_span()
        info = self._entries.get(ref.storage.key)
        if info is None:
            raise CheckpointError(self.path, "truncated", f"storage data/{ref.storage.key} is missing")
        itemsize = torch.empty(0, dtype=ref.dtype).element_size()
        start = (ref.storage.view_offset + first) * itemsize
        if info.compress_type == zipfile.ZIP_STORED:
            buf = _read_exact(self.path, self._data_offset(info) + start, count * itemsize)
        else:  # re-zipped with compression: decompress this one entry
            with zipfile.ZipFile(self.path) as zf:
                buf = bytearray(zf.read(info)[start:start + count * itemsize])
        return _tensor_from_bytes(buf, ref, first)


class _LegacyStorages:
    """Storage data blocks of a legacy (pre-1.6, `_use_new_zipfile_serialization=False`) file.

    After the pickles come, for each storage key in order, an int64 element count and the raw bytes.
    """

    def __init__(self, path: str, keys: list[str], data_start: int, dtypes: dict[str, torch.dtype]):
        self.path = path
        self._offsets: dict[str, int] = {}
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            pos = data_start
            for key in keys:
                f.seek(pos)
                header = f.read(8)
                if len(header) < 8:
                    raise CheckpointError(path, "truncated", "legacy checkpoint ends inside its tensor data")
                (numel,) = struct.unpack("<q", header)
                self._offsets[key] = pos + 8
                pos += 8 + numel * torch.empty(0, dtype=dtypes.get(key, torch.uint8)).element_size()
        if pos > size:
            raise CheckpointError(path, "truncated", f"legacy checkpoint is {size:,} bytes, its tensor "
                                                     f"data needs {pos:,}")

    def read(self, ref: TensorRef) -> torch.Tensor:
        first, count = ref.element_span()
        itemsize = torch.empty(0, dtype=ref.dtype).element_size()
        start = self._offsets[ref.storage.key] + (ref.storage.view_offset + first) * itemsize
        return _tensor_from_bytes(_read_exact(self.path, start, count * itemsize), ref, first)


def _libc_madvise() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):  # pragma: no cover - non-POSIX
        return None


_MADVISE = _libc_madvise()
_MADV_DONTNEED = 4


def _release_mapped_pages(tensor: torch.Tensor) -> None:
    """Drop the resident pages of a tensor that lives in a read-only file mapping (mmap=True).

    The pages are clean copies of the file, so the next access simply re-reads them; this keeps
    the resident size near one tensor instead of growing to the whole file. Best effort.
    """
    if _MADVISE is None:
        return
    storage = tensor.untyped_storage()
    ptr, nbytes = storage.data_ptr(), storage.nbytes()
    start = ptr - ptr % mmap.PAGESIZE
    _MADVISE(ctypes.c_void_p(start), ctypes.c_size_t(ptr + nbytes - start), _MADV_DONTNEED)


# --------------------------------------------------------------------------------------------
# torch pickles -> tree


@dataclass
class _TorchTree:
    """An unpickled torch file: `root` plus a way to turn one leaf into a float32 tensor."""

    root: Any
    format: str
    materialise: Callable[[Leaf], torch.Tensor]
    problems: list[Problem] = field(default_factory=list)


def _is_leaf(value: Any) -> bool:
    return isinstance(value, (torch.Tensor, TensorRef))


def _mapped_materialiser(leaf: Leaf) -> torch.Tensor:
    """float32 copy of a tensor from `torch.load(mmap=True)`, then its pages are released."""
    out = leaf.detach().to(torch.float32, copy=True)
    _release_mapped_pages(leaf)
    return out


def _memory_materialiser(leaf: Leaf) -> torch.Tensor:
    return leaf.detach().to(torch.float32, copy=True)


def _weights_only_refusal(exc: Exception) -> bool:
    return isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in str(exc)


def _neutralised_problem(path: str, replaced: list[str]) -> Problem:
    dangerous = [g for g in replaced if is_dangerous_global(g)]
    shown = ", ".join(replaced[:8]) + (f" and {len(replaced) - 8} more" if len(replaced) > 8 else "")
    message = (f"read without executing the pickle: {len(replaced)} global(s) replaced by inert "
               f"placeholders ({shown})")
    if dangerous:
        message += f"; the file tries to call {', '.join(dangerous)}"
    return Problem(file=path, kind="unsafe-pickle-neutralised", message=message,
                   severity="warning" if dangerous else "info", count=len(replaced))


def _trusted_problem(path: str, how: str) -> Problem:
    return Problem(file=path, kind="trusted-pickle", severity="warning",
                   message=f"loaded with {how} because --trust-pickles was given: code in the file was "
                           f"allowed to run")


def _zip_archive_prefix(zf: zipfile.ZipFile, path: str) -> tuple[str, list[str]]:
    names = zf.namelist()
    pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
    if not pkl:
        if any(n.endswith("model.json") for n in names):
            raise CheckpointError(path, "torchscript-v1", "this is an old TorchScript (v1, model.json) "
                                                          "archive; re-save it with a recent torch")
        raise CheckpointError(path, "not-a-checkpoint", "zip archive without data.pkl (not a torch.save file)")
    return pkl[0][: -len("data.pkl")], names


def _open_zip(path: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError):
        raise CheckpointError(path, "truncated", "truncated or corrupt zip archive (no readable central "
                                                 "directory); the save or download was interrupted") from None


def _load_zip_tree(path: str, trust: bool) -> _TorchTree:
    with _open_zip(path) as zf:
        prefix, names = _zip_archive_prefix(zf, path)
        is_script = f"{prefix}constants.pkl" in names and any(n.startswith(f"{prefix}code/") for n in names)
        if is_script and trust:
            module = torch.jit.load(path, map_location="cpu")
            return _TorchTree(module, "torchscript", _memory_materialiser,
                              [_trusted_problem(path, "torch.jit.load")])
        if not is_script:
            tree = _torch_load_zip(path, trust)
            if tree is not None:
                return tree
        try:
            data = zf.read(f"{prefix}data.pkl")
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error):
            raise CheckpointError(path, "truncated", "data.pkl inside the archive is damaged") from None
        storages = _ZipStorages(path, zf, f"{prefix}data/")
    root, replaced = _restricted(path, data, storage_ref_from_pid)
    problems = [_neutralised_problem(path, replaced)] if replaced else []
    return _TorchTree(root, "torchscript" if is_script else "torch-zip", storages.read, problems)


def _torch_load_zip(path: str, trust: bool) -> _TorchTree | None:
    """torch.load with mmap (weights_only unless trusted); None when weights_only refuses."""
    try:
        root = torch.load(path, map_location="cpu", mmap=True, weights_only=not trust)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged files
        if _weights_only_refusal(exc):
            return None
        raise CheckpointError(path, "truncated", f"torch.load failed: {_one_line(exc)}") from None
    problems = [_trusted_problem(path, "torch.load(weights_only=False)")] if trust else []
    return _TorchTree(root, "torch-zip", _mapped_materialiser, problems)


def _restricted(path: str, data: bytes | io.BufferedReader, persistent: Callable | None
                ) -> tuple[Any, list[str]]:
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        return restricted_load(stream, persistent)
    except CheckpointError:
        raise
    except EOFError:
        raise CheckpointError(path, "truncated", "pickle data ends early (truncated file)") from None
    except Exception as exc:  # noqa: BLE001 - any malformed pickle
        raise CheckpointError(path, "not-a-checkpoint", f"unreadable pickle: {_one_line(exc)}") from None


def _one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]


def _load_legacy_tree(path: str, trust: bool) -> _TorchTree:
    if trust:
        root = torch.load(path, map_location="cpu", weights_only=False)
        return _TorchTree(root, "torch-legacy", _memory_materialiser,
                          [_trusted_problem(path, "torch.load(weights_only=False)")])
    refs: dict[str, StorageRef] = {}

    def persistent(pid: Any) -> Any:
        if isinstance(pid, tuple) and pid and pid[0] == "module":
            return pid[1]  # legacy pickled module class: (tag, class, source file, source)
        ref = storage_ref_from_pid(pid)
        refs.setdefault(ref.key, ref)
        return ref

    with open(path, "rb") as f:
        for _ in range(3):  # magic number, protocol version, sys info
            _restricted(path, f, None)
        root, replaced = _restricted(path, f, persistent)
        keys, _ = _restricted(path, f, None)
        data_start = f.tell()
    storages = _LegacyStorages(path, [str(k) for k in keys], data_start,
                               {k: r.dtype for k, r in refs.items()})
    problems = [_neutralised_problem(path, replaced)] if replaced else []
    return _TorchTree(root, "torch-legacy", storages.read, problems)


def _load_pickle_tree(path: str, trust: bool) -> _TorchTree:
    """A plain pickle (.pkl): small files by nature, read eagerly."""
    if trust:
        with open(path, "rb") as f:
            root = pickle.load(f)  # noqa: S301 - explicitly trusted by the user
        return _TorchTree(root, "pickle", _memory_materialiser, [_trusted_problem(path, "pickle.load")])
    with open(path, "rb") as f:
        root, replaced = _restricted(path, f, None)
    problems = [_neutralised_problem(path, replaced)] if replaced else []
    return _TorchTree(root, "pickle", _memory_materialiser, problems)


def _load_torch_tree(path: str, trust: bool) -> _TorchTree:
    kind = _sniff(path)
    if kind == "zip":
        return _load_zip_tree(path, trust)
    if kind == "legacy":
        return _load_legacy_tree(path, trust)
    if kind == "pickle":
        return _load_pickle_tree(path, trust)
    raise CheckpointError(path, "not-a-checkpoint", f"expected a torch file, found {kind}")


# --------------------------------------------------------------------------------------------
# interpreting a tree

_WEIGHT_KEYS = ("state_dict", "model_state_dict", "model", "net", "module", "network",
                "ema", "state_dict_ema", "model_ema")
_OPTIMIZER_KEYS = ("optimizer", "optimizer_state_dict", "optimizer_states", "optim", "opt",
                   "optimizer_state")
_STEP_KEYS = ("global_step", "step", "iteration", "iter", "epoch")
_HPARAM_KEYS = ("hyper_parameters", "hparams", "args", "config", "cfg")
_STRIP_PREFIXES = ("module.", "model.", "_orig_mod.")
_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def _as_mapping(obj: Any) -> Mapping | None:
    if isinstance(obj, Mapping):
        return obj
    if isinstance(obj, Placeholder) and obj.items:  # an unknown dict subclass
        return obj.items
    return None


def _is_module_like(obj: Any) -> bool:
    return isinstance(obj, torch.nn.Module) or (isinstance(obj, Placeholder) and bool(obj.attributes))


def _role_by_name(name: str, floating: bool) -> str:
    """"buffer" for BatchNorm statistics and non-float tensors (never trainable), else "param"."""
    return "param" if floating and not name.endswith(_BUFFER_SUFFIXES) else "buffer"


def _is_floating(leaf: Leaf) -> bool:
    return leaf.dtype.is_floating_point or leaf.dtype.is_complex


def _walk_module(obj: Any, prefix: str, out: dict[str, tuple[Leaf, str]], seen: set[int]) -> None:
    """Collect (leaf, role) by dotted name from a real or placeholder module tree."""
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.nn.Module):
        params = {n for n, _ in obj.named_parameters()}
        for name, value in obj.state_dict().items():
            out[prefix + name] = (value, "param" if name in params else "buffer")
        return
    attrs = obj.attributes
    if "_parameters" in attrs or "_modules" in attrs:
        skip = set(attrs.get("_non_persistent_buffers_set") or ())
        for name, value in (_as_mapping(attrs.get("_parameters")) or {}).items():
            if _is_leaf(value):
                out[prefix + name] = (value, "param")
        for name, value in (_as_mapping(attrs.get("_buffers")) or {}).items():
            if _is_leaf(value) and name not in skip:
                out[prefix + name] = (value, "buffer")
        children = (_as_mapping(attrs.get("_modules")) or {}).items()
    else:  # TorchScript objects and plain classes: tensors are attributes
        for name, value in attrs.items():
            if _is_leaf(value):
                out[prefix + name] = (value, _role_by_name(name, _is_floating(value)))
        children = ((n, v) for n, v in attrs.items() if isinstance(v, Placeholder))
    for name, child in children:
        if _is_module_like(child):
            _walk_module(child, f"{prefix}{name}.", out, seen)


def _is_state_dict(mapping: Mapping) -> bool:
    values = list(mapping.values())
    return bool(values) and all(isinstance(k, str) for k in mapping) and all(_is_leaf(v) for v in values)


def _find_weights(obj: Any, depth: int = 0) -> dict[str, tuple[Leaf, str]] | None:
    """name -> (leaf, role) of the model weights inside `obj`, or None."""
    if depth > 4:
        return None
    if _is_module_like(obj) and _as_mapping(obj) is None:
        out: dict[str, tuple[Leaf, str]] = {}
        _walk_module(obj, "", out, set())
        return out or None
    mapping = _as_mapping(obj)
    if mapping is None:
        return None
    if _is_state_dict(mapping):
        return {k: (v, "param" if isinstance(v, TensorRef) and v.is_param
                    else _role_by_name(k, _is_floating(v)))
                for k, v in mapping.items()}
    for key in _WEIGHT_KEYS:
        if key in mapping:
            found = _find_weights(mapping[key], depth + 1)
            if found:
                return found
    return None


def _strip_prefixes(names: Iterable[str]) -> dict[str, str]:
    """original -> stripped name, removing `module.` / `model.` / `_orig_mod.` shared by all names."""
    mapping = {n: n for n in names}
    changed = True
    while changed and mapping:
        changed = False
        for prefix in _STRIP_PREFIXES:
            if all(v.startswith(prefix) and len(v) > len(prefix) for v in mapping.values()):
                mapping = {k: v[len(prefix):] for k, v in mapping.items()}
                changed = True
    return mapping


def _plain(value: Any, depth: int = 0) -> Any:
    """A small JSON-friendly copy of metadata (placeholders become their attributes or name)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if depth > 3:
        return str(value)[:80]
    if isinstance(value, Placeholder):
        return _plain(value.attributes, depth + 1) if value.attributes else value.global_name
    if isinstance(value, Mapping):
        return {str(k): _plain(v, depth + 1) for k, v in list(value.items())[:100] if not _is_leaf(v)}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value[:50] if not _is_leaf(v)]
    if hasattr(value, "__dict__") and not isinstance(value, torch.nn.Module):  # trusted Namespace etc.
        return _plain(vars(value), depth + 1)
    return str(value)[:80]


def _metadata(root: Any) -> dict[str, Any]:
    mapping = _as_mapping(root) or {}
    meta = {str(k): _plain(v) for k, v in mapping.items()
            if isinstance(v, (bool, int, float, str, np.generic))}
    for key in _HPARAM_KEYS:
        if key in mapping and not _is_leaf(mapping[key]):
            meta[key] = _plain(mapping[key])
    return meta


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _step_from_metadata(meta: Mapping[str, Any]) -> int | None:
    for key in _STEP_KEYS:
        step = _int_or_none(meta.get(key))
        if step is not None:
            return step
    return None


_NAME_STEP_PATTERNS = [re.compile(p, re.IGNORECASE) for p in (
    r"(?:global_step|step|checkpoint|ckpt|iter(?:ation)?|it)[=_\-]?(\d+)",
    r"epoch[=_\-]?(\d+)",
    r"(\d+)(?!.*\d)",
)]


def step_from_name(path: str) -> int | None:
    """Training step in a file or folder name: `ckpt-1200.pth`, `epoch=3-step=120.ckpt` (120),
    `epoch_3.pt` (3), `checkpoint-500/`; else the last number in the name; else None."""
    name = os.path.basename(os.path.normpath(path))
    stem = re.sub(r"\.(safetensors\.index\.json|bin\.index\.json|[A-Za-z]+)$", "", name)
    for pattern in _NAME_STEP_PATTERNS:
        match = pattern.search(stem)
        if match:
            return int(match.group(1))
    return None


def _no_weights_error(path: str, root: Any) -> CheckpointError:
    mapping = _as_mapping(root)
    if isinstance(root, Placeholder) and not root.attributes and not root.items:
        return CheckpointError(path, "unsafe-pickle", f"the pickle holds only {root.global_name}(...) "
                                                      f"and no tensors; nothing was executed")
    if mapping is None:
        return CheckpointError(path, "no-weights", f"no model weights found (the file holds a "
                                                   f"{type(root).__name__})")
    keys = set(map(str, mapping))
    if {"state", "param_groups"} <= keys or (keys & set(_OPTIMIZER_KEYS) and not keys & set(_WEIGHT_KEYS)):
        return CheckpointError(path, "optimizer-only", "optimizer state only, no model weights")
    if "last_epoch" in keys and keys & {"base_lrs", "_step_count"}:
        return CheckpointError(path, "scheduler-only", "learning-rate scheduler state only, no model weights")
    shown = ", ".join(sorted(keys)[:12])
    return CheckpointError(path, "no-weights", f"no model weights found (top-level keys: {shown})")


def _dtype_name(dtype: Any) -> str:
    return str(dtype).replace("torch.", "")


def _checkpoint_from_tree(path: str, tree: _TorchTree) -> CheckpointData:
    root = tree.root
    weights = _find_weights(root)
    if not weights:
        raise _no_weights_error(path, root)
    renamed = _strip_prefixes(weights)
    leaves = {renamed[n]: leaf for n, (leaf, _) in weights.items()}
    tensors = {renamed[n]: TensorInfo(renamed[n], tuple(leaf.shape), _dtype_name(leaf.dtype), role)
               for n, (leaf, role) in weights.items()}
    meta = _metadata(root)
    step = _step_from_metadata(meta)
    optimizer_sd = _find_optimizer_state(root)
    optimizer = None
    if optimizer_sd is not None:
        optimizer = optimizer_facts(optimizer_sd, tensors, tree.materialise)
    return _finish(path, tree.format, tensors, lambda name: tree.materialise(leaves[name]),
                   step, meta, optimizer, list(tree.problems))


def _finish(path: str, fmt: str, tensors: dict[str, TensorInfo], load: Callable[[str], torch.Tensor],
            step: int | None, meta: dict[str, Any], optimizer: dict[str, Any] | None,
            problems: list[Problem]) -> CheckpointData:
    """Build CheckpointData, falling back to a step in the name when the content has none."""
    source = "content"
    if step is None:
        step = step_from_name(path)
        source = "filename" if step is not None else "mtime"

    def checked_load(name: str) -> torch.Tensor:
        if name not in tensors:
            raise KeyError(f"{path}: no tensor named {name!r}")
        return load(name)

    return CheckpointData(path=path, step=step, step_source=source, format=fmt, tensors=tensors,
                          load=checked_load, optimizer=optimizer, metadata=meta, problems=problems,
                          mtime=os.path.getmtime(path))


# --------------------------------------------------------------------------------------------
# optimizer state -> gradient RMS per parameter


def _find_optimizer_state(root: Any) -> Mapping | None:
    mapping = _as_mapping(root) or {}
    for key in _OPTIMIZER_KEYS:
        value = mapping.get(key)
        if isinstance(value, (list, tuple)) and value:
            value = value[0]
        value = _as_mapping(value)
        if value is not None and "state" in value and "param_groups" in value:
            return value
    return None


def _scalar(value: Any, materialise: Callable[[Leaf], torch.Tensor]) -> float | None:
    if _is_leaf(value):
        return float(materialise(value).reshape(-1)[0]) if math.prod(value.shape) >= 1 else None
    return float(value) if isinstance(value, (int, float, np.number)) else None


def _grad_rms(state: Mapping, group: Mapping, materialise: Callable[[Leaf], torch.Tensor]
              ) -> tuple[tuple[int, ...], float] | None:
    """(shape, gradient-RMS estimate) from one parameter's optimizer state, or None.

    Adam/AdamW: sqrt(mean(exp_avg_sq) / (1 - beta2**step)); RMSprop: sqrt(mean(square_avg));
    SGD: rms(momentum_buffer) * (1 - momentum) / (1 - dampening), the steady-state gain of the
    momentum average (exact for a slowly varying gradient; for pure noise it underestimates the
    gradient RMS by sqrt((1 + momentum) / (1 - momentum))).
    """
    for key in ("exp_avg_sq", "square_avg", "momentum_buffer"):
        leaf = state.get(key)
        if _is_leaf(leaf):
            break
    else:
        return None
    tensor = materialise(leaf)
    holds_squares = key != "momentum_buffer"  # exp_avg_sq / square_avg already average g²
    mean_sq = float64_sum(tensor, power=1 if holds_squares else 2) / max(tensor.numel(), 1)
    if key == "exp_avg_sq":
        step = _scalar(state.get("step"), materialise)
        betas = group.get("betas")
        if step and betas:
            mean_sq /= 1.0 - float(betas[1]) ** step
    scale = 1.0
    if key == "momentum_buffer":
        momentum, dampening = float(group.get("momentum", 0.0)), float(group.get("dampening", 0.0))
        scale = (1.0 - momentum) / (1.0 - dampening) if dampening < 1.0 else 1.0
    return tuple(leaf.shape), math.sqrt(mean_sq) * scale


def _optimizer_kind(groups: list[Mapping], states: Iterable[Mapping]) -> str:
    keys = set().union(*(set(s) for s in states)) if states else set()
    group = groups[0] if groups else {}
    if "exp_avg_sq" in keys or "betas" in group:
        return "adamw" if group.get("decoupled_weight_decay") else "adam"
    if "momentum_buffer" in keys or ("momentum" in group and "dampening" in group):
        return "sgd"
    if "square_avg" in keys:
        return "rmsprop"
    if "sum" in keys:
        return "adagrad"
    return "unknown"


def _map_by_unique_shape(shapes: list[tuple[int, ...] | None], params: list[TensorInfo]
                         ) -> tuple[list[str | None], str, str]:
    """Map only the ids whose shape belongs to exactly one parameter (file order unknown)."""
    owners: dict[tuple[int, ...], list[str]] = {}
    for p in params:
        owners.setdefault(p.shape, []).append(p.name)
    names = [owners[s][0] if s is not None and len(owners.get(s, [])) == 1 else None for s in shapes]
    mapped = sum(n is not None for n in names)
    kind = "unique-shapes" if mapped == len(shapes) else ("ambiguous" if mapped else "unmapped")
    return names, kind, (f"{mapped} of {len(shapes)} optimizer entries mapped by a shape unique "
                         f"in the model")


def _map_ids(ids: list[Any], shapes: list[tuple[int, ...] | None], names_in_file: list[str],
             params: list[TensorInfo], ordered: bool) -> tuple[list[str | None] | None, str, str]:
    """(names for ids or None, mapping kind, note). A None name leaves that id unmapped."""
    by_name = {p.name: p for p in params}
    if len(names_in_file) == len(ids) and all(n in by_name for n in names_in_file):
        return names_in_file, "names-in-file", "param_names stored in the optimizer state"
    if not ordered:
        names, kind, note = _map_by_unique_shape(shapes, params)
        return names, kind, "weights file does not keep parameter order; " + note
    if len(ids) == len(params) and all(s is None or s == p.shape for s, p in zip(shapes, params)):
        return [p.name for p in params], "shapes-verified", (
            f"{len(ids)} optimizer entries matched the model parameters in order, shapes agree")
    names, kind, note = _map_by_unique_shape(shapes, params)
    return names, kind, (f"{len(ids)} optimizer entries for {len(params)} model parameters (frozen, "
                         f"shared or missing parameters?); " + note)


def optimizer_facts(opt_state: Mapping, tensors: Mapping[str, TensorInfo],
                    materialise: Callable[[Leaf], torch.Tensor], *, ordered: bool = True
                    ) -> dict[str, Any]:
    """The `CheckpointData.optimizer` dict for a torch optimizer state_dict (see types.py).

    Optimizer state is keyed by integer ids in param_groups order; ids map back to the model's
    parameters (role "param", state_dict order) by order, verified by the shapes of their state.
    ordered=False (safetensors weights, stored sorted by name): only shapes unique in the model map.
    mapping: "names-in-file" | "shapes-verified" | "ambiguous" | "unique-shapes" | "unmapped".
    """
    groups = [g for g in (opt_state.get("param_groups") or []) if isinstance(g, Mapping)]
    state = _as_mapping(opt_state.get("state")) or {}
    ids, id_group, names_in_file = [], {}, []
    for group in groups:
        for pid in group.get("params", []):
            ids.append(pid)
            id_group[pid] = group
        names_in_file.extend(group.get("param_names", []) or [])
    estimates = {pid: _grad_rms(_as_mapping(state.get(pid)) or {}, id_group[pid], materialise)
                 for pid in ids}
    shapes = [est[0] if est else None for est in estimates.values()]
    params = [t for t in tensors.values() if t.role == "param"]
    names, mapping, note = _map_ids(ids, shapes, names_in_file, params, ordered)
    grad_rms = {}
    if names is not None:
        grad_rms = {name: est[1] for name, est in zip(names, estimates.values()) if est and name}
    steps = [_scalar((_as_mapping(state.get(pid)) or {}).get("step"), materialise) for pid in ids[:1]]
    step = int(steps[0]) if steps and steps[0] is not None else None
    states = [s for s in (_as_mapping(v) for v in state.values()) if s]
    return {"kind": _optimizer_kind(groups, states), "grad_rms": grad_rms, "mapping": mapping,
            "note": note, "step": step}


# --------------------------------------------------------------------------------------------
# safetensors, shards, folders

_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
                       "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
                       "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


def _open_safetensors(path: str) -> CheckpointData:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as handle:
            meta = dict(handle.metadata() or {})
            tensors = {}
            for name in handle.keys():
                piece = handle.get_slice(name)
                dtype = _SAFETENSORS_DTYPES.get(piece.get_dtype(), piece.get_dtype().lower())
                role = _role_by_name(name, dtype.startswith(("float", "bfloat", "complex")))
                tensors[name] = TensorInfo(name, tuple(piece.get_shape()), dtype, role)
    except SafetensorError as exc:
        kind = "truncated" if "incomplete" in str(exc) or "length" in str(exc) else "not-a-checkpoint"
        raise CheckpointError(path, kind, f"unreadable safetensors file ({_one_line(exc)})") from None

    def load(name: str) -> torch.Tensor:
        with safe_open(path, framework="pt") as handle:  # reopened: unmaps pages after each tensor
            return handle.get_tensor(name).to(torch.float32)

    renamed = _strip_prefixes(tensors)
    tensors = {renamed[n]: TensorInfo(renamed[n], t.shape, t.dtype, t.role) for n, t in tensors.items()}
    original = {v: k for k, v in renamed.items()}
    return _finish(path, "safetensors", tensors, lambda n: load(original[n]),
                   _step_from_metadata(meta), meta, None, [])


def _open_single_file(path: str, trust: bool) -> CheckpointData:
    if _sniff(path) == "safetensors":
        return _open_safetensors(path)
    return _checkpoint_from_tree(path, _load_torch_tree(path, trust))


def _open_index(path: str, trust: bool) -> CheckpointData:
    """A sharded checkpoint: `*.safetensors.index.json` / `pytorch_model.bin.index.json`."""
    try:
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
        weight_map = dict(index["weight_map"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(path, "not-a-checkpoint", f"not a shard index ({_one_line(exc)})") from None
    folder = os.path.dirname(path)
    shards = {}
    for shard in dict.fromkeys(weight_map.values()):
        shard_path = os.path.join(folder, shard)
        if not os.path.exists(shard_path):
            raise CheckpointError(path, "missing-shard", f"shard {shard} listed in the index is missing")
        shards[shard] = _open_single_file(shard_path, trust)
    tensors, owner, problems = {}, {}, []
    for shard in shards.values():
        tensors.update(shard.tensors)
        owner.update({name: shard for name in shard.tensors})
        problems.extend(shard.problems)
    fmt = f"{next(iter(shards.values())).format}-sharded" if shards else "sharded"
    meta = {str(k): v for k, v in (index.get("metadata") or {}).items()}
    return _finish(path, fmt, tensors, lambda name: owner[name].load(name),
                   _step_from_metadata(meta), meta, None, problems)


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def _open_folder(folder: str, trust: bool) -> CheckpointData:
    """A Hugging Face style folder: config.json + weights, maybe trainer_state.json/optimizer.pt."""
    weights = _folder_weights_file(folder)
    if weights is None:
        raise CheckpointError(folder, "no-weights", "folder has no model weights (looked for "
                                                    "model.safetensors, pytorch_model.bin, *.index.json)")
    inner = _open_index(weights, trust) if weights.endswith(".json") else _open_single_file(weights, trust)
    config = _read_json(os.path.join(folder, "config.json"))
    meta = {k: v for k, v in config.items() if isinstance(v, (str, int, float, bool)) or k == "architectures"}
    trainer = _read_json(os.path.join(folder, "trainer_state.json"))
    meta.update({k: trainer[k] for k in ("global_step", "epoch") if k in trainer})
    ordered = inner.format in ("torch-zip", "torch-legacy")
    optimizer = _folder_optimizer(folder, inner.tensors, trust, inner.problems, ordered)
    return _finish(folder, f"hf-folder/{inner.format}", inner.tensors, inner.load,
                   _step_from_metadata(meta), meta, optimizer, inner.problems)


def _folder_optimizer(folder: str, tensors: Mapping[str, TensorInfo], trust: bool,
                      problems: list[Problem], ordered: bool) -> dict[str, Any] | None:
    """Optimizer facts from a Trainer folder's optimizer.pt. ordered: the weights keep the model's
    parameter order (a single torch file); safetensors and shard indexes are sorted by name."""
    path = os.path.join(folder, "optimizer.pt")
    if not os.path.exists(path):
        return None
    try:
        tree = _load_torch_tree(path, trust)
    except CheckpointError as exc:
        problems.append(Problem(file=path, kind=exc.kind, message=str(exc), severity="warning"))
        return None
    problems.extend(tree.problems)
    state = _as_mapping(tree.root)
    if state is None or "state" not in state:
        return None
    return optimizer_facts(state, tensors, tree.materialise)


# --------------------------------------------------------------------------------------------
# public entry points


def open_checkpoint(path: str, *, trust_pickles: bool = False) -> CheckpointData:
    """Open one checkpoint (file, shard index or model folder) lazily.

    Raises CheckpointError (an InputError) with a one-line message when nothing usable can be read.
    """
    if os.path.isdir(path):
        return _open_folder(path, trust_pickles)
    if not os.path.exists(path):
        raise CheckpointError(path, "missing", "no such file")
    if path.endswith(".json"):
        return _open_index(path, trust_pickles)
    return _open_single_file(path, trust_pickles)


def order_series(ckpts: list[CheckpointData]) -> list[CheckpointData]:
    """Checkpoints in training order: by step (from content, else file name), then mtime, then path.
    Checkpoints without any step come after the others, in mtime order."""
    return sorted(ckpts, key=lambda c: (c.step is None, c.step or 0, c.mtime, c.path))


__all__ = ["CheckpointError", "is_checkpoint_path", "open_checkpoint", "optimizer_facts",
           "order_series", "step_from_name"]
