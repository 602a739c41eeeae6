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

Hostile files: every tensor view is checked against the bytes that really back it when the file is
opened (storage present, no negative sizes or strides, offset + extent inside the zip entry or
legacy data block, bounded repetition); a tensor that fails is dropped with a Problem, a file with
none left is a CheckpointError. Nothing is allocated before its size has been checked against the
file, compressed zip entries are streamed, and shard paths must stay inside the index's folder.
`open_checkpoint` raises only CheckpointError, and `CheckpointData.load` only CheckpointError.
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
import reprlib
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch

from report_gen.core import InputError, Problem, ProblemKind
from report_gen.numeric import float64_sum
from report_gen.readers.safe_unpickle import (
    MAX_FREE_ELEMENTS,
    Placeholder,
    StorageRef,
    TensorRef,
    is_dangerous_global,
    restricted_load,
    storage_ref_from_pid,
    view_problem,
)
from report_gen.readers.paths import (
    LEGACY_MAGIC,
    _folder_weights_file,
    is_checkpoint_path,
    is_torch_tar,
)
from report_gen.readers.types import BUFFER_SUFFIXES, CheckpointData, TensorInfo

Leaf = Any  # torch.Tensor | TensorRef


class CheckpointError(InputError):
    """Nothing usable could be read from a checkpoint (or, from `CheckpointData.load`, one tensor).

    `kind` is a `ProblemKind`; its default severity is how `read_checkpoints` grades the error:
    * the file is no checkpoint at all (harmless beside checkpoints): "not-a-checkpoint" (unknown
      binary, a tar or zip archive that is not torch's, an unreadable plain pickle), "no-weights";
    * a checkpoint that cannot be used: "empty-file", "lfs-pointer", "text-file", "truncated" (the
      file really ends early), "corrupt" (damaged or inconsistent content), "unreadable" (I/O error
      or an unexpected failure), "optimizer-only", "scheduler-only", "unsafe-pickle",
      "torchscript-v1", "legacy-tar", "missing", "missing-shard", "unsafe-path" (a shard index
      names a file outside its folder; not read);
    * from `load(name)`: "unreadable-tensor", "missing-tensor", "truncated", "corrupt".
    The message is one line (control characters are replaced)."""

    def __init__(self, path: str, kind: ProblemKind, problem: str) -> None:
        path, problem = _clean(str(path), 4096), _clean(str(problem))
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.kind = ProblemKind(kind)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def _clean(text: str, limit: int = 400) -> str:
    """One line without control characters (file content and names end up in messages)."""
    text = _CONTROL.sub(" ", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# sniffing

_LEGACY_MAGIC = LEGACY_MAGIC


def _sniff(path: str) -> str:
    """Classify a file by its first bytes: "zip" | "legacy" | "pickle" | "safetensors".

    Raises CheckpointError for files that cannot be a checkpoint at all.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(1024)
    except OSError as exc:
        raise CheckpointError(path, ProblemKind.UNREADABLE, f"cannot read file ({exc.strerror})") from None
    if size == 0:
        raise CheckpointError(path, ProblemKind.EMPTY_FILE, "file is empty (0 bytes)")
    if head.startswith(b"version https://git-lfs"):
        match = re.search(rb"size (\d+)", head)
        target = f"a {int(match.group(1)):,}-byte file" if match else "a file"
        raise CheckpointError(path, ProblemKind.LFS_POINTER,
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
        if not is_torch_tar(path):
            raise CheckpointError(path, ProblemKind.NOT_A_CHECKPOINT, "a tar archive, not a torch checkpoint")
        raise CheckpointError(path, ProblemKind.LEGACY_TAR, "this is a pre-0.4 torch tar checkpoint, which is "
                                                  "not supported; re-save it with a recent torch")
    # never quote the content of a file reached through a symlink: it may live outside the run
    raise CheckpointError(path, *_describe_non_checkpoint(head, quote=not os.path.islink(path)))


def _describe_non_checkpoint(head: bytes, quote: bool = True) -> tuple[str, str]:
    """(kind, message) for bytes that are no known checkpoint format."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if not text or any(ord(c) < 32 and c not in "\t\n\r" for c in text):
        return ProblemKind.NOT_A_CHECKPOINT, "unknown binary format (not torch zip/legacy, pickle or safetensors)"
    first = text.strip().splitlines()[0][:40] if text.strip() else ""
    what = "an HTML page" if "<html" in text.lower() or "<!doctype" in text.lower() else "a text file"
    start = f" (starts with {first!r})" if quote else ""
    return ProblemKind.TEXT_FILE, f"this is {what}{start}, not a checkpoint"


# --------------------------------------------------------------------------------------------
# reading storage bytes


def _read_exact(path: str, offset: int, nbytes: int) -> bytearray:
    """`nbytes` bytes at `offset`; the file size is checked before anything is allocated."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if offset < 0 or nbytes < 0 or offset + nbytes > size:
                raise CheckpointError(path, ProblemKind.TRUNCATED, f"tensor data ends early (wanted {nbytes:,} bytes "
                                                         f"at offset {offset:,}, the file has {size:,})")
            buf = bytearray(nbytes)
            f.seek(offset)
            got = f.readinto(buf)
    except OSError as exc:
        raise CheckpointError(path, ProblemKind.UNREADABLE, f"cannot read tensor data ({exc.strerror or exc})") from None
    if got != nbytes:
        raise CheckpointError(path, ProblemKind.TRUNCATED, f"tensor data ends early (wanted {nbytes:,} bytes at "
                                                 f"offset {offset:,}, got {got:,})")
    return buf


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty(0, dtype=dtype).element_size()


def _tensor_from_bytes(buf: bytearray, ref: TensorRef, first: int) -> torch.Tensor:
    """Build the float32 tensor `ref` from the bytes of its storage starting at element `first`."""
    flat = torch.frombuffer(buf, dtype=ref.dtype) if len(buf) else torch.empty(0, dtype=ref.dtype)
    view = flat.as_strided(ref.shape, ref.stride, ref.offset - first)
    return view.to(torch.float32) if view.dtype != torch.float32 else view.contiguous()


def _ref_problem(ref: TensorRef, available_bytes: int) -> str | None:
    """Why `ref` cannot be read from a storage block of `available_bytes`, or None."""
    if not isinstance(ref.storage.dtype, torch.dtype):
        return "unknown storage type"
    itemsize = _itemsize(ref.storage.dtype)
    available = max(available_bytes // itemsize - ref.storage.view_offset, 0)
    return view_problem(ref.offset, ref.shape, ref.stride, available)


#: deflate cannot compress better than ~1032:1; a larger claimed size is a lie (or a zip bomb)
_MAX_DEFLATE_RATIO = 1100
_STREAM_CHUNK = 1 << 20
#: a compressed storage entry may be at most this much larger than the bytes a tensor needs from it
#: (torch never compresses; a re-zipped archive whose entry dwarfs its tensors is a zip bomb)
_COMPRESSED_SLACK, _COMPRESSED_FACTOR = 64 << 20, 64
#: total bytes inflated per archive, over all loads: this plus 4x the entries' declared sizes
_INFLATE_BUDGET = 1 << 30


def _impossible_size(info: zipfile.ZipInfo) -> bool:
    return (info.compress_type == zipfile.ZIP_DEFLATED
            and info.file_size > info.compress_size * _MAX_DEFLATE_RATIO + (1 << 16))


class _StorageReader:
    """Reads one tensor's bytes from the file, after `check` (subclasses: where the bytes live)."""

    path: str

    def check(self, ref: TensorRef) -> str | None:
        raise NotImplementedError

    def _bytes(self, key: str, start: int, nbytes: int) -> bytearray:
        raise NotImplementedError

    def read(self, ref: TensorRef) -> torch.Tensor:
        problem = self.check(ref)
        if problem:
            raise CheckpointError(self.path, ProblemKind.CORRUPT, problem)
        first, count = ref.element_span()
        itemsize = _itemsize(ref.dtype)
        start = (ref.storage.view_offset + first) * itemsize
        return _tensor_from_bytes(self._bytes(ref.storage.key, start, count * itemsize), ref, first)


class _ZipStorages(_StorageReader):
    """Byte ranges of `<archive>/data/<key>` entries in a torch zip, read without extracting."""

    def __init__(self, path: str, zf: zipfile.ZipFile, prefix: str) -> None:
        self.path = path
        self._entries = {info.filename[len(prefix):]: info for info in zf.infolist()
                         if info.filename.startswith(prefix)}
        self._offsets: dict[str, int | str] = {}  # key -> data offset, or why the entry is unusable
        self._size = os.path.getsize(path)
        # compressed entries: one open stream kept for sequential reads, and an inflation budget
        self._stream: tuple[str, zipfile.ZipFile, Any, int] | None = None  # key, archive, stream, pos
        self._inflated = 0
        self._budget = _INFLATE_BUDGET + 4 * sum(i.file_size for i in self._entries.values()
                                                 if i.compress_type != zipfile.ZIP_STORED)

    def _data_offset(self, key: str, info: zipfile.ZipInfo) -> int | str:
        """Offset of a stored entry's bytes (from its local header), or why it cannot be read."""
        if key not in self._offsets:
            with open(self.path, "rb") as f:
                f.seek(info.header_offset)
                header = f.read(30)
            if len(header) < 30 or header[:4] != b"PK\x03\x04":
                self._offsets[key] = f"storage data/{key}: bad zip local header"
            else:
                name_len, extra_len = struct.unpack("<HH", header[26:30])
                start = info.header_offset + 30 + name_len + extra_len
                self._offsets[key] = (start if start + info.file_size <= self._size else
                                      f"storage data/{key} runs past the end of the file")
        return self._offsets[key]

    def check(self, ref: TensorRef) -> str | None:
        """Why `ref` cannot be read from this archive, or None (checked when the file is opened)."""
        info = self._entries.get(ref.storage.key)
        if info is None:
            return f"storage data/{ref.storage.key} is missing from the archive"
        if info.compress_type == zipfile.ZIP_STORED:
            offset = self._data_offset(ref.storage.key, info)
            if isinstance(offset, str):
                return offset
        elif _impossible_size(info):
            return f"compressed storage data/{ref.storage.key} claims an impossible size"
        problem = _ref_problem(ref, info.file_size)
        if problem is None and info.compress_type != zipfile.ZIP_STORED:
            first, count = ref.element_span()
            needed = (ref.storage.view_offset + first + count) * _itemsize(ref.storage.dtype)
            if info.file_size > _COMPRESSED_SLACK + _COMPRESSED_FACTOR * needed:
                problem = (f"compressed entry of {info.file_size:,} bytes for a tensor needing "
                           f"{needed:,} (zip bomb?)")
        return f"storage data/{ref.storage.key}: {problem}" if problem else None

    def _bytes(self, key: str, start: int, nbytes: int) -> bytearray:
        info = self._entries[key]
        if info.compress_type == zipfile.ZIP_STORED:
            return _read_exact(self.path, self._offsets[key] + start, nbytes)
        # re-zipped with compression: stream this entry up to the bytes needed, never whole
        return self._read_compressed(key, info, start, nbytes)

    def _open_stream(self, key: str, info: zipfile.ZipInfo, start: int) -> tuple[Any, int]:
        """A decompressing stream of entry `key` positioned at or before `start`, and its position.
        The last stream is reused when reading forward (views loaded in storage order)."""
        if self._stream is not None:
            last_key, zf, src, pos = self._stream
            if last_key == key and pos <= start:
                return src, pos
            self.close()
        zf = zipfile.ZipFile(self.path)
        try:
            src = zf.open(info)
        except BaseException:
            zf.close()
            raise
        self._stream = (key, zf, src, 0)
        return src, 0

    def close(self) -> None:
        if self._stream is not None:
            _, zf, src, _ = self._stream
            self._stream = None
            src.close()
            zf.close()

    def _read_compressed(self, key: str, info: zipfile.ZipInfo, start: int, nbytes: int) -> bytearray:
        """Bytes [start, start + nbytes) of a compressed entry, inflating only up to them (1 MiB at a
        time), within the archive's inflation budget."""
        try:
            src, pos = self._open_stream(key, info, start)
            origin = pos
            if self._inflated + (start - pos) + nbytes > self._budget:
                raise CheckpointError(self.path, ProblemKind.CORRUPT, "compressed archive: inflation budget exceeded "
                                                            "(zip bomb?); tensor not read")
            buf = bytearray(nbytes)
            view = memoryview(buf)
            while pos < start:
                skipped = len(src.read(min(start - pos, _STREAM_CHUNK)))
                if not skipped:
                    break
                pos += skipped
            got = 0
            while got < nbytes and pos == start:
                chunk = src.read(min(nbytes - got, _STREAM_CHUNK))
                if not chunk:
                    break
                view[got:got + len(chunk)] = chunk
                got += len(chunk)
        except CheckpointError:
            self.close()
            raise
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as exc:
            self.close()
            raise CheckpointError(self.path, ProblemKind.CORRUPT, f"compressed storage {info.filename}: "
                                                        f"{_one_line(exc)}") from None
        self._inflated += (pos - origin) + got
        if pos != start or got != nbytes:
            self.close()
            raise CheckpointError(self.path, ProblemKind.CORRUPT, f"compressed storage {info.filename} ends early")
        self._stream = (key, self._stream[1], src, start + got)
        return buf


class _LegacyStorages(_StorageReader):
    """Storage data blocks of a legacy (pre-1.6, `_use_new_zipfile_serialization=False`) file.

    After the pickles come, for each storage key in order, an int64 element count and the raw bytes.
    """

    def __init__(self, path: str, keys: list[str], data_start: int, dtypes: dict[str, torch.dtype]):
        self.path = path
        self._blocks: dict[str, tuple[int, int]] = {}  # key -> (data offset, bytes)
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            pos = data_start
            for key in keys:
                f.seek(pos)
                header = f.read(8)
                if len(header) < 8:
                    raise CheckpointError(path, ProblemKind.TRUNCATED, "legacy checkpoint ends inside its tensor data")
                (numel,) = struct.unpack("<q", header)
                if numel < 0:
                    raise CheckpointError(path, ProblemKind.CORRUPT, f"legacy storage {key} has a negative size")
                nbytes = numel * _itemsize(dtypes.get(key, torch.uint8))
                self._blocks.setdefault(key, (pos + 8, nbytes))
                pos += 8 + nbytes
                if pos > size:
                    raise CheckpointError(path, ProblemKind.TRUNCATED, f"legacy checkpoint is {size:,} bytes, its "
                                                             f"tensor data needs at least {pos:,}")

    def check(self, ref: TensorRef) -> str | None:
        block = self._blocks.get(ref.storage.key)
        if block is None:
            return f"storage {ref.storage.key} is missing from the legacy data blocks"
        problem = _ref_problem(ref, block[1])
        return f"storage {ref.storage.key}: {problem}" if problem else None

    def _bytes(self, key: str, start: int, nbytes: int) -> bytearray:
        return _read_exact(self.path, self._blocks[key][0] + start, nbytes)


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


def _real_tensor_problem(leaf: torch.Tensor) -> str | None:
    """Why a real tensor (torch.load) should not be materialised, or None."""
    try:
        if leaf.layout != torch.strided:
            return f"unsupported tensor layout {leaf.layout}"
        available = leaf.untyped_storage().nbytes() // max(leaf.element_size(), 1)
        return view_problem(leaf.storage_offset(), tuple(leaf.shape), tuple(leaf.stride()), available)
    except Exception as exc:  # noqa: BLE001 - quantized, meta, nested tensors...
        return f"unsupported tensor ({_one_line(exc)})"


def _real_tensors_only(leaf: Leaf) -> str | None:
    if isinstance(leaf, torch.Tensor):
        return _real_tensor_problem(leaf)
    return "tensor without readable storage"


@dataclass
class _TorchTree:
    """An unpickled torch file: `root` plus a way to turn one leaf into a float32 tensor.

    check(leaf): why that leaf cannot be read (None when it can); run for every leaf before use.
    """

    root: Any
    format: str
    materialise: Callable[[Leaf], torch.Tensor]
    problems: list[Problem] = field(default_factory=list)
    check: Callable[[Leaf], str | None] = _real_tensors_only

    def leaf_problem(self, leaf: Leaf) -> str | None:
        try:
            return self.check(leaf)
        except CheckpointError as exc:
            return str(exc).split(": ", 1)[-1]
        except Exception as exc:  # noqa: BLE001 - a malformed description is one unreadable tensor
            return f"unreadable tensor description ({_one_line(exc)})"

    def checked_materialiser(self, path: str) -> Callable[[Leaf], torch.Tensor]:
        """materialise, refusing (CheckpointError) a leaf that fails `check`."""
        def materialise(leaf: Leaf) -> torch.Tensor:
            problem = self.leaf_problem(leaf)
            if problem:
                raise CheckpointError(path, ProblemKind.UNREADABLE_TENSOR, problem)
            return self.materialise(leaf)

        return materialise


def _is_leaf(value: Any) -> bool:
    return isinstance(value, (torch.Tensor, TensorRef))


def _mapped_materialiser(leaf: Leaf) -> torch.Tensor:
    """float32 copy of a tensor from `torch.load(mmap=True)`, then its pages are released."""
    out = leaf.detach().to(torch.float32, copy=True)
    _release_mapped_pages(leaf)
    return out


def _memory_materialiser(leaf: Leaf) -> torch.Tensor:
    return leaf.detach().to(torch.float32, copy=True)


def _ref_reader(storages: "_ZipStorages | _LegacyStorages"
                ) -> tuple[Callable[[Leaf], torch.Tensor], Callable[[Leaf], str | None]]:
    """(materialise, check) for a restricted tree: TensorRefs read from `storages`, and real tensors
    (rebuilt in memory from a nested blob) copied."""
    def materialise(leaf: Leaf) -> torch.Tensor:
        if isinstance(leaf, torch.Tensor):
            return _memory_materialiser(leaf)
        return storages.read(leaf)

    def check(leaf: Leaf) -> str | None:
        if isinstance(leaf, torch.Tensor):
            return _real_tensor_problem(leaf)
        return storages.check(leaf)

    return materialise, check


def _weights_only_refusal(exc: Exception) -> bool:
    return isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in str(exc)


def _neutralised_problem(path: str, replaced: list[str]) -> Problem:
    dangerous = [g for g in replaced if is_dangerous_global(g)]
    shown = ", ".join(replaced[:8]) + (f" and {len(replaced) - 8} more" if len(replaced) > 8 else "")
    message = (f"read without executing the pickle: {len(replaced)} global(s) replaced by inert "
               f"placeholders ({shown})")
    if dangerous:
        message += f"; the file tries to call {', '.join(dangerous[:8])}"
    return Problem(file=path, kind=ProblemKind.UNSAFE_PICKLE_NEUTRALISED, message=_clean(message, 1000),
                   severity="warning" if dangerous else "info", count=len(replaced))


def _trusted_problem(path: str, how: str) -> Problem:
    return Problem(file=path, kind=ProblemKind.TRUSTED_PICKLE, severity="warning",
                   message=f"loaded with {how} because --trust-pickles was given: code in the file was "
                           f"allowed to run")


def _zip_archive_prefix(zf: zipfile.ZipFile, path: str) -> tuple[str, list[str]]:
    names = zf.namelist()
    pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
    if not pkl:
        if any(n.endswith("model.json") for n in names):
            raise CheckpointError(path, ProblemKind.TORCHSCRIPT_V1, "this is an old TorchScript (v1, model.json) "
                                                          "archive; re-save it with a recent torch")
        raise CheckpointError(path, ProblemKind.NOT_A_CHECKPOINT, "zip archive without data.pkl (not a torch.save file)")
    return pkl[0][: -len("data.pkl")], names


def _open_zip(path: str) -> zipfile.ZipFile:
    """The archive; "truncated" only when its end (the central directory) is really missing."""
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        if "not a zip file" in str(exc):  # no end-of-central-directory record: the end is missing
            raise CheckpointError(path, ProblemKind.TRUNCATED, "truncated zip archive (no end of central "
                                                     "directory); the save or download was interrupted") from None
        raise CheckpointError(path, ProblemKind.CORRUPT, f"corrupt zip archive ({_one_line(exc)})") from None
    except OSError as exc:
        raise CheckpointError(path, ProblemKind.UNREADABLE, f"cannot read file ({exc.strerror or exc})") from None
    except (ValueError, EOFError, NotImplementedError, RuntimeError) as exc:
        raise CheckpointError(path, ProblemKind.CORRUPT, f"corrupt zip archive ({_one_line(exc)})") from None
    size = os.path.getsize(path)
    for info in zf.infolist():
        if info.header_offset + info.compress_size > size:
            zf.close()
            raise CheckpointError(path, ProblemKind.CORRUPT, f"zip entry {info.filename!r} lies beyond the end of "
                                                   f"the file")
    return zf


#: a compressed data.pkl may inflate to at most this much more than its compressed size
_MAX_PICKLE_INFLATION = 64 << 20


def _load_zip_tree(path: str, trust: bool) -> _TorchTree:
    with _open_zip(path) as zf:
        prefix, names = _zip_archive_prefix(zf, path)
        is_script = f"{prefix}constants.pkl" in names and any(n.startswith(f"{prefix}code/") for n in names)
        if is_script and trust:
            try:
                module = torch.jit.load(path, map_location="cpu")
            except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged files
                raise CheckpointError(path, ProblemKind.CORRUPT, f"torch.jit.load failed: {_one_line(exc)}") from None
            return _TorchTree(module, "torchscript", _memory_materialiser,
                              [_trusted_problem(path, "torch.jit.load")])
        # torch never compresses entries; a re-zipped (compressed) archive is read by streaming
        # the entries ourselves, never by torch.load, which would inflate or refuse them whole
        compressed = any(i.compress_type != zipfile.ZIP_STORED for i in zf.infolist())
        if not is_script and (not compressed or trust):
            tree = _torch_load_zip(path, trust, mmap=not compressed)
            if tree is not None:
                return tree
        info = zf.getinfo(f"{prefix}data.pkl")
        if _impossible_size(info) or (info.compress_type != zipfile.ZIP_STORED and
                                      info.file_size > info.compress_size * 32 + _MAX_PICKLE_INFLATION):
            raise CheckpointError(path, ProblemKind.CORRUPT, f"data.pkl claims {info.file_size:,} bytes from "
                                                   f"{info.compress_size:,} compressed (zip bomb?)")
        try:
            data = zf.read(info)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError, RuntimeError) as exc:
            raise CheckpointError(path, ProblemKind.CORRUPT, f"data.pkl inside the archive is damaged "
                                                   f"({_one_line(exc)})") from None
        storages = _ZipStorages(path, zf, f"{prefix}data/")
    root, replaced = _restricted(path, data, storage_ref_from_pid, ProblemKind.CORRUPT)
    problems = [_neutralised_problem(path, replaced)] if replaced else []
    materialise, check = _ref_reader(storages)
    return _TorchTree(root, "torchscript" if is_script else "torch-zip", materialise, problems, check)


