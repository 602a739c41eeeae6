"""Layer 1: what a file is, by its first bytes.

Empty file, Git LFS pointer, text/HTML, zip, legacy torch, plain pickle, safetensors, tar; each
unusable case is a `CheckpointError` with a one-line message and a kind. (Whether a *path* is a
checkpoint at all, by its name, is `report_gen.readers.paths`, which discovery uses without torch.)
"""
from __future__ import annotations

import os
import re

from report_gen.core import ProblemKind
from report_gen.readers.checkpoint.errors import CheckpointError
from report_gen.readers.paths import LEGACY_MAGIC, is_torch_tar
from report_gen.safe_open import NotRegularFile, open_regular


def sniff(path: str) -> str:
    """Classify a file by its first bytes: "zip" | "legacy" | "pickle" | "safetensors".

    Raises CheckpointError for files that cannot be a checkpoint at all.
    """
    try:
        with open_regular(path) as f:  # a FIFO or device named model.pt is refused, never read
            size = os.fstat(f.fileno()).st_size
            head = f.read(1024)
    except NotRegularFile as exc:
        raise CheckpointError(path, ProblemKind.NOT_A_REGULAR_FILE, f"not read: {exc.strerror}") from None
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
    if head.startswith(LEGACY_MAGIC):
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
    kind, message = _describe_non_checkpoint(head, quote=not os.path.islink(path))
    # discovery takes only files named like checkpoints (.bin/.tar only when sniffed as torch files):
    # bytes of no known format under such a name (zeroed, random, overwritten) are damage, not a side file
    raise CheckpointError(path, kind, message, severity="warning")


def _describe_non_checkpoint(head: bytes, quote: bool = True) -> tuple[str, str]:
    """(kind, message) for bytes that are no known checkpoint format."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if not text or any(ord(c) < 32 and c not in "\t\n\r" for c in text):
        zeros = " (all zero bytes)" if not head.strip(b"\0") else ""
        return (ProblemKind.NOT_A_CHECKPOINT,
                f"unknown binary format{zeros}: not a torch zip/legacy file, pickle or safetensors")
    first = text.strip().splitlines()[0][:40] if text.strip() else ""
    what = "an HTML page" if "<html" in text.lower() or "<!doctype" in text.lower() else "a text file"
    start = f" (starts with {first!r})" if quote else ""
    return ProblemKind.TEXT_FILE, f"this is {what}{start}, not a checkpoint"
