"""A restricted unpickler that reads checkpoint pickles without executing anything from them.

`torch.load(weights_only=True)` refuses a whole file as soon as it meets one global it does not know
(an `argparse.Namespace` in Lightning's hyper-parameters, a pickled `nn.Module` subclass, ...). This
unpickler never refuses and never runs code from the file:

* tensors are not built: `torch._utils._rebuild_tensor_v2` and friends return a `TensorRef`
  (storage key, dtype, offset, shape, stride) that the checkpoint reader materialises later, one
  tensor at a time, by reading only that storage's bytes;
* a short allow-list of inert constructors (OrderedDict, set, torch dtypes) is honoured;
* every other global becomes a `Placeholder` subclass that records its name, accepts any
  arguments, state, items and appends, and never calls anything. A pickled module of an unknown
  class therefore still exposes its `_parameters` / `_buffers` / `_modules` through `state`;
* numpy is never handed anything from the file while unpickling: `numpy.dtype`, `ndarray`
  reconstruction and numpy scalars are inert recorders too. Only after the whole pickle is read are
  they turned into real numpy values, and only for plain numeric dtypes (bool/int/uint/float/complex,
  no fields, sub-arrays or objects) whose raw bytes have exactly the size the shape needs
  (`np.frombuffer(raw, np.dtype(spec)).reshape(shape)`); anything else stays a placeholder;
* state setting (BUILD), item assignment and appends only ever reach placeholders, dicts and
  lists: the pure-Python unpickler is used so those opcodes can be guarded, and a pickle cannot
  call `__setstate__` on a real object (a numpy dtype, a tensor, a shared class or function).

The global names replaced are collected in `RestrictedUnpickler.replaced` so callers can report them.

`restricted_load` first runs the linear pre-scan of `pickle_guard` over the pickle (size, opcode
and object budgets, nesting depth, hash cost of keys and set members): a hostile pickle is refused
with `PickleRefused` before a single opcode is executed. A torch.save blob nested in a plain
pickle is scanned too (against the same per-file budget) before torch's own loader reads it.
"""
from __future__ import annotations

import collections
import contextvars
import io
import math
import os
import pickle
import re
import struct
import zipfile
from dataclasses import dataclass
from typing import IO, Any, Callable

import numpy as np
import torch

from report_gen.readers.pickle_guard import (MAX_PICKLE_BYTES, Budget, PickleRefused, bounded_repr,
                                             scan_stream, scan_torch_bytes)

_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
    "UntypedStorage": torch.uint8,
}

#: Modules (dotted prefixes) whose globals mean "this pickle tries to run a program, load more
#: pickles, touch files or the network", not "harmless metadata". Matched on whole name segments:
#: "torch.hub" matches torch.hub.load, not torch.hubx.
DANGEROUS_MODULES = frozenset({
    "os", "posix", "nt", "io", "_io", "subprocess", "_posixsubprocess", "sys", "shutil", "socket",
    "_socket", "ssl", "select", "runpy", "importlib", "imp", "zipimport", "pkgutil", "pty",
    "webbrowser", "ctypes", "_ctypes", "code", "codeop", "pickle", "_pickle", "cPickle",
    "marshal", "shelve", "dill", "cloudpickle", "joblib", "types", "torch.hub", "torch.load",
    "torch.serialization", "torch.jit.load", "torch.package", "torch.utils.cpp_extension",
    "numpy.load", "numpy.testing", "numpy.f2py", "numpy.distutils", "requests", "urllib",
    "urllib2", "urllib3", "httplib", "http", "ftplib", "telnetlib", "smtplib", "xmlrpc",
    "asyncio", "multiprocessing", "concurrent", "threading", "_thread", "signal", "pdb", "bdb",
    "timeit", "profile", "cProfile", "trace", "doctest", "pydoc", "platform.popen", "commands",
    "popen2", "distutils", "setuptools", "pip", "operator.attrgetter", "operator.methodcaller",
})
#: Names under a dangerous prefix that plain metadata legitimately uses (hparams containers).
HARMLESS_GLOBALS = frozenset({"types.SimpleNamespace"})
DANGEROUS_BUILTINS = frozenset({"eval", "exec", "compile", "open", "__import__", "getattr",
                                "setattr", "delattr", "globals", "locals", "vars", "input",
                                "breakpoint", "apply", "execfile", "reload", "file", "__loader__",
                                "__builtins__"})


