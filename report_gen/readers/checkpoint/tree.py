"""Layer 2: a torch pickle -> a `TorchTree` (the unpickled object plus a way to read one tensor).

Leaves of the tree are real tensors (from `torch.load(weights_only=True, mmap=True)`) or
`TensorRef`s (from the restricted unpickler, read later through `storage`). How a file is unpickled
is a `LoadPolicy`, chosen once per read (`load_policy`) and handed down as one object: `SAFE` never
runs code from the file; `TRUSTED` (only with --trust-pickles) lets torch.load, torch.jit.load and
pickle.load do so, and says so in a "trusted-pickle" Problem.
"""
from __future__ import annotations

import abc
import ctypes
import io
import mmap
import os
import pickle
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from report_gen.core import Problem, ProblemKind
from report_gen.readers.checkpoint.errors import CheckpointError, clean, one_line
from report_gen.readers.checkpoint.sniff import sniff
from report_gen.readers.checkpoint.storage import (LegacyStorages, ZipStorages, impossible_size, open_zip,
                                                   zip_archive_prefix)
from report_gen.readers.pickle_guard import (MAX_MEMBER_BYTES, MAX_PICKLE_BYTES, Budget, PickleRefused, ScanStats,
                                             scan_zip)
from report_gen.readers.safe_unpickle import (Placeholder, StorageRef, TensorRef, is_dangerous_global,
                                              restricted_load, storage_ref_from_pid, view_problem)
from report_gen.safe_open import open_regular


Leaf = Any  # torch.Tensor | TensorRef


def is_leaf(value: Any) -> bool:
    return isinstance(value, (torch.Tensor, TensorRef))


def as_mapping(obj: Any) -> Mapping | None:
    if isinstance(obj, Mapping):
        return obj
    if isinstance(obj, Placeholder) and obj.items:  # an unknown dict subclass
        return obj.items
    return None


def _real_tensor_problem(leaf: torch.Tensor) -> str | None:
    """Why a real tensor (torch.load) should not be materialised, or None."""
    try:
        if leaf.layout != torch.strided:
            return f"unsupported tensor layout {leaf.layout}"
        available = leaf.untyped_storage().nbytes() // max(leaf.element_size(), 1)
        return view_problem(leaf.storage_offset(), tuple(leaf.shape), tuple(leaf.stride()), available)
    except Exception as exc:  # noqa: BLE001 - quantized, meta, nested tensors...
        return f"unsupported tensor ({one_line(exc)})"


def _real_tensors_only(leaf: Leaf) -> str | None:
    if isinstance(leaf, torch.Tensor):
        return _real_tensor_problem(leaf)
    return "tensor without readable storage"


@dataclass
class TorchTree:
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
            return f"unreadable tensor description ({one_line(exc)})"

    def checked_materialiser(self, path: str) -> Callable[[Leaf], torch.Tensor]:
        """materialise, refusing (CheckpointError) a leaf that fails `check`."""
        def materialise(leaf: Leaf) -> torch.Tensor:
            problem = self.leaf_problem(leaf)
            if problem:
                raise CheckpointError(path, ProblemKind.UNREADABLE_TENSOR, problem)
            return self.materialise(leaf)

        return materialise


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


def mapped_materialiser(leaf: Leaf) -> torch.Tensor:
    """float32 copy of a tensor from a file mapping (safetensors), then its pages are released."""
    out = leaf.detach().to(torch.float32, copy=True)
    _release_mapped_pages(leaf)
    return out


def _mapped_materialiser(leaf: Leaf) -> torch.Tensor:
    """A float32 tensor from `torch.load(mmap=True)`: a contiguous float32 tensor is returned as the
    mapped view itself (no copy: its pages are the file's, shared with the page cache, never private
    memory; `release_pages` drops them when the caller is done); anything else is copied to float32
    and the mapped pages released at once."""
    leaf = leaf.detach()
    if leaf.dtype == torch.float32 and leaf.is_contiguous():
        view = leaf.view_as(leaf)
        view._report_gen_mapped = True  # release_pages may drop its pages (never anonymous memory)
        return view
    out = leaf.to(torch.float32, copy=True)
    _release_mapped_pages(leaf)
    return out


