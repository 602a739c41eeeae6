"""safetensors files, shard indexes (`*.index.json`) and Hugging Face model folders.

safetensors are read through ONE `safe_open` handle per file (its header parsed once, whatever the
number of tensors), one tensor at a time, each tensor's mapped pages released after it is copied;
shard paths must stay inside the index's folder. Indexes, config.json and trainer_state.json are
read through `report_gen.safe_open.read_regular` (regular files only, bounded sizes); a shard or
weights file that is not a regular file is "not-a-regular-file", never opened. `open_single_file`
is the per-file dispatch (safetensors, or a torch file through the load policy) that shards and
folders share.
"""
from __future__ import annotations

import json
import os
import struct
from typing import Any, Mapping

import torch

from report_gen.core import Problem, ProblemKind
from report_gen.readers.checkpoint.errors import CheckpointError, one_line
from report_gen.readers.checkpoint.hfarch import in_model_order, is_hf_config, meta_model
from report_gen.readers.checkpoint.interpret import (checkpoint_from_tree, finish, role_by_name,
                                                     step_from_metadata, strip_prefixes)
from report_gen.readers.checkpoint.optimizer import safe_optimizer_facts, safe_optimizer_groups
from report_gen.readers.checkpoint.order import hf_trainer_order
from report_gen.readers.checkpoint.sniff import sniff
from report_gen.readers.checkpoint.tree import LoadPolicy, as_mapping, mapped_materialiser, unchanged_guard
from report_gen.readers.paths import _folder_weights_file
from report_gen.readers.types import CheckpointData, TensorInfo
from report_gen.safe_open import NotRegularFile, open_regular, read_regular, regular_file_problem

#: safetensors' own limit on its JSON header (safetensors/src/tensor.rs MAX_HEADER_SIZE)
MAX_SAFETENSORS_HEADER = 100_000_000
#: a shard index lists one line per tensor (~100 bytes): 16 MiB is 160,000 tensors; a 405 B-parameter
#: Llama's index is 90 KB
MAX_INDEX_BYTES = 16 << 20
#: config.json is a few KB; trainer_state.json grows with log_history (~200 bytes per logged step)
MAX_SIDE_FILE_BYTES = 64 << 20


_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
                       "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
                       "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


def _check_safetensors_header(path: str) -> None:
    """The 8-byte header length of a safetensors file fits in the file and in safetensors' limit
    (checked before the library maps the file and parses the header)."""
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
    (length,) = struct.unpack("<Q", head) if len(head) == 8 else (None,)
    if length is None or length > size - 8:
        raise CheckpointError(path, ProblemKind.TRUNCATED, f"safetensors header claims {length or 0:,} bytes, "
                                                           f"the file has {size:,}")
    if length > MAX_SAFETENSORS_HEADER:
        raise CheckpointError(path, ProblemKind.CORRUPT, f"safetensors header of {length:,} bytes, more than "
                                                         f"the format allows ({MAX_SAFETENSORS_HEADER:,})")


def _open_safetensors(path: str) -> CheckpointData:
    from safetensors import SafetensorError, safe_open

    _check_safetensors_header(path)
    unchanged = unchanged_guard(path)
    try:
        # one handle for the file's life: safe_open parses the whole header, so a handle per tensor
        # made reading N tensors O(N^2) (10,000 tensors: minutes); the handle holds no descriptor,
        # only a mapping whose pages are released after each tensor (mapped_materialiser)
        handle = safe_open(path, framework="pt")
        meta = dict(handle.metadata() or {})
        tensors = {}
        for name in handle.keys():
            piece = handle.get_slice(name)
            dtype = _SAFETENSORS_DTYPES.get(piece.get_dtype(), piece.get_dtype().lower())
            role = role_by_name(name, dtype.startswith(("float", "bfloat", "complex")))
            tensors[name] = TensorInfo(name, tuple(piece.get_shape()), dtype, role)
    except SafetensorError as exc:
        kind = (ProblemKind.TRUNCATED if "incomplete" in str(exc).lower() or "length" in str(exc)
                else ProblemKind.CORRUPT)
        raise CheckpointError(path, kind, f"unreadable safetensors file ({one_line(exc)})") from None

    def load(name: str) -> torch.Tensor:
        unchanged()  # a mapping of a file truncated since would SIGBUS
        return mapped_materialiser(handle.get_tensor(name))

    renamed = strip_prefixes(tensors)
    tensors = {renamed[n]: TensorInfo(renamed[n], t.shape, t.dtype, t.role) for n, t in tensors.items()}
    original = {v: k for k, v in renamed.items()}
    return finish(path, "safetensors", tensors, lambda n: load(original[n]),
                  step_from_metadata(meta), meta, None, [])


def open_single_file(path: str, policy: LoadPolicy, optimizer: bool = True) -> CheckpointData:
    if sniff(path) == "safetensors":
        return _open_safetensors(path)
    return checkpoint_from_tree(path, policy.load_tree(path), optimizer=optimizer)


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