@dataclass(frozen=True)
class StorageType:
    """What `torch.FloatStorage` & co. unpickle to: only the element dtype."""

    dtype: torch.dtype


@dataclass(frozen=True)
class StorageRef:
    """A storage named in the pickle; its bytes live elsewhere (zip entry or legacy data block)."""

    key: str
    dtype: torch.dtype
    numel: int
    location: str = "cpu"
    view_offset: int = 0  # legacy view storages: element offset into the root storage


@dataclass(frozen=True)
class TensorRef:
    """A tensor as described by the pickle, not yet read from disk."""

    storage: StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    is_param: bool = False

    @property
    def dtype(self) -> torch.dtype:
        return self.storage.dtype

    def element_span(self) -> tuple[int, int]:
        """(first element, number of elements) of the storage this view touches."""
        if any(s == 0 for s in self.shape):
            return self.offset, 0
        last = sum((s - 1) * st for s, st in zip(self.shape, self.stride))
        return self.offset, last + 1


class Placeholder:
    """An inert stand-in for any global the allow-list does not know.

    Calling, constructing, `__setstate__`, item assignment and appends are all recorded, never
    forwarded. `global_name` is the dotted name the pickle asked for.
    """

    global_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "Placeholder":
        obj = object.__new__(cls)
        object.__setattr__(obj, "_fields", {"args": args, "state": None, "items": {}, "list": []})
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._fields["args"] = self._fields["args"] or args

    def __setstate__(self, state: Any) -> None:
        self._fields["state"] = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self._fields["items"][key] = value

    def append(self, value: Any) -> None:
        self._fields["list"].append(value)

    def extend(self, values: Any) -> None:
        self._fields["list"].extend(values)

    def __setattr__(self, key: str, value: Any) -> None:
        state = self._fields["state"]
        if not isinstance(state, dict):
            state = self._fields["state"] = {}
        state[key] = value

    @property
    def args(self) -> tuple:
        return self._fields["args"]

    @property
    def state(self) -> Any:
        """The object's pickled state (for modules and plain objects: their `__dict__`)."""
        return self._fields["state"]

    @property
    def items(self) -> dict:
        return self._fields["items"]

    @property
    def attributes(self) -> dict:
        """Best-effort `__dict__`: the dict state, or the dict part of a (dict, slots) state."""
        state = self.state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            state = state[0]
        return state if isinstance(state, dict) else {}

    def __repr__(self) -> str:
        return f"<placeholder {self.global_name}>"


_placeholder_classes: dict[str, type] = {}


def placeholder_class(global_name: str) -> type:
    """The (cached) Placeholder subclass standing for `global_name`."""
    cls = _placeholder_classes.get(global_name)
    if cls is None:
        cls = type(global_name.rsplit(".", 1)[-1], (Placeholder,), {"global_name": global_name})
        _placeholder_classes[global_name] = cls
    return cls


#: A view may repeat storage elements (stride 0): allow at most this many elements per stored one
#: (plus MAX_FREE_ELEMENTS), so a tiny file cannot make the reader allocate gigabytes.
MAX_ELEMENTS_PER_STORED = 16
MAX_FREE_ELEMENTS = 1 << 20


def _int_tuple(value: Any) -> tuple[int, ...] | None:
    if not isinstance(value, (tuple, list)) or len(value) > _MAX_NDIM:
        return None
    if not all(type(v) is int for v in value):
        return None
    return tuple(value)