def release_pages(tensor: torch.Tensor) -> None:
    """Drop the resident pages of a tensor that `load` returned as a view into a file mapping (a no-op
    for any other tensor: anonymous memory is freed with the tensor, and dropping it would zero it).
    Best effort; the tensor stays valid (its pages are re-read from the file if touched again)."""
    if getattr(tensor, "_report_gen_mapped", False):
        _release_mapped_pages(tensor)


def _memory_materialiser(leaf: Leaf) -> torch.Tensor:
    return leaf.detach().to(torch.float32, copy=True)


def unchanged_guard(path: str) -> Callable[[], None]:
    """A check that `path` is still the file it is now (CheckpointError once it was rewritten):
    touching pages of a mapping whose file was truncated kills the process (SIGBUS), and a
    checkpoint of a live run (last.ckpt) can be rewritten between open and load."""
    before = os.stat(path)

    def check() -> None:
        try:
            now = os.stat(path)
        except OSError as exc:
            raise CheckpointError(path, ProblemKind.UNREADABLE, f"cannot read file ({exc.strerror or exc})") from None
        if (now.st_size, now.st_mtime_ns, now.st_ino) != (before.st_size, before.st_mtime_ns, before.st_ino):
            raise CheckpointError(path, ProblemKind.UNREADABLE_TENSOR, "the file changed on disk after it was opened")

    return check


def _file_guarded(path: str, materialise: Callable[[Leaf], torch.Tensor]) -> Callable[[Leaf], torch.Tensor]:
    """`materialise` for tensors mapped from `path`, refusing once the file has been rewritten."""
    check = unchanged_guard(path)

    def guarded(leaf: Leaf) -> torch.Tensor:
        check()
        return materialise(leaf)

    return guarded