def _file_guarded(path: str, materialise: Callable[[Leaf], torch.Tensor]) -> Callable[[Leaf], torch.Tensor]:
    """`materialise` for tensors mapped from `path`, refusing once the file has been rewritten:
    touching pages of a mapping whose file was truncated kills the process (SIGBUS), and a
    checkpoint of a live run (last.ckpt) can be rewritten between open and load."""
    before = os.stat(path)

    def guarded(leaf: Leaf) -> torch.Tensor:
        try:
            now = os.stat(path)
        except OSError as exc:
            raise CheckpointError(path, ProblemKind.UNREADABLE, f"cannot read file ({exc.strerror or exc})") from None
        if (now.st_size, now.st_mtime_ns, now.st_ino) != (before.st_size, before.st_mtime_ns, before.st_ino):
            raise CheckpointError(path, ProblemKind.UNREADABLE_TENSOR, "the file changed on disk after it was opened")
        return materialise(leaf)

    return guarded


def _torch_load_zip(path: str, trust: bool, mmap: bool = True) -> _TorchTree | None:
    """torch.load with mmap (weights_only unless trusted); None when weights_only refuses."""
    materialise = _file_guarded(path, _mapped_materialiser) if mmap else _memory_materialiser
    try:
        root = torch.load(path, map_location="cpu", mmap=mmap, weights_only=not trust)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged files
        if _weights_only_refusal(exc):
            return None
        # the zip itself opened and is complete (checked before), so this is damage, not truncation
        raise CheckpointError(path, ProblemKind.CORRUPT, f"torch.load failed: {_one_line(exc)}") from None
    problems = [_trusted_problem(path, "torch.load(weights_only=False)")] if trust else []
    return _TorchTree(root, "torch-zip", materialise, problems)