def view_problem(offset: Any, shape: Any, stride: Any, available: int) -> str | None:
    """Why a view (offset, shape, stride) cannot be read from `available` storage elements, or None."""
    if type(offset) is not int or not isinstance(shape, tuple) or not isinstance(stride, tuple):
        return "malformed tensor description"
    if len(shape) != len(stride) or len(shape) > _MAX_NDIM:
        return f"shape {shape} and stride {stride} do not match"
    if offset < 0 or any(n < 0 for n in shape) or any(st < 0 for st in stride):
        return f"negative offset, size or stride (offset {offset}, stride {stride})"
    numel = math.prod(shape)
    span = 0 if numel == 0 else offset + sum((n - 1) * st for n, st in zip(shape, stride)) + 1
    if span > available:
        return f"needs {span:,} elements of a storage holding {available:,}"
    if numel > MAX_ELEMENTS_PER_STORED * max(span - offset, 1) + MAX_FREE_ELEMENTS:
        return f"{numel:,} elements repeat a few stored values (stride 0); not materialised"
    return None


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, *_ignored: Any) -> Any:
    shape, strides = _int_tuple(size), _int_tuple(stride)
    if isinstance(storage, torch.storage.TypedStorage) and shape is not None and strides is not None:
        # a real storage from _load_from_bytes (plain pickle of a tensor): build it in memory, but
        # only a view that fits (torch would grow the storage to whatever size the pickle claims)
        if view_problem(storage_offset, shape, strides, storage._size()) is None:
            return torch._utils._rebuild_tensor_v2(storage, storage_offset, shape, strides, False,
                                                   collections.OrderedDict())
    if not isinstance(storage, StorageRef) or shape is None or strides is None \
            or type(storage_offset) is not int:
        return placeholder_class("torch._utils._rebuild_tensor_v2")(storage)
    return TensorRef(storage, storage_offset, shape, strides)


def _rebuild_parameter(data: Any, *_ignored: Any) -> Any:
    if isinstance(data, TensorRef):
        return TensorRef(data.storage, data.offset, data.shape, data.stride, is_param=True)
    return data


def _rebuild_from_type(func: Any, _new_type: Any, args: tuple, _state: Any) -> Any:
    """torch._tensor._rebuild_from_type_v2: only ever forwards to an allow-listed rebuild."""
    if func in (_rebuild_tensor, _rebuild_parameter):
        return func(*args)
    return placeholder_class("torch._tensor._rebuild_from_type_v2")(func, args)


#: the budget of the file being unpickled, for the torch.save blobs nested in it
_FILE_BUDGET: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("pickle_budget", default=None)


def _load_from_bytes(data: Any) -> Any:
    """torch.storage._load_from_bytes (plain `pickle` of a tensor): a nested torch.save blob, read
    by torch's own weights-only loader once the pre-scan accepted it (PickleRefused otherwise,
    which refuses the whole file: a hostile blob means a hostile file). Zip blobs must store their
    entries uncompressed (torch never compresses; a compressed entry would be inflated whole)."""
    if not isinstance(data, bytes):
        return placeholder_class("torch.storage._load_from_bytes")(data)
    if data[:2] == b"PK":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                if any(i.compress_type != zipfile.ZIP_STORED for i in zf.infolist()):
                    return placeholder_class("torch.storage._load_from_bytes")()
        except zipfile.BadZipFile:
            return placeholder_class("torch.storage._load_from_bytes")()
    try:
        scan_torch_bytes(data, budget=_FILE_BUDGET.get())
    except zipfile.BadZipFile:
        return placeholder_class("torch.storage._load_from_bytes")()
    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception:  # noqa: BLE001 - a damaged nested blob is one unreadable value, not a crash
        return placeholder_class("torch.storage._load_from_bytes")()


def _copyreg_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    if isinstance(cls, type) and issubclass(cls, Placeholder):
        return cls(state)
    return placeholder_class("copyreg._reconstructor")(cls, base, state)


class _NumpyRecorder(Placeholder):
    """A numpy object described by the pickle, kept inert until `_Finaliser` validates it."""

    def build(self) -> Any:
        """The real numpy value, or self when the description is not a plain numeric one."""
        return self


class _DtypeRecorder(_NumpyRecorder):
    """numpy.dtype(spec, align, copy) + BUILD state (version, byteorder, subarray, names, fields, ...)."""

    global_name = "numpy.dtype"

    def build(self) -> Any:
        dtype = _plain_dtype(self)
        return self if dtype is None else dtype