def _ref_reader(storages: "ZipStorages | LegacyStorages"
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
    return Problem(file=path, kind=ProblemKind.UNSAFE_PICKLE_NEUTRALISED, message=clean(message, 1000),
                   severity="warning" if dangerous else "info", count=len(replaced))


def _trusted_problem(path: str, how: str) -> Problem:
    return Problem(file=path, kind=ProblemKind.TRUSTED_PICKLE, severity="warning",
                   message=f"loaded with {how} because --trust-pickles was given: code in the file was "
                           f"allowed to run")


def _restricted(path: str, data: bytes | io.BufferedReader, persistent: Callable | None,
                damaged: ProblemKind = ProblemKind.NOT_A_CHECKPOINT, *, max_bytes: int = MAX_PICKLE_BYTES,
                budget: Budget | None = None) -> tuple[Any, list[str]]:
    """Restricted unpickling; a malformed pickle is CheckpointError(`damaged`) ("corrupt" inside a
    torch file, "not-a-checkpoint" for a plain pickle that is something else), one the pre-scan
    refuses (`pickle_guard`: longer than `max_bytes`, or a hash, memory or CPU bomb) is
    "hostile-pickle". `budget` is the input file's, shared by all the pickles it holds."""
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        return restricted_load(stream, persistent, max_bytes=max_bytes, budget=budget)
    except CheckpointError:
        raise
    except PickleRefused as exc:
        if exc.malformed and "truncated" in exc.reason and damaged == ProblemKind.CORRUPT:  # as EOFError below
            if damaged == ProblemKind.CORRUPT and isinstance(data, bytes):
                raise CheckpointError(path, ProblemKind.CORRUPT, "data.pkl ends early (corrupt pickle)") from None
            raise CheckpointError(path, ProblemKind.TRUNCATED, "pickle data ends early (truncated file)") from None
        if exc.malformed:  # no valid pickle at all: damage, or a file that is something else
            raise CheckpointError(path, damaged, f"unreadable pickle: {exc.reason}") from None
        raise CheckpointError(path, ProblemKind.HOSTILE_PICKLE, _refusal(exc)) from None
    except EOFError:
        if damaged == ProblemKind.CORRUPT and isinstance(data, bytes):  # a complete zip entry that ends early
            raise CheckpointError(path, ProblemKind.CORRUPT, "data.pkl ends early (corrupt pickle)") from None
        raise CheckpointError(path, ProblemKind.TRUNCATED, "pickle data ends early (truncated file)") from None
    except RecursionError:
        raise CheckpointError(path, damaged, "pickle nested too deeply") from None
    except Exception as exc:  # noqa: BLE001 - any malformed pickle
        raise CheckpointError(path, damaged, f"unreadable pickle: {one_line(exc)}") from None


def _refusal(exc: PickleRefused) -> str:
    """The one-line message of a pre-scan refusal: which pickle, why, where (file data only ever
    reaches it through `bounded_repr`)."""
    where = f" at byte {exc.offset:,}" if exc.offset is not None else ""
    return f"{exc.what} refused before unpickling, nothing was run: {exc.reason}{where}"


def _scan_archive(path: str, zf: zipfile.ZipFile) -> tuple[Budget, dict[str, ScanStats]]:
    """Pre-scan every pickle member of an open torch zip (what torch.load(weights_only=True) and
    the restricted unpickler would read) against one budget; CheckpointError when one is hostile
    ("hostile-pickle") or cannot be inflated ("corrupt")."""
    budget = Budget()
    try:
        return budget, scan_zip(zf, budget=budget)
    except PickleRefused as exc:
        if exc.malformed:
            raise CheckpointError(path, ProblemKind.CORRUPT, f"{exc.what} inside the archive is no valid pickle "
                                                             f"({exc.reason})") from None
        raise CheckpointError(path, ProblemKind.HOSTILE_PICKLE, _refusal(exc)) from None
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError, RuntimeError, ValueError) as exc:
        raise CheckpointError(path, ProblemKind.CORRUPT, f"a pickle inside the archive is damaged "
                                                         f"({one_line(exc)})") from None


def _refund(budget: Budget, stats: ScanStats | None) -> Budget:
    """What is left of a file's budget for unpickling a member the archive scan already charged
    (the unpickler scans it again: it is charged once, not twice)."""
    if stats is None:
        return budget
    return Budget(budget.opcodes + stats.opcodes, budget.object_bytes + stats.object_bytes)



# --------------------------------------------------------------------------------------------
# loader policies: how a torch pickle becomes a tree


def _materialiser(path: str, mapped: bool) -> Callable[[Leaf], torch.Tensor]:
    """How to copy out tensors of `torch.load(path, mmap=mapped)`; call it before loading (the file's
    identity is taken then)."""
    return _file_guarded(path, _mapped_materialiser) if mapped else _memory_materialiser


def _torch_load(path: str, *, weights_only: bool, mmap: bool) -> Any:
    """torch.load of a complete torch zip. Damage is CheckpointError("corrupt"); a weights_only
    refusal is re-raised as it is (pickle.UnpicklingError)."""
    try:
        return torch.load(path, map_location="cpu", mmap=mmap, weights_only=weights_only)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged files
        if weights_only and _weights_only_refusal(exc):
            raise
        # the zip itself opened and is complete (checked before), so this is damage, not truncation
        raise CheckpointError(path, ProblemKind.CORRUPT, f"torch.load failed: {one_line(exc)}") from None


def _is_torchscript(prefix: str, names: list[str]) -> bool:
    return f"{prefix}constants.pkl" in names and any(n.startswith(f"{prefix}code/") for n in names)


def _is_compressed(zf: zipfile.ZipFile) -> bool:
    """torch never compresses entries: a compressed archive was re-zipped, and torch.load would inflate
    or refuse its entries whole."""
    return any(i.compress_type != zipfile.ZIP_STORED for i in zf.infolist())