def open_index(path: str, policy: LoadPolicy, optimizer: bool = True) -> CheckpointData:
    """A sharded checkpoint: `*.safetensors.index.json` / `pytorch_model.bin.index.json`."""
    try:
        index = json.loads(read_regular(path, MAX_INDEX_BYTES))
        weight_map = dict(index["weight_map"])
    except NotRegularFile as exc:
        raise CheckpointError(path, ProblemKind.NOT_A_REGULAR_FILE, f"not read: {exc.strerror}") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise CheckpointError(path, ProblemKind.NOT_A_CHECKPOINT, f"not a shard index ({one_line(exc)})") from None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise CheckpointError(path, ProblemKind.NOT_A_CHECKPOINT, "not a shard index (weight_map must map names "
                                                                  "to file names)")
    folder = os.path.dirname(path)
    paths = {shard: _shard_path(path, folder, shard) for shard in dict.fromkeys(weight_map.values())}
    shards = {}
    for shard, shard_path in paths.items():
        if not os.path.exists(shard_path):
            raise CheckpointError(path, ProblemKind.MISSING_SHARD, f"shard {shard!r} listed in the index is missing")
        problem = regular_file_problem(shard_path)
        if problem is not None:
            raise CheckpointError(path, ProblemKind.NOT_A_REGULAR_FILE, f"shard {shard!r} listed in the index is "
                                                                        f"{problem}; not read")
        shards[shard] = open_single_file(shard_path, policy, optimizer)
    tensors, owner, problems = {}, {}, []
    for shard in shards.values():
        tensors.update(shard.tensors)
        owner.update({name: shard for name in shard.tensors})
        problems.extend(shard.problems)
    fmt = f"{next(iter(shards.values())).format}-sharded" if shards else "sharded"
    metadata = index.get("metadata")
    meta = {str(k): v for k, v in metadata.items()} if isinstance(metadata, dict) else {}
    return finish(path, fmt, tensors, lambda name: owner[name].load(name),
                  step_from_metadata(meta), meta, None, problems)


def _read_json(path: str, problems: list[Problem]) -> dict[str, Any]:
    """A model folder's side file as a dict ({} when absent or not a JSON object); one that is not
    a regular file is a "not-a-regular-file" Problem, never opened."""
    try:
        value = json.loads(read_regular(path, MAX_SIDE_FILE_BYTES))
        return value if isinstance(value, dict) else {}
    except NotRegularFile as exc:
        problems.append(Problem(file=path, kind=ProblemKind.NOT_A_REGULAR_FILE, message=f"{path}: not read: "
                                                                                        f"{exc.strerror}"))
        return {}
    except (OSError, ValueError, RecursionError):
        return {}


def open_folder(folder: str, policy: LoadPolicy, optimizer: bool = True) -> CheckpointData:
    """A Hugging Face style folder: config.json + weights, maybe trainer_state.json/optimizer.pt."""
    weights = _folder_weights_file(folder)
    if weights is None:
        raise CheckpointError(folder, ProblemKind.NO_WEIGHTS, "folder has no model weights (looked for "
                                                              "model.safetensors, pytorch_model.bin, *.index.json)")
    inner = (open_index(weights, policy, optimizer) if weights.endswith(".json")
             else open_single_file(weights, policy, optimizer))
    config = _read_json(os.path.join(folder, "config.json"), inner.problems)
    meta = {k: v for k, v in config.items() if isinstance(v, (str, int, float, bool)) or k == "architectures"}
    trainer = _read_json(os.path.join(folder, "trainer_state.json"), inner.problems)
    meta.update({k: trainer[k] for k in ("global_step", "epoch") if k in trainer})
    ordered = inner.format in ("torch-zip", "torch-legacy")
    tensors, model = inner.tensors, None
    if not ordered and is_hf_config(config):
        model, why = meta_model(config)
        order = in_model_order(list(tensors), model) if model is not None else None
        if order is not None:  # safetensors sort names: the architecture gives the model's order back
            tensors, ordered = {n: tensors[n] for n in order}, True
            meta["tensor_order"] = "architecture"
        else:
            meta["tensor_order"] = "sorted by name (" + (why or "the names differ from the architecture's") + ")"
    facts = _folder_optimizer(folder, tensors, policy, inner.problems, ordered, config, model, optimizer)
    return finish(folder, f"hf-folder/{inner.format}", tensors, inner.load,
                  step_from_metadata(meta), meta, facts, inner.problems)


def _folder_optimizer(folder: str, tensors: Mapping[str, TensorInfo], policy: LoadPolicy,
                      problems: list[Problem], ordered: bool, config: Mapping[str, Any],
                      model: Any = None, full: bool = True) -> dict[str, Any] | None:
    """Optimizer facts from a Trainer folder's optimizer.pt. ordered: `tensors` are in the model's
    parameter order (a single torch file, or put back in order from the architecture); safetensors and
    shard indexes are sorted by name, so the Trainer's order is recovered (order.hf_trainer_order;
    `model`: the architecture on the meta device, when it could be built). full=False: the param groups
    only (`optimizer_groups`, no tensor data read)."""
    path = os.path.join(folder, "optimizer.pt")
    if not os.path.exists(path):
        return None
    try:
        tree = policy.load_tree(path)
    except CheckpointError as exc:
        problems.append(Problem(file=path, kind=exc.kind, message=str(exc), severity="warning"))
        return None
    problems.extend(tree.problems)
    state = as_mapping(tree.root)
    if state is None or "state" not in state:
        return None
    if not full:
        return safe_optimizer_groups(path, state, problems)
    recover = None
    if is_hf_config(config) and "param_groups" in state:
        params = [n for n, t in tensors.items() if t.role == "param"]
        recover = hf_trainer_order(params, {n: tuple(tensors[n].shape) for n in params},
                                   {n for n, t in tensors.items() if t.role != "param"}, model)
    return safe_optimizer_facts(path, state, tensors, tree.checked_materialiser(path), problems,
                                ordered=ordered, recover=recover)