class _ScalarRecorder(_NumpyRecorder):
    """numpy.core.multiarray.scalar(dtype, raw bytes)."""

    global_name = "numpy.core.multiarray.scalar"

    def build(self) -> Any:
        args = self.args
        if len(args) != 2 or self.state is not None:
            return self
        dtype, raw = _plain_dtype(args[0]), args[1]
        if dtype is None or not isinstance(raw, (bytes, bytearray)) or len(raw) != dtype.itemsize:
            return self
        return np.frombuffer(bytes(raw), dtype=dtype)[0]


class _NdarrayMarker(Placeholder):
    """What the global numpy.ndarray unpickles to: a name, never the real class."""

    global_name = "numpy.ndarray"


class _ArrayRecorder(_NumpyRecorder):
    """numpy.core.multiarray._reconstruct(ndarray, shape, typecode) + BUILD state
    (version, shape, dtype, is_fortran, raw bytes)."""

    global_name = "numpy.core.multiarray._reconstruct"

    def build(self) -> Any:
        args, state = self.args, self.state
        if len(args) != 3 or args[0] is not _NdarrayMarker or not isinstance(state, tuple):
            return self
        if len(state) == 5:
            state = state[1:]
        if len(state) != 4:
            return self
        shape, dtype, fortran, raw = state
        array = _array_from_raw(raw, dtype, shape, "F" if fortran is True else "C")
        return self if array is None else array


class _FrombufferRecorder(_NumpyRecorder):
    """numpy.core.numeric._frombuffer(buffer, dtype, shape, order) (pickle protocol 5, in band)."""

    global_name = "numpy.core.numeric._frombuffer"

    def build(self) -> Any:
        args = self.args
        if len(args) != 4 or self.state is not None or args[3] not in ("C", "F"):
            return self
        array = _array_from_raw(args[0], args[1], args[2], args[3])
        return self if array is None else array


_DTYPE_SPEC = re.compile(r"[biufc][0-9]{1,2}", re.ASCII)
_MAX_NDIM = 64


def _plain_dtype(obj: Any) -> np.dtype | None:
    """The np.dtype a `_DtypeRecorder` describes, if it is a plain numeric one (else None)."""
    if type(obj) is not _DtypeRecorder or not obj.args or obj.items or obj._fields["list"]:
        return None
    spec = obj.args[0]
    if not isinstance(spec, str) or not _DTYPE_SPEC.fullmatch(spec):
        return None
    try:
        dtype = np.dtype(spec)
    except TypeError:
        return None
    state = obj.state
    if state is not None:  # (version, byteorder, subarray, names, fields, elsize, alignment, flags[, meta])
        if not isinstance(state, tuple) or len(state) not in (8, 9) or any(v is not None for v in state[2:5]):
            return None
        order = state[1]
        if order not in ("<", ">", "|", "="):
            return None
        if order in ("<", ">") and dtype.itemsize > 1:
            dtype = dtype.newbyteorder(order)
    if dtype.kind not in "biufc" or dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        return None
    return dtype


def _array_from_raw(raw: Any, dtype_obj: Any, shape: Any, order: str) -> np.ndarray | None:
    """np.frombuffer(raw, dtype).reshape(shape) when everything is plain and the sizes agree."""
    dtype = _plain_dtype(dtype_obj)
    if dtype is None or not isinstance(raw, (bytes, bytearray)):
        return None
    if not isinstance(shape, tuple) or len(shape) > _MAX_NDIM:
        return None
    if not all(type(n) is int and n >= 0 for n in shape):
        return None
    if len(raw) != math.prod(shape) * dtype.itemsize:
        return None
    return np.frombuffer(bytes(raw), dtype=dtype).reshape(shape, order=order).copy(order="K")


def _numpy_call(recorder: type) -> Callable[..., Any]:
    def record(*args: Any) -> Any:
        return recorder(*args)

    return record


def _restore_type_tag(value: Any, _type_str: str) -> Any:
    return value


def _bytes(*args: Any) -> Any:
    """builtins.bytes: only `bytes()` (protocol 2 writes empty bytes that way); bytes(n) would
    allocate n bytes, so anything else is a placeholder."""
    return b"" if not args else placeholder_class("builtins.bytes")(*args)