def _restricted(path: str, data: bytes | io.BufferedReader, persistent: Callable | None,
                damaged: ProblemKind = ProblemKind.NOT_A_CHECKPOINT) -> tuple[Any, list[str]]:
    """Restricted unpickling; a malformed pickle is CheckpointError(`damaged`) ("corrupt" inside a
    torch file, "not-a-checkpoint" for a plain pickle that is something else)."""
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        return restricted_load(stream, persistent)
    except CheckpointError:
        raise
    except EOFError:
        if damaged == ProblemKind.CORRUPT and isinstance(data, bytes):  # a complete zip entry that ends early
            raise CheckpointError(path, ProblemKind.CORRUPT, "data.pkl ends early (corrupt pickle)") from None
        raise CheckpointError(path, ProblemKind.TRUNCATED, "pickle data ends early (truncated file)") from None
    except RecursionError:
        raise CheckpointError(path, damaged, "pickle nested too deeply") from None
    except Exception as exc:  # noqa: BLE001 - any malformed pickle
        raise CheckpointError(path, damaged, f"unreadable pickle: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return _clean(text[0] if text and text[0].strip() else type(exc).__name__, 160)


def _trusted_torch_load(path: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged files
        kind = ProblemKind.TRUNCATED if isinstance(exc, EOFError) else ProblemKind.CORRUPT
        raise CheckpointError(path, kind, f"torch.load failed: {_one_line(exc)}") from None


def _load_legacy_tree(path: str, trust: bool) -> _TorchTree:
    if trust:
        root = _trusted_torch_load(path)
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
            _restricted(path, f, None, ProblemKind.CORRUPT)
        root, replaced = _restricted(path, f, persistent, ProblemKind.CORRUPT)
        keys, _ = _restricted(path, f, None, ProblemKind.CORRUPT)
        data_start = f.tell()
    if not isinstance(keys, (list, tuple)) or not all(isinstance(k, (str, int)) for k in keys):
        raise CheckpointError(path, ProblemKind.CORRUPT, "legacy checkpoint: malformed list of storage keys")
    storages = _LegacyStorages(path, [str(k) for k in keys], data_start,
                               {k: r.dtype for k, r in refs.items()})
    problems = [_neutralised_problem(path, replaced)] if replaced else []
    materialise, check = _ref_reader(storages)
    return _TorchTree(root, "torch-legacy", materialise, problems, check)


def _load_pickle_tree(path: str, trust: bool) -> _TorchTree:
    """A plain pickle (.pkl): small files by nature, read eagerly."""
    if trust:
        try:
            with open(path, "rb") as f:
                root = pickle.load(f)  # noqa: S301 - explicitly trusted by the user
        except Exception as exc:  # noqa: BLE001 - any malformed pickle
            raise CheckpointError(path, ProblemKind.NOT_A_CHECKPOINT, f"unreadable pickle: {_one_line(exc)}") from None
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
    raise CheckpointError(path, ProblemKind.NOT_A_CHECKPOINT, f"expected a torch file, found {kind}")


# --------------------------------------------------------------------------------------------
# interpreting a tree

_WEIGHT_KEYS = ("state_dict", "model_state_dict", "model", "net", "module", "network",
                "ema", "state_dict_ema", "model_ema")
_OPTIMIZER_KEYS = ("optimizer", "optimizer_state_dict", "optimizer_states", "optim", "opt",
                   "optimizer_state")
_STEP_KEYS = ("global_step", "step", "iteration", "iter", "epoch")
_HPARAM_KEYS = ("hyper_parameters", "hparams", "args", "config", "cfg")
_STRIP_PREFIXES = ("module.", "model.", "_orig_mod.")


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
    return "param" if floating and not name.endswith(BUFFER_SUFFIXES) else "buffer"


def _is_floating(leaf: Leaf) -> bool:
    return leaf.dtype.is_floating_point or leaf.dtype.is_complex


_MAX_MODULE_DEPTH = 100


def _name_set(value: Any) -> set[str]:
    """A set of names from a pickled set/list (anything else: empty)."""
    if isinstance(value, (set, frozenset, list, tuple)):
        return {v for v in value if isinstance(v, str)}
    return set()


def _walk_module(obj: Any, prefix: str, out: dict[str, tuple[Leaf, str]], seen: set[int],
                 depth: int = 0) -> None:
    """Collect (leaf, role) by dotted name from a real or placeholder module tree."""
    if id(obj) in seen or depth > _MAX_MODULE_DEPTH:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.nn.Module):
        params = {n for n, _ in obj.named_parameters()}
        for name, value in obj.state_dict().items():
            out[prefix + name] = (value, "param" if name in params else "buffer")
        return
    attrs = obj.attributes
    if "_parameters" in attrs or "_modules" in attrs:
        skip = _name_set(attrs.get("_non_persistent_buffers_set"))
        for name, value in (_as_mapping(attrs.get("_parameters")) or {}).items():
            if _is_leaf(value):
                out[f"{prefix}{name}"] = (value, "param")
        for name, value in (_as_mapping(attrs.get("_buffers")) or {}).items():
            if _is_leaf(value) and name not in skip:
                out[f"{prefix}{name}"] = (value, "buffer")
        children = (_as_mapping(attrs.get("_modules")) or {}).items()
    else:  # TorchScript objects and plain classes: tensors are attributes
        for name, value in attrs.items():
            if _is_leaf(value):
                out[f"{prefix}{name}"] = (value, _role_by_name(str(name), _is_floating(value)))
        children = ((n, v) for n, v in attrs.items() if isinstance(v, Placeholder))
    for name, child in children:
        if _is_module_like(child):
            _walk_module(child, f"{prefix}{name}.", out, seen, depth + 1)


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
        return _short_repr(value)
    if isinstance(value, Placeholder):
        return _plain(value.attributes, depth + 1) if value.attributes else value.global_name
    if isinstance(value, Mapping):
        return {str(k): _plain(v, depth + 1) for k, v in list(value.items())[:100] if not _is_leaf(v)}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value[:50] if not _is_leaf(v)]
    if hasattr(value, "__dict__") and not isinstance(value, torch.nn.Module):  # trusted Namespace etc.
        return _plain(vars(value), depth + 1)
    return _short_repr(value)


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 80, 80


