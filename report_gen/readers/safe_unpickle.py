"""A restricted unpickler that reads checkpoint pickles without executing anything from them.

`torch.load(weights_only=True)` refuses a whole file as soon as it meets one global it does not know
(an `argparse.Namespace` in Lightning's hyper-parameters, a pickled `nn.Module` subclass, ...). This
unpickler never refuses and never runs code from the file:

* tensors are not built: `torch._utils._rebuild_tensor_v2` and friends return a `TensorRef`
  (storage key, dtype, offset, shape, stride) that the checkpoint reader materialises later, one
  tensor at a time, by reading only that storage's bytes;
* a short allow-list of inert constructors (OrderedDict, set, torch dtypes, numpy scalars/arrays of
  non-object dtype) is honoured;
* every other global becomes a `Placeholder` subclass that records its name, accepts any
  arguments, state, items and appends, and never calls anything. A pickled module of an unknown
  class therefore still exposes its `_parameters` / `_buffers` / `_modules` through `state`.

The global names replaced are collected in `RestrictedUnpickler.replaced` so callers can report them.
"""
from __future__ import annotations

import collections
import pickle
from dataclasses import dataclass
from typing import IO, Any, Callable

import numpy as np
import torch

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

#: Modules whose globals mean "this pickle tries to run a program", not "harmless metadata".
DANGEROUS_MODULES = frozenset({"os", "posix", "nt", "io", "subprocess", "sys", "shutil", "socket",
                               "runpy", "importlib", "pty", "webbrowser", "ctypes", "code"})
DANGEROUS_BUILTINS = frozenset({"eval", "exec", "compile", "open", "__import__", "getattr",
                                "setattr", "delattr", "globals", "locals", "vars", "input",
                                "breakpoint", "apply"})


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


def _rebuild_tensor(storage: Any, storage_offset: int, size: tuple, stride: tuple,
                    *_ignored: Any) -> Any:
    if isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        # a real storage from _load_from_bytes (plain pickle of a tensor): build it in memory
        return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, False,
                                               collections.OrderedDict())
    if not isinstance(storage, StorageRef):
        return placeholder_class("torch._utils._rebuild_tensor_v2")(storage)
    return TensorRef(storage, int(storage_offset), tuple(int(s) for s in size),
                     tuple(int(s) for s in stride))


def _rebuild_parameter(data: Any, *_ignored: Any) -> Any:
    if isinstance(data, TensorRef):
        return TensorRef(data.storage, data.offset, data.shape, data.stride, is_param=True)
    return data


def _rebuild_from_type(func: Any, _new_type: Any, args: tuple, _state: Any) -> Any:
    """torch._tensor._rebuild_from_type_v2: only ever forwards to an allow-listed rebuild."""
    if func in (_rebuild_tensor, _rebuild_parameter):
        return func(*args)
    return placeholder_class("torch._tensor._rebuild_from_type_v2")(func, args)


def _load_from_bytes(data: bytes) -> Any:
    """torch.storage._load_from_bytes (plain `pickle` of a tensor): a nested torch.save blob."""
    import io

    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def _copyreg_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    if isinstance(cls, type) and issubclass(cls, Placeholder):
        return cls(state)
    return placeholder_class("copyreg._reconstructor")(cls, base, state)


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    if isinstance(dtype, np.dtype) and not dtype.hasobject and isinstance(data, bytes):
        return np.frombuffer(data, dtype=dtype)[0]
    return placeholder_class("numpy.core.multiarray.scalar")(dtype, data)


def _numpy_dtype(spec: Any, *_flags: Any) -> Any:
    if isinstance(spec, str) and not spec.startswith("O"):
        return np.dtype(spec)
    return placeholder_class("numpy.dtype")(spec)


def _numpy_reconstruct(cls: Any, shape: Any, typecode: Any) -> Any:
    if cls is np.ndarray:
        return np.ndarray.__new__(np.ndarray, shape, typecode)
    return placeholder_class("numpy.core.multiarray._reconstruct")(cls, shape, typecode)


def _restore_type_tag(value: Any, _type_str: str) -> Any:
    return value


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
    ("copyreg", "_reconstructor"): _copyreg_reconstructor,
    ("copy_reg", "_reconstructor"): _copyreg_reconstructor,
    ("_codecs", "encode"): _codecs_encode,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
}


def _allowed_global(module: str, name: str) -> Any:
    """The inert object for an allow-listed global, or None."""
    if (module, name) in _ALLOWED:
        return _ALLOWED[(module, name)]
    if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
        return StorageType(_STORAGE_DTYPES[name])
    if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
        return getattr(torch, name)
    return None


def is_dangerous_global(global_name: str) -> bool:
    """True for globals that only make sense in a pickle that wants to run a program."""
    module, _, name = global_name.rpartition(".")
    root = module.split(".", 1)[0]
    if root in DANGEROUS_MODULES:
        return True
    return root in ("builtins", "__builtin__") and name in DANGEROUS_BUILTINS


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that never executes code from the file (see module docstring).

    persistent_load: called with the persistent id tuple; the checkpoint reader supplies one that
    returns `StorageRef`s (zip and legacy torch formats). `replaced` lists the globals neutralised.
    """

    def __init__(self, file: IO[bytes], persistent_load: Callable[[Any], Any] | None = None) -> None:
        super().__init__(file)
        self._persistent = persistent_load
        self.replaced: list[str] = []

    def find_class(self, module: str, name: str) -> Any:
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


def storage_ref_from_pid(pid: Any) -> StorageRef:
    """Turn a torch `('storage', type, key, location, numel[, view_metadata])` id into a StorageRef."""
    if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
        raise pickle.UnpicklingError(f"unsupported persistent id {str(pid)[:60]}")
    storage_type, key, location, numel = pid[1], str(pid[2]), str(pid[3]), int(pid[4])
    if not isinstance(storage_type, StorageType):
        raise pickle.UnpicklingError(f"unknown storage type {storage_type!r}")
    view = pid[5] if len(pid) > 5 else None
    if view is not None:  # legacy view of a root storage: (view_key, offset, size)
        return StorageRef(key, storage_type.dtype, int(view[2]), location, int(view[1]))
    return StorageRef(key, storage_type.dtype, numel, location)


def restricted_load(file: IO[bytes], persistent_load: Callable[[Any], Any] | None = None
                    ) -> tuple[Any, list[str]]:
    """Unpickle one object from `file`; return it and the list of globals replaced."""
    unpickler = RestrictedUnpickler(file, persistent_load)
    obj = unpickler.load()
    return obj, unpickler.replaced


__all__ = ["Placeholder", "RestrictedUnpickler", "StorageRef", "StorageType", "TensorRef",
           "is_dangerous_global", "placeholder_class", "restricted_load", "storage_ref_from_pid"]