class LoadPolicy(abc.ABC):
    """How the pickles of torch files become trees: `load_tree(path)` sniffs the file and hands it
    to the policy's loader for a torch zip, a legacy torch file or a plain pickle."""

    def load_tree(self, path: str) -> TorchTree:
        kind = sniff(path)
        if kind == "zip":
            return self.zip_tree(path)
        if kind == "legacy":
            return self.legacy_tree(path)
        if kind == "pickle":
            return self.pickle_tree(path)
        raise CheckpointError(path, ProblemKind.NOT_A_CHECKPOINT, f"expected a torch file, found {kind}")

    @abc.abstractmethod
    def zip_tree(self, path: str) -> TorchTree:
        """A torch zip archive (torch.save since 1.6, TorchScript)."""

    @abc.abstractmethod
    def legacy_tree(self, path: str) -> TorchTree:
        """A legacy torch file (`_use_new_zipfile_serialization=False`)."""

    @abc.abstractmethod
    def pickle_tree(self, path: str) -> TorchTree:
        """A plain pickle (.pkl): small files by nature, read eagerly."""


class SafePolicy(LoadPolicy):
    """The default: no code from the file ever runs. A plain torch zip is read with
    `torch.load(weights_only=True, mmap=True)`; what that refuses, TorchScript, re-zipped archives,
    legacy files and plain pickles go through the restricted unpickler, their tensors read through
    the storage readers after each view was checked against the bytes behind it."""

    def zip_tree(self, path: str) -> TorchTree:
        with open_zip(path) as zf:
            prefix, names = zip_archive_prefix(zf, path)
            # every pickle torch.load(weights_only=True) or the restricted unpickler would read is
            # scanned first: a hash bomb crashes both, a memory bomb exhausts both
            budget, scanned = _scan_archive(path, zf)
            is_script = _is_torchscript(prefix, names)
            if not is_script and not _is_compressed(zf):
                materialise = _materialiser(path, mapped=True)
                try:
                    return TorchTree(_torch_load(path, weights_only=True, mmap=True), "torch-zip", materialise)
                except pickle.UnpicklingError:  # weights_only refused a global: unpickled restricted below
                    pass
            info = zf.getinfo(f"{prefix}data.pkl")
            if impossible_size(info):  # (the scan refused one inflating more than MAX_MEMBER_RATIO already)
                raise CheckpointError(path, ProblemKind.CORRUPT, f"data.pkl claims {info.file_size:,} bytes "
                                                                 f"from {info.compress_size:,} compressed (zip bomb?)")
            try:
                data = zf.read(info)
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError, RuntimeError) as exc:
                raise CheckpointError(path, ProblemKind.CORRUPT, f"data.pkl inside the archive is damaged "
                                                                 f"({one_line(exc)})") from None
            storages = ZipStorages(path, zf, f"{prefix}data/")
        root, replaced = _restricted(path, data, storage_ref_from_pid, ProblemKind.CORRUPT,
                                     max_bytes=MAX_MEMBER_BYTES, budget=_refund(budget, scanned.get(info.filename)))
        problems = [_neutralised_problem(path, replaced)] if replaced else []
        materialise, check = _ref_reader(storages)
        return TorchTree(root, "torchscript" if is_script else "torch-zip", materialise, problems, check)

    def legacy_tree(self, path: str) -> TorchTree:
        refs: dict[str, StorageRef] = {}

        def persistent(pid: Any) -> Any:
            if isinstance(pid, tuple) and pid and pid[0] == "module":
                return pid[1]  # legacy pickled module class: (tag, class, source file, source)
            ref = storage_ref_from_pid(pid)
            refs.setdefault(ref.key, ref)
            return ref

        budget = Budget()  # one for the five pickles: splitting a bomb over them gains nothing
        with open_regular(path) as f:
            for _ in range(3):  # magic number, protocol version, sys info
                _restricted(path, f, None, ProblemKind.CORRUPT, max_bytes=MAX_MEMBER_BYTES, budget=budget)
            root, replaced = _restricted(path, f, persistent, ProblemKind.CORRUPT, max_bytes=MAX_MEMBER_BYTES,
                                         budget=budget)
            keys, _ = _restricted(path, f, None, ProblemKind.CORRUPT, max_bytes=MAX_MEMBER_BYTES, budget=budget)
            data_start = f.tell()
        if not isinstance(keys, (list, tuple)) or not all(isinstance(k, (str, int)) for k in keys):
            raise CheckpointError(path, ProblemKind.CORRUPT, "legacy checkpoint: malformed list of storage keys")
        storages = LegacyStorages(path, [str(k) for k in keys], data_start,
                                  {k: r.dtype for k, r in refs.items()})
        problems = [_neutralised_problem(path, replaced)] if replaced else []
        materialise, check = _ref_reader(storages)
        return TorchTree(root, "torch-legacy", materialise, problems, check)

    def pickle_tree(self, path: str) -> TorchTree:
        try:
            with open_regular(path) as f:  # a plain pickle may carry tensor bytes in band: MAX_PICKLE_BYTES
                root, replaced = _restricted(path, f, None)
        except CheckpointError as exc:
            # a .pkl that is something else sits beside checkpoints (info); a .pt/.ckpt that is no
            # readable pickle was meant to be a checkpoint (warning)
            if exc.kind != ProblemKind.NOT_A_CHECKPOINT or path.lower().endswith(".pkl"):
                raise
            raise CheckpointError(path, exc.kind, exc.problem, severity="warning") from None
        problems = [_neutralised_problem(path, replaced)] if replaced else []
        return TorchTree(root, "pickle", _memory_materialiser, problems)