def _short_repr(value: Any) -> str:
    """At most 80 characters, without building the repr of a huge or deeply nested value."""
    try:
        text = value if isinstance(value, str) else _REPR.repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ of a trusted object
        text = f"<{type(value).__name__}>"
    return _clean(text, 80)


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
    if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        return int(value.strip())  # ASCII digits only: '²'.isdigit() is True, int('²') fails
    return None


_DECIMAL = re.compile(r"[0-9]{1,18}", re.ASCII)


def _step_from_metadata(meta: Mapping[str, Any]) -> int | None:
    for key in _STEP_KEYS:
        step = _int_or_none(meta.get(key))
        if step is not None:
            return step
    return None


_NAME_STEP_PATTERNS = [re.compile(p, re.IGNORECASE | re.ASCII) for p in (
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
            return int(match.group(1)[-18:])
    return None


def _no_weights_error(path: str, root: Any) -> CheckpointError:
    mapping = _as_mapping(root)
    if isinstance(root, Placeholder) and not root.attributes and not root.items:
        return CheckpointError(path, ProblemKind.UNSAFE_PICKLE, f"the pickle holds only {root.global_name}(...) "
                                                      f"and no tensors; nothing was executed")
    if mapping is None:
        held = "Tensor" if _is_leaf(root) else type(root).__name__  # a lazily read tensor is still a tensor
        return CheckpointError(path, ProblemKind.NO_WEIGHTS, f"no model weights found (the file holds a {held})")
    keys = set(map(str, mapping))
    if {"state", "param_groups"} <= keys or (keys & set(_OPTIMIZER_KEYS) and not keys & set(_WEIGHT_KEYS)):
        return CheckpointError(path, ProblemKind.OPTIMIZER_ONLY, "optimizer state only, no model weights")
    if "last_epoch" in keys and keys & {"base_lrs", "_step_count"}:
        return CheckpointError(path, ProblemKind.SCHEDULER_ONLY, "learning-rate scheduler state only, no model weights")
    shown = ", ".join(sorted(keys)[:12])
    return CheckpointError(path, ProblemKind.NO_WEIGHTS, f"no model weights found (top-level keys: {shown})")


def _dtype_name(dtype: Any) -> str:
    return str(dtype).replace("torch.", "")


#: each view may repeat up to MAX_FREE_ELEMENTS stored values; a whole file at most this many, so a
#: tiny file with hundreds of such views cannot cost minutes of CPU
_MAX_REPEATED_PER_FILE = 8 * MAX_FREE_ELEMENTS


def _repeated_elements(leaf: Leaf) -> int:
    """numel minus the storage span a view covers (> 0 only for views that repeat values)."""
    if isinstance(leaf, TensorRef):
        shape, stride = leaf.shape, leaf.stride
    elif isinstance(leaf, torch.Tensor):
        shape, stride = tuple(leaf.shape), tuple(leaf.stride())
    else:
        return 0
    numel = math.prod(shape)
    span = 0 if numel == 0 else sum((n - 1) * st for n, st in zip(shape, stride)) + 1
    return max(numel - span, 0)


def _drop_unreadable(path: str, tree: _TorchTree, weights: dict[str, tuple[Leaf, str]],
                     problems: list[Problem]) -> dict[str, tuple[Leaf, str]]:
    """The weights whose data can be read; the others become one Problem (or, when none is
    left, a CheckpointError: the whole file is unusable)."""
    bad = {}
    repeated = 0  # elements that repeat stored ones (stride 0), summed over the file
    for name, (leaf, _) in weights.items():
        reason = tree.leaf_problem(leaf)
        if not reason:
            repeated += _repeated_elements(leaf)
            if repeated > _MAX_REPEATED_PER_FILE:
                reason = (f"the file's stride-0 views repeat more than {_MAX_REPEATED_PER_FILE:,} elements in all; "
                          f"not materialised")
        if reason:
            bad[name] = reason
    if not bad:
        return weights
    first, reason = next(iter(bad.items()))
    if len(bad) == len(weights):
        raise CheckpointError(path, ProblemKind.CORRUPT, f"no readable tensor ({len(bad)} skipped; first: "
                                               f"{first}: {reason})")
    problems.append(Problem(file=path, kind=ProblemKind.UNREADABLE_TENSOR, severity="warning", count=len(bad),
                            message=_clean(f"{len(bad)} of {len(weights)} tensors skipped, their data "
                                           f"cannot be read (first: {first}: {reason})", 600)))
    return {n: v for n, v in weights.items() if n not in bad}


def _safe_optimizer_facts(path: str, opt_state: Mapping, tensors: Mapping[str, TensorInfo],
                          materialise: Callable[[Leaf], torch.Tensor], problems: list[Problem],
                          ordered: bool = True) -> dict[str, Any] | None:
    """optimizer_facts, where a malformed optimizer state becomes a Problem instead of an error."""
    try:
        return optimizer_facts(opt_state, tensors, materialise, ordered=ordered)
    except Exception as exc:  # noqa: BLE001 - optional facts: the weights are still usable
        problems.append(Problem(file=path, kind=ProblemKind.UNREADABLE_OPTIMIZER_STATE, severity="warning",
                                message=f"optimizer state ignored: {_one_line(exc)}"))
        return None


def _checkpoint_from_tree(path: str, tree: _TorchTree) -> CheckpointData:
    root = tree.root
    weights = _find_weights(root)
    if not weights:
        raise _no_weights_error(path, root)
    problems = list(tree.problems)
    weights = _drop_unreadable(path, tree, weights, problems)
    renamed = _strip_prefixes(weights)
    leaves = {renamed[n]: leaf for n, (leaf, _) in weights.items()}
    tensors = {renamed[n]: TensorInfo(renamed[n], tuple(leaf.shape), _dtype_name(leaf.dtype), role)
               for n, (leaf, role) in weights.items()}
    meta = _metadata(root)
    step = _step_from_metadata(meta)
    optimizer_sd = _find_optimizer_state(root)
    optimizer = None
    if optimizer_sd is not None:
        optimizer = _safe_optimizer_facts(path, optimizer_sd, tensors, tree.checked_materialiser(path),
                                          problems)
    return _finish(path, tree.format, tensors, lambda name: tree.materialise(leaves[name]),
                   step, meta, optimizer, problems)


def _finish(path: str, fmt: str, tensors: dict[str, TensorInfo], load: Callable[[str], torch.Tensor],
            step: int | None, meta: dict[str, Any], optimizer: dict[str, Any] | None,
            problems: list[Problem]) -> CheckpointData:
    """Build CheckpointData, falling back to a step in the name when the content has none."""
    source = "content"
    if step is None:
        step = step_from_name(path)
        source = "filename" if step is not None else "mtime"

    def checked_load(name: str) -> torch.Tensor:
        """One tensor as float32; any failure is a CheckpointError (the caller skips the tensor)."""
        if name not in tensors:
            raise CheckpointError(path, ProblemKind.MISSING_TENSOR, f"no tensor named {name!r}")
        try:
            return load(name)
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - I/O errors, torch errors, a file changed on disk
            raise CheckpointError(path, ProblemKind.UNREADABLE_TENSOR, f"tensor {name!r} cannot be read: "
                                                             f"{_one_line(exc)}") from None

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
    """A finite number from a plain value or a one-element tensor, else None."""
    try:
        if _is_leaf(value):
            number = float(materialise(value).reshape(-1)[0]) if math.prod(value.shape) >= 1 else None
        elif isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_)):
            number = float(value)
        else:
            return None
    except (CheckpointError, ValueError, TypeError, OverflowError, RuntimeError):
        return None
    return number if number is not None and math.isfinite(number) else None


