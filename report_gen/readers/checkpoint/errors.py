"""Layer 0: the one exception of the checkpoint reader, and one-line messages.

`open_checkpoint` raises only `CheckpointError`, and `CheckpointData.load` only CheckpointError.
"""
from __future__ import annotations

import re

from report_gen.core import InputError, ProblemKind


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
    The message is one line (control characters are replaced). `severity`, when given, overrides the
    kind's default (bytes of no known format under a torch checkpoint's name are "not-a-checkpoint"
    but a warning: that file was meant to be a checkpoint)."""

    def __init__(self, path: str, kind: ProblemKind, problem: str, severity: str | None = None) -> None:
        path, problem = clean(str(path), 4096), clean(str(problem))
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = path, problem
        self.kind = ProblemKind(kind)
        self.severity = severity


class SavedTensor(CheckpointError):
    """A "no-weights" file that holds a bare tensor (or a list/tuple of tensors): data saved beside the
    checkpoints (a probe batch, embeddings), not a damaged checkpoint. `read_checkpoints` reports it
    only when the run has no usable checkpoint at all (it then explains why none was read)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(path, ProblemKind.NO_WEIGHTS, problem)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def clean(text: str, limit: int = 400) -> str:
    """One line without control characters (file content and names end up in messages)."""
    text = _CONTROL.sub(" ", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return clean(text[0] if text and text[0].strip() else type(exc).__name__, 160)
