"""Which paths are checkpoints, by name (no torch import, so discovery stays cheap).

Two suffixes are too generic to trust by name alone: `.bin` (vocabularies, datasets, any binary
blob) and `.tar` (any archive). For those, the first bytes decide (`sniff_torch_file`): a torch
zip, a legacy torch pickle or a safetensors header for `.bin` (plus `pytorch_model*.bin` /
`adapter_model*.bin` by name, so an un-fetched LFS pointer is still reported), and only a legacy
torch tar checkpoint (members `storages`, `tensors`, `pickle`) for `.tar`.
"""
from __future__ import annotations

import os
import re
import struct

from report_gen.safe_open import open_regular

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".pkl", ".tar")
_INDEX_SUFFIXES = (".safetensors.index.json", ".bin.index.json")
_TRAINING_STATE_FILES = {"optimizer.pt", "optimizer.bin", "scheduler.pt", "scaler.pt",
                         "training_args.bin"}
_SHARD_RE = re.compile(r"-\d{5}-of-\d{5}\.(safetensors|bin)$")
_HF_WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors",
                    "pytorch_model.bin.index.json", "pytorch_model.bin")
_SNIFFED_SUFFIXES = (".bin", ".tar")
_NAMED_BIN_PREFIXES = ("pytorch_model", "adapter_model")

LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."
_TORCH_ZIP_ENTRY = re.compile(rb"[^/\x00]{1,255}/(data\.pkl|data/|constants\.pkl|version|code/|byteorder|"
                              rb"\.format_version|\.data/|\.storage_alignment)")
_TORCH_TAR_MEMBERS = {"storages", "tensors", "pickle"}


def is_torch_tar(path: str) -> bool:
    """True for a legacy (pre-0.4) torch tar checkpoint: its first members include `storages`,
    `tensors` and `pickle`. Reads at most 8 tar headers (512 bytes each) and allocates nothing
    more: member sizes written in the headers are only used to seek."""
    names: set[str] = set()
    try:
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            pos = 0
            for _ in range(8):
                f.seek(pos)
                header = f.read(512)
                if len(header) < 512 or header[257:262] != b"ustar":
                    break
                names.add(header[:100].split(b"\0", 1)[0].decode("latin-1").lstrip("./"))
                digits = header[124:136].split(b"\0", 1)[0].strip()
                member = int(digits, 8) if digits and all(48 <= c <= 55 for c in digits) else 0
                pos += 512 + -(-member // 512) * 512
                if pos >= size:
                    break
    except OSError:
        return False
    return _TORCH_TAR_MEMBERS <= names


def sniff_torch_file(path: str) -> bool:
    """True when the first bytes are those of a torch zip, a legacy torch file, safetensors or a
    legacy torch tar; False for anything else (and for unreadable files, FIFOs and devices, which are
    never opened: `report_gen.safe_open.open_regular`)."""
    try:
        with open_regular(path) as f:
            head = f.read(1024)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return False
    if head.startswith(b"PK\x03\x04") and len(head) >= 30:
        name_len = struct.unpack("<H", head[26:28])[0]
        return bool(_TORCH_ZIP_ENTRY.match(head[30:30 + name_len]))
    if head.startswith(LEGACY_MAGIC):
        return True
    if len(head) >= 10 and head[8:9] == b"{":
        return 0 < struct.unpack("<Q", head[:8])[0] <= size - 8
    if len(head) > 262 and head[257:262] == b"ustar":
        return is_torch_tar(path)
    return False


def is_checkpoint_path(path: str) -> bool:
    """True when the name says "checkpoint": .pt .pth .ckpt .safetensors .pkl files,
    `*.safetensors.index.json` / `*.bin.index.json`, or a folder holding model weights (HF style).
    `.bin` and `.tar` files count only when their first bytes are a torch/safetensors file (or, for
    `.bin`, the name is pytorch_model*.bin / adapter_model*.bin), see `sniff_torch_file`.

    Shards (`model-00001-of-00003.safetensors`) and trainer side files (optimizer.pt, rng_state.pth,
    training_args.bin, ...) are not checkpoints on their own: their index or folder is.
    """
    if os.path.isdir(path):
        return _folder_weights_file(path) is not None
    name = os.path.basename(path)
    lower = name.lower()
    if lower in _TRAINING_STATE_FILES or lower.startswith("rng_state") or _SHARD_RE.search(lower):
        return False
    if lower.endswith(_INDEX_SUFFIXES):
        return True
    if lower.endswith(_SNIFFED_SUFFIXES):
        if lower.endswith(".bin") and lower.startswith(_NAMED_BIN_PREFIXES):
            return True
        return sniff_torch_file(path)
    return lower.endswith(_CHECKPOINT_SUFFIXES)


def _folder_weights_file(folder: str) -> str | None:
    """The weights entry point of a model folder (index first, then single files), or None."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return None
    for wanted in _HF_WEIGHT_FILES:
        if wanted in names:
            return os.path.join(folder, wanted)
    for suffixes in (_INDEX_SUFFIXES, (".safetensors",)):
        for name in names:
            if name.endswith(suffixes) and not _SHARD_RE.search(name):
                return os.path.join(folder, name)
    return None