def _number(value: Any, default: float) -> float:
    """float(value) for plain numbers (not strings), else `default` (metadata from untrusted files)."""
    if isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_)):
        try:
            number = float(value)
        except (ValueError, TypeError, OverflowError):
            return default
        return number if math.isfinite(number) else default
    return default


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
    try:
        tensor = materialise(leaf)
    except CheckpointError:
        return None  # this parameter's state cannot be read; the others still can
    holds_squares = key != "momentum_buffer"  # exp_avg_sq / square_avg already average g²
    mean_sq = float64_sum(tensor, power=1 if holds_squares else 2) / max(tensor.numel(), 1)
    if key == "exp_avg_sq":
        step = _scalar(state.get("step"), materialise)
        betas = group.get("betas")
        beta2 = _number(betas[1], math.nan) if isinstance(betas, (list, tuple)) and len(betas) > 1 else math.nan
        if step and step > 0 and 0.0 <= beta2 < 1.0:
            correction = 1.0 - beta2 ** step
            if correction > 0.0:
                mean_sq /= correction
    scale = 1.0
    if key == "momentum_buffer":
        momentum, dampening = _number(group.get("momentum", 0.0), 0.0), _number(group.get("dampening", 0.0), 0.0)
        scale = (1.0 - momentum) / (1.0 - dampening) if dampening < 1.0 else 1.0
    if not math.isfinite(mean_sq) or mean_sq < 0.0 or not math.isfinite(scale):
        return None
    return tuple(leaf.shape), math.sqrt(mean_sq) * scale