class TrustedPolicy(LoadPolicy):
    """--trust-pickles: `torch.load(weights_only=False)`, `torch.jit.load` and `pickle.load`, which
    run code from the file; every tree carries a "trusted-pickle" Problem saying so."""

    def zip_tree(self, path: str) -> TorchTree:
        with open_zip(path) as zf:
            prefix, names = zip_archive_prefix(zf, path)
            if _is_torchscript(prefix, names):
                try:
                    module = torch.jit.load(path, map_location="cpu")
                except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged files
                    raise CheckpointError(path, ProblemKind.CORRUPT,
                                          f"torch.jit.load failed: {one_line(exc)}") from None
                return TorchTree(module, "torchscript", _memory_materialiser,
                                 [_trusted_problem(path, "torch.jit.load")])
            mapped = not _is_compressed(zf)  # the entries of a re-zipped archive cannot be mapped
            materialise = _materialiser(path, mapped)
            root = _torch_load(path, weights_only=False, mmap=mapped)
        return TorchTree(root, "torch-zip", materialise, [_trusted_problem(path, "torch.load(weights_only=False)")])

    def legacy_tree(self, path: str) -> TorchTree:
        try:
            root = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged files
            kind = ProblemKind.TRUNCATED if isinstance(exc, EOFError) else ProblemKind.CORRUPT
            raise CheckpointError(path, kind, f"torch.load failed: {one_line(exc)}") from None
        return TorchTree(root, "torch-legacy", _memory_materialiser,
                         [_trusted_problem(path, "torch.load(weights_only=False)")])

    def pickle_tree(self, path: str) -> TorchTree:
        try:
            with open_regular(path) as f:
                root = pickle.load(f)  # noqa: S301 - explicitly trusted by the user
        except Exception as exc:  # noqa: BLE001 - any malformed pickle
            raise CheckpointError(path, ProblemKind.NOT_A_CHECKPOINT, f"unreadable pickle: {one_line(exc)}") from None
        return TorchTree(root, "pickle", _memory_materialiser, [_trusted_problem(path, "pickle.load")])


SAFE: LoadPolicy = SafePolicy()
TRUSTED: LoadPolicy = TrustedPolicy()


def load_policy(trust_pickles: bool) -> LoadPolicy:
    """The one place where --trust-pickles is turned into behaviour."""
    return TRUSTED if trust_pickles else SAFE