def _codecs_encode(text: Any, encoding: str = "utf-8") -> Any:
    if isinstance(text, str) and encoding in ("latin1", "latin-1"):
        return text.encode("latin1")
    return placeholder_class("_codecs.encode")(text, encoding)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("torch", "Size"): tuple,
    ("torch.jit._pickle", "build_intlist"): list,
    ("torch.jit._pickle", "build_doublelist"): list,
    ("torch.jit._pickle", "build_boollist"): list,
    ("torch.jit._pickle", "build_tensorlist"): list,
    ("torch.jit._pickle", "restore_type_tag"): _restore_type_tag,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("__builtin__", "set"): set,
    ("builtins", "bytes"): _bytes,
    ("__builtin__", "bytes"): _bytes,
    ("copyreg", "_reconstructor"): _copyreg_reconstructor,
    ("copy_reg", "_reconstructor"): _copyreg_reconstructor,
    ("_codecs", "encode"): _codecs_encode,
    ("numpy", "ndarray"): _NdarrayMarker,
    ("numpy", "dtype"): _numpy_call(_DtypeRecorder),
    ("numpy.core.multiarray", "scalar"): _numpy_call(_ScalarRecorder),
    ("numpy._core.multiarray", "scalar"): _numpy_call(_ScalarRecorder),
    ("numpy.core.multiarray", "_reconstruct"): _numpy_call(_ArrayRecorder),
    ("numpy._core.multiarray", "_reconstruct"): _numpy_call(_ArrayRecorder),
    ("numpy.core.numeric", "_frombuffer"): _numpy_call(_FrombufferRecorder),
    ("numpy._core.numeric", "_frombuffer"): _numpy_call(_FrombufferRecorder),
}


def _allowed_global(module: str, name: str) -> Any:
    """The inert object for an allow-listed global, or None."""
    if (module, name) in _ALLOWED:
        return _ALLOWED[(module, name)]
    if module in ("torch", "torch.storage", "torch.cuda") and name in _STORAGE_DTYPES:
        return StorageType(_STORAGE_DTYPES[name])
    if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
        return getattr(torch, name)
    return None


def is_dangerous_global(global_name: str) -> bool:
    """True for globals that only make sense in a pickle that wants to run a program, unpickle more
    data, import code or reach files and the network (prefix match on dotted name segments)."""
    if global_name in HARMLESS_GLOBALS:
        return False
    parts = global_name.split(".")
    if any(".".join(parts[:i]) in DANGEROUS_MODULES for i in range(1, len(parts) + 1)):
        return True
    module, _, name = global_name.rpartition(".")
    return module in ("builtins", "__builtin__") and name.split(".", 1)[0] in DANGEROUS_BUILTINS


_Py = pickle._Unpickler  # the pure-Python unpickler: its opcodes can be guarded one by one


def _guarded_build(self: "RestrictedUnpickler") -> None:
    """BUILD: state goes to placeholders only (a real object's __setstate__ is never called)."""
    state = self.stack.pop()
    inst = self.stack[-1]
    if isinstance(inst, Placeholder):
        inst.__setstate__(state)
    else:
        self.ignored_ops += 1


def _target_ok(obj: Any, kinds: tuple[type, ...]) -> bool:
    return isinstance(obj, kinds) or isinstance(obj, Placeholder)


def _guarded_setitem(self: "RestrictedUnpickler") -> None:
    value = self.stack.pop()
    key = self.stack.pop()
    target = self.stack[-1]
    if _target_ok(target, (dict,)):
        target[key] = value
    else:
        self.ignored_ops += 1


def _guarded_setitems(self: "RestrictedUnpickler") -> None:
    items = self.pop_mark()
    target = self.stack[-1]
    if not _target_ok(target, (dict,)):
        self.ignored_ops += 1
        return
    for i in range(0, len(items) - 1, 2):
        target[items[i]] = items[i + 1]


def _guarded_append(self: "RestrictedUnpickler") -> None:
    value = self.stack.pop()
    target = self.stack[-1]
    if _target_ok(target, (list,)):
        target.append(value)
    else:
        self.ignored_ops += 1


def _guarded_appends(self: "RestrictedUnpickler") -> None:
    items = self.pop_mark()
    target = self.stack[-1]
    if _target_ok(target, (list,)):
        target.extend(items)
    else:
        self.ignored_ops += 1