def _optimizer_kind(groups: list[Mapping], states: Iterable[Mapping]) -> str:
    keys = set().union(*({k for k in s if isinstance(k, str)} for s in states)) if states else set()
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
        params = group.get("params", [])
        for pid in params if isinstance(params, (list, tuple)) else []:
            if isinstance(pid, (int, str)) and not isinstance(pid, bool) and pid not in id_group:
                ids.append(pid)
                id_group[pid] = group
        names = group.get("param_names", [])
        if isinstance(names, (list, tuple)):
            names_in_file.extend(n for n in names if isinstance(n, str))
    estimates = {pid: _grad_rms(_as_mapping(state.get(pid)) or {}, id_group[pid], materialise)
                 for pid in ids}
    shapes = [est[0] if est else None for est in estimates.values()]
    params = [t for t in tensors.values() if t.role == "param"]
    names, mapping, note = _map_ids(ids, shapes, names_in_file, params, ordered)
    grad_rms = {}
    if names is not None:
        grad_rms = {name: est[1] for name, est in zip(names, estimates.values()) if est and name}
    steps = [_scalar((_as_mapping(state.get(pid)) or {}).get("step"), materialise) for pid in ids[:1]]
    step = int(steps[0]) if steps and steps[0] is not None and abs(steps[0]) < 2 ** 62 else None
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
        kind = (ProblemKind.TRUNCATED if "incomplete" in str(exc).lower() or "length" in str(exc)
                else ProblemKind.CORRUPT)
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


