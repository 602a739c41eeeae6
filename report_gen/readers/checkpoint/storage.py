"""Layer 1b: the bytes behind a tensor, in a torch zip archive or a legacy torch file.

The storage readers never extract or inflate a whole entry: every view is checked against the bytes
that really back it when the file is opened (storage present, no negative sizes or strides, offset +
extent inside the zip entry or legacy data block, bounded repetition), nothing is allocated before
its size has been checked against the file, and compressed zip entries are streamed (1 MiB at a
time, only up to the bytes one tensor needs) within an inflation budget set by the archive's size
on disk, never by the sizes it declares: all the loads of one archive together inflate at most
`INFLATE_RATIO` times its bytes on disk plus `INFLATE_SLACK`. Every file is opened through
`report_gen.safe_open.open_regular` (regular files only, never blocking).
"""
from __future__ import annotations

import os
import struct
import zipfile
import zlib
from typing import Any

import torch

from report_gen.core import ProblemKind
from report_gen.readers.checkpoint.errors import CheckpointError, one_line
from report_gen.readers.safe_unpickle import TensorRef, view_problem
from report_gen.safe_open import open_regular


def read_exact(path: str, offset: int, nbytes: int) -> bytearray:
    """`nbytes` bytes at `offset`; the file size is checked before anything is allocated."""
    try:
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            if offset < 0 or nbytes < 0 or offset + nbytes > size:
                raise CheckpointError(path, ProblemKind.TRUNCATED, f"tensor data ends early (wanted {nbytes:,} bytes "
                                                                   f"at offset {offset:,}, the file has {size:,})")
            buf = bytearray(nbytes)
            f.seek(offset)
            got = f.readinto(buf)
    except OSError as exc:
        raise CheckpointError(path, ProblemKind.UNREADABLE,
                              f"cannot read tensor data ({exc.strerror or exc})") from None
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
#: total bytes inflated per archive, over all loads: INFLATE_RATIO x its size on disk + INFLATE_SLACK.
#: torch never compresses; an archive re-zipped with deflate shrinks float weights by 1.05-1.3x
#: (mantissas are noise), half-zero LoRA adapters by ~2x, so 16x leaves 8x headroom over real
#: re-zipped checkpoints (plus the re-inflation of views read out of storage order), while a
#: 1.5 MB bomb declaring 1.5 GiB gets 88 MiB before it is refused
INFLATE_RATIO, INFLATE_SLACK = 16, 64 << 20


def inflation_budget(size_on_disk: int) -> int:
    """Bytes all the loads of one compressed archive of `size_on_disk` bytes may inflate in total."""
    return INFLATE_RATIO * max(size_on_disk, 0) + INFLATE_SLACK


class _OwnedZip(zipfile.ZipFile):
    """A ZipFile over a file object it closes with itself (zipfile leaves passed files open)."""

    def close(self) -> None:
        fp = getattr(self, "_owned", None)
        try:
            super().close()
        finally:
            if fp is not None:
                fp.close()


def _zip_of(path: str) -> zipfile.ZipFile:
    """zipfile.ZipFile(path), with the file opened through open_regular (a FIFO never blocks)."""
    f = open_regular(path)
    try:
        zf = _OwnedZip(f)
    except BaseException:
        f.close()
        raise
    zf._owned = f
    return zf


def impossible_size(info: zipfile.ZipInfo) -> bool:
    return (info.compress_type == zipfile.ZIP_DEFLATED
            and info.file_size > info.compress_size * _MAX_DEFLATE_RATIO + (1 << 16))


def open_zip(path: str) -> zipfile.ZipFile:
    """The archive; "truncated" only when its end (the central directory) is really missing."""
    try:
        zf = _zip_of(path)
    except zipfile.BadZipFile as exc:
        if "not a zip file" in str(exc):  # no end-of-central-directory record: the end is missing
            raise CheckpointError(path, ProblemKind.TRUNCATED, "truncated zip archive (no end of central directory); "
                                                               "the save or download was interrupted") from None
        raise CheckpointError(path, ProblemKind.CORRUPT, f"corrupt zip archive ({one_line(exc)})") from None
    except OSError as exc:
        raise CheckpointError(path, ProblemKind.UNREADABLE, f"cannot read file ({exc.strerror or exc})") from None
    except (ValueError, EOFError, NotImplementedError, RuntimeError) as exc:
        raise CheckpointError(path, ProblemKind.CORRUPT, f"corrupt zip archive ({one_line(exc)})") from None
    size = os.fstat(zf.fp.fileno()).st_size
    for info in zf.infolist():
        if info.header_offset + info.compress_size > size:
            zf.close()
            raise CheckpointError(path, ProblemKind.CORRUPT, f"zip entry {info.filename!r} lies beyond the end of "
                                                             f"the file")
    return zf


def zip_archive_prefix(zf: zipfile.ZipFile, path: str) -> tuple[str, list[str]]:
    names = zf.namelist()
    pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
    if not pkl:
        if any(n.endswith("model.json") for n in names):
            raise CheckpointError(path, ProblemKind.TORCHSCRIPT_V1, "this is an old TorchScript (v1, model.json) "
                                                                    "archive; re-save it with a recent torch")
        raise CheckpointError(path, ProblemKind.NOT_A_CHECKPOINT,
                              "zip archive without data.pkl (not a torch.save file)")
    return pkl[0][: -len("data.pkl")], names


class StorageReader:
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


class ZipStorages(StorageReader):
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
        self._budget = inflation_budget(self._size)

    def _data_offset(self, key: str, info: zipfile.ZipInfo) -> int | str:
        """Offset of a stored entry's bytes (from its local header), or why it cannot be read."""
        if key not in self._offsets:
            with open_regular(self.path) as f:
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
        elif impossible_size(info):
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
            return read_exact(self.path, self._offsets[key] + start, nbytes)
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
        zf = _zip_of(self.path)
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
                raise CheckpointError(self.path, ProblemKind.CORRUPT,
                                      f"compressed archive: reading this tensor would inflate more than "
                                      f"{INFLATE_RATIO}x the archive's {self._size:,} bytes on disk (zip bomb?); "
                                      f"tensor not read")
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
                                                                  f"{one_line(exc)}") from None
        self._inflated += (pos - origin) + got
        if pos != start or got != nbytes:
            self.close()
            raise CheckpointError(self.path, ProblemKind.CORRUPT, f"compressed storage {info.filename} ends early")
        self._stream = (key, self._stream[1], src, start + got)
        return buf


class LegacyStorages(StorageReader):
    """Storage data blocks of a legacy (pre-1.6, `_use_new_zipfile_serialization=False`) file.

    After the pickles come, for each storage key in order, an int64 element count and the raw bytes.
    """

    def __init__(self, path: str, keys: list[str], data_start: int, dtypes: dict[str, torch.dtype]):
        self.path = path
        self._blocks: dict[str, tuple[int, int]] = {}  # key -> (data offset, bytes)
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
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
        return read_exact(self.path, self._blocks[key][0] + start, nbytes)