def _guarded_additems(self: "RestrictedUnpickler") -> None:
    items = self.pop_mark()
    target = self.stack[-1]
    if isinstance(target, set):
        target.update(items)
    else:
        self.ignored_ops += 1


def _guarded_bytearray8(self: "RestrictedUnpickler") -> None:
    """BYTEARRAY8: the pure-Python unpickler would allocate (and zero) the claimed size first."""
    (size,) = struct.unpack("<Q", self.read(8))
    data = self.read(size)
    if len(data) != size:
        raise pickle.UnpicklingError("BYTEARRAY8 longer than the pickle data")
    self.append(bytearray(data))


class _BoundedReader:
    """A file wrapper whose reads never ask for more than what is left in the file, so a length
    claimed by the pickle (BINBYTES8, FRAME, ...) cannot make the reader allocate it."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self._size: int | None = None
        if isinstance(file, io.BytesIO):
            with file.getbuffer() as view:
                self._size = view.nbytes
        else:
            try:
                self._size = os.fstat(file.fileno()).st_size
            except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
                self._size = None

    def _bound(self, n: int | None) -> int | None:
        if self._size is None:
            return n
        left = max(self._size - self._file.tell(), 0)
        return left if n is None or n < 0 or n > left else n

    def read(self, n: int | None = -1) -> bytes:
        if n is not None and 0 <= n <= 1 << 16:  # opcodes and short values: nothing to bound
            return self._file.read(n)
        return self._file.read(self._bound(n))

    def readline(self, limit: int = -1) -> bytes:
        return self._file.readline(limit)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


class RestrictedUnpickler(_Py):
    """Unpickler that never executes code from the file (see module docstring).

    persistent_load: called with the persistent id tuple; the checkpoint reader supplies one that
    returns `StorageRef`s (zip and legacy torch formats). `replaced` lists the globals neutralised;
    `ignored_ops` counts state/item assignments aimed at objects that are not placeholders,
    dicts or lists (dropped).
    """

    dispatch = dict(_Py.dispatch)
    dispatch[pickle.BUILD[0]] = _guarded_build
    dispatch[pickle.SETITEM[0]] = _guarded_setitem
    dispatch[pickle.SETITEMS[0]] = _guarded_setitems
    dispatch[pickle.APPEND[0]] = _guarded_append
    dispatch[pickle.APPENDS[0]] = _guarded_appends
    dispatch[pickle.ADDITEMS[0]] = _guarded_additems
    dispatch[pickle.BYTEARRAY8[0]] = _guarded_bytearray8

    def __init__(self, file: IO[bytes], persistent_load: Callable[[Any], Any] | None = None) -> None:
        super().__init__(_BoundedReader(file))
        self._persistent = persistent_load
        self.replaced: list[str] = []
        self.ignored_ops = 0

    def find_class(self, module: str, name: str) -> Any:
        if not isinstance(module, str) or not isinstance(name, str):
            raise pickle.UnpicklingError("global name is not a string")
        allowed = _allowed_global(module, name)
        if allowed is not None:
            return allowed
        global_name = f"{module}.{name}"
        if global_name not in self.replaced:
            self.replaced.append(global_name)
        return placeholder_class(global_name)

    def persistent_load(self, pid: Any) -> Any:
        if self._persistent is None:
            raise pickle.UnpicklingError("persistent id found in a plain pickle")
        return self._persistent(pid)


_FINALISE_DEPTH = 100


class _Finaliser:
    """Replace numpy recorders inside an unpickled object by real numpy values where they are plain
    and valid (see `_NumpyRecorder.build`); `inert` collects the names of those left as placeholders.

    Dicts, lists and placeholders are updated in place, tuples rebuilt; every object is visited
    once (memo by id), so shared and cyclic structures stay cheap. Deeper than _FINALISE_DEPTH,
    recorders simply stay inert placeholders.
    """

    def __init__(self) -> None:
        self.memo: dict[int, Any] = {}
        self.inert: list[str] = []

    def __call__(self, obj: Any, depth: int = 0) -> Any:
        key = id(obj)
        memo = self.memo
        if key in memo:
            return memo[key]
        if isinstance(obj, _NumpyRecorder):
            memo[key] = obj  # in progress: a cycle back to it sees the recorder
            memo[key] = result = obj.build()
            if result is obj:
                if obj.global_name not in self.inert:
                    self.inert.append(obj.global_name)
                self.fields(obj, depth)
            return result
        if depth >= _FINALISE_DEPTH or isinstance(obj, (str, bytes, bytearray, int, float, TensorRef)):
            return obj
        memo[key] = obj
        if isinstance(obj, list):
            for i, value in enumerate(obj):
                new = self(value, depth + 1)
                if new is not value:
                    obj[i] = new
        elif isinstance(obj, dict):
            for k, value in list(obj.items()):
                new = self(value, depth + 1)
                if new is not value:
                    obj[k] = new
        elif type(obj) is tuple:
            new_items = tuple(self(v, depth + 1) for v in obj)
            if any(a is not b for a, b in zip(new_items, obj)):
                memo[key] = new_items
                return new_items
        elif isinstance(obj, Placeholder):
            self.fields(obj, depth)
        return obj

    def fields(self, obj: Placeholder, depth: int) -> None:
        fields = obj._fields
        for name in ("args", "state", "items", "list"):
            fields[name] = self(fields[name], depth + 1)


def storage_ref_from_pid(pid: Any) -> StorageRef:
    """Turn a torch `('storage', type, key, location, numel[, view_metadata])` id into a StorageRef."""
    if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
        raise pickle.UnpicklingError(f"unsupported persistent id {bounded_repr(pid, 60)}")
    storage_type, key, location, numel = pid[1], pid[2], pid[3], pid[4]
    if not isinstance(storage_type, StorageType):
        raise pickle.UnpicklingError(f"unknown storage type {bounded_repr(storage_type, 60)}")
    if not isinstance(key, (str, int)) or type(numel) is not int or numel < 0:
        raise pickle.UnpicklingError("malformed storage id")
    if isinstance(key, int) and not -2**63 <= key < 2**63:
        raise pickle.UnpicklingError("malformed storage id")
    key, location = str(key), (location if isinstance(location, str) else bounded_repr(location))[:40]
    view = pid[5] if len(pid) > 5 else None
    if view is not None:  # legacy view of a root storage: (view_key, offset, size)
        if not isinstance(view, tuple) or len(view) < 3 or type(view[1]) is not int \
                or type(view[2]) is not int or view[1] < 0 or view[2] < 0:
            raise pickle.UnpicklingError("malformed storage view id")
        return StorageRef(key, storage_type.dtype, view[2], location, view[1])
    return StorageRef(key, storage_type.dtype, numel, location)


def restricted_load(file: IO[bytes], persistent_load: Callable[[Any], Any] | None = None, *,
                    max_bytes: int = MAX_PICKLE_BYTES, budget: Budget | None = None
                    ) -> tuple[Any, list[str]]:
    """Unpickle one object from `file` (seekable, at the start of the pickle); return it and the
    list of globals replaced (including numpy values left inert because they were not plain
    numeric data).

    The pickle is pre-scanned first (`pickle_guard.scan_stream`): PickleRefused, before anything is
    unpickled, when it is longer than `max_bytes` or hostile. `budget` is the input file's
    (share one across the pickles of a file: the five of a legacy torch file, say); by default each
    call gets a fresh one."""
    budget = budget if budget is not None else Budget()
    scan_stream(file, max_bytes=max_bytes, budget=budget)
    unpickler = RestrictedUnpickler(file, persistent_load)
    token = _FILE_BUDGET.set(budget)
    try:
        obj = unpickler.load()
    finally:
        _FILE_BUDGET.reset(token)
    finaliser = _Finaliser()
    obj = finaliser(obj)
    # numpy values that could not be rebuilt safely (object/structured dtypes, sizes that do not
    # match) stay placeholders: report them like any other neutralised global
    replaced = unpickler.replaced + [n for n in finaliser.inert if n not in unpickler.replaced]
    return obj, replaced


__all__ = ["MAX_ELEMENTS_PER_STORED", "MAX_FREE_ELEMENTS", "PickleRefused", "Placeholder", "RestrictedUnpickler",
           "StorageRef", "StorageType", "TensorRef", "is_dangerous_global", "placeholder_class",
           "restricted_load", "storage_ref_from_pid", "view_problem"]