def _inside(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder and path != folder


def _shard_path(index_path: str, folder: str, shard: Any) -> str:
    """The path of a shard named in an index, which must stay inside the index's folder.

    Absolute names and `..` are refused before anything is opened; so is a symlink that resolves
    outside the folder, except into the `blobs/` of a Hugging Face cache repo (snapshots/<rev>/
    files are links to ../../blobs/<hash>).
    """
    shown = repr(shard)[:80]
    if not isinstance(shard, str) or not shard or "\0" in shard or os.path.isabs(shard):
        raise CheckpointError(index_path, ProblemKind.UNSAFE_PATH, f"shard {shown} listed in the index is not a "
                                                         f"relative file name; not read")
    base = os.path.abspath(folder)
    candidate = os.path.normpath(os.path.join(base, shard))
    if not _inside(candidate, base):
        raise CheckpointError(index_path, ProblemKind.UNSAFE_PATH, f"shard {shown} listed in the index points "
                                                         f"outside the index's folder; not read")
    real, real_base = os.path.realpath(candidate), os.path.realpath(base)
    if _inside(real, real_base):
        return candidate
    snapshots = os.path.dirname(real_base)
    if os.path.basename(snapshots) == "snapshots":
        blobs = os.path.join(os.path.dirname(snapshots), "blobs")
        if _inside(real, blobs):
            return candidate
    raise CheckpointError(index_path, ProblemKind.UNSAFE_PATH, f"shard {shown} listed in the index is a link to "
                                                     f"a file outside the index's folder; not read")


def _open_index(path: str, trust: bool) -> CheckpointData:
    """A sharded checkpoint: `*.safetensors.index.json` / `pytorch_model.bin.index.json`."""
    try:
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
        weight_map = dict(index["weight_map"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise CheckpointError(path, ProblemKind.NOT_A_CHECKPOINT, f"not a shard index ({_one_line(exc)})") from None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise CheckpointError(path, ProblemKind.NOT_A_CHECKPOINT, "not a shard index (weight_map must map names "
                                                        "to file names)")
    folder = os.path.dirname(path)
    paths = {shard: _shard_path(path, folder, shard) for shard in dict.fromkeys(weight_map.values())}
    shards = {}
    for shard, shard_path in paths.items():
        if not os.path.isfile(shard_path):
            raise CheckpointError(path, ProblemKind.MISSING_SHARD, f"shard {shard!r} listed in the index is missing")
        shards[shard] = _open_single_file(shard_path, trust)
    tensors, owner, problems = {}, {}, []
    for shard in shards.values():
        tensors.update(shard.tensors)
        owner.update({name: shard for name in shard.tensors})
        problems.extend(shard.problems)
    fmt = f"{next(iter(shards.values())).format}-sharded" if shards else "sharded"
    metadata = index.get("metadata")
    meta = {str(k): v for k, v in metadata.items()} if isinstance(metadata, dict) else {}
    return _finish(path, fmt, tensors, lambda name: owner[name].load(name),
                   _step_from_metadata(meta), meta, None, problems)


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError, RecursionError):
        return {}


def _open_folder(folder: str, trust: bool) -> CheckpointData:
    """A Hugging Face style folder: config.json + weights, maybe trainer_state.json/optimizer.pt."""
    weights = _folder_weights_file(folder)
    if weights is None:
        raise CheckpointError(folder, ProblemKind.NO_WEIGHTS, "folder has no model weights (looked for "
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
    return _safe_optimizer_facts(path, state, tensors, tree.checked_materialiser(path), problems,
                                 ordered=ordered)


# --------------------------------------------------------------------------------------------
# public entry points


def open_checkpoint(path: str, *, trust_pickles: bool = False) -> CheckpointData:
    """Open one checkpoint (file, shard index or model folder) lazily.

    Raises CheckpointError (an InputError) with a one-line message when nothing usable can be read,
    and never any other exception: an unexpected failure becomes kind "unreadable".
    """
    try:
        if os.path.isdir(path):
            return _open_folder(path, trust_pickles)
        if not os.path.exists(path):
            raise CheckpointError(path, ProblemKind.MISSING, "no such file")
        if path.endswith(".json"):
            return _open_index(path, trust_pickles)
        return _open_single_file(path, trust_pickles)
    except CheckpointError:
        raise
    except RecursionError:
        raise CheckpointError(path, ProblemKind.UNREADABLE, "could not be read (structure nested too deeply)") from None
    except OSError as exc:
        raise CheckpointError(path, ProblemKind.UNREADABLE, f"cannot read file ({exc.strerror or _one_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - one damaged file must never end the report
        raise CheckpointError(path, ProblemKind.UNREADABLE, f"could not be read ({type(exc).__name__}: "
                                                  f"{_one_line(exc)})") from None


def order_series(ckpts: list[CheckpointData]) -> list[CheckpointData]:
    """Checkpoints in training order: by step (from content, else file name), then mtime, then path.
    Checkpoints without any step come after the others, in mtime order."""
    return sorted(ckpts, key=lambda c: (c.step is None, c.step or 0, c.mtime, c.path))


__all__ = ["CheckpointError", "is_checkpoint_path", "open_checkpoint", "optimizer_facts",
           "order_series", "step_from_name"]
