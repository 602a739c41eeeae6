"""Which paths are checkpoints, by name alone (no torch import, so discovery stays cheap)."""
from __future__ import annotations

import os
import re

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".pkl", ".tar")
_INDEX_SUFFIXES = (".safetensors.index.json", ".bin.index.json")
_TRAINING_STATE_FILES = {"optimizer.pt", "optimizer.bin", "scheduler.pt", "scaler.pt",
                         "training_args.bin"}
_SHARD_RE = re.compile(r"-\d{5}-of-\d{5}\.(safetensors|bin)$")
_HF_WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors",
                    "pytorch_model.bin.index.json", "pytorch_model.bin")


def is_checkpoint_path(path: str) -> bool:
    """True when the name says "checkpoint": .pt .pth .ckpt .bin .safetensors .pkl .tar files,
    `*.safetensors.index.json` / `*.bin.index.json`, or a folder holding model weights (HF style).

    Shards (`model-00001-of-00003.safetensors`) and trainer side files (optimizer.pt, rng_state.pth,
    training_args.bin, ...) are not checkpoints on their own: their index or folder is.
    """
    if os.path.isdir(path):
        return _folder_weights_file(path) is not None
    name = os.path.basename(path)
    lower = name.lower()
    if lower in _TRAINING_STATE_FILES or lower.startswith("rng_state") or _SHARD_RE.search(lower):
        return False
    return lower.endswith(_INDEX_SUFFIXES) or lower.endswith(_CHECKPOINT_SUFFIXES)


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

