"""The entry points: one checkpoint (`open_checkpoint`) and a series in training order."""
from __future__ import annotations

import os

from report_gen.core import ProblemKind
from report_gen.readers.checkpoint.errors import CheckpointError, one_line
from report_gen.readers.checkpoint.hf import open_folder, open_index, open_single_file
from report_gen.readers.checkpoint.tree import load_policy
from report_gen.readers.types import CheckpointData


def open_checkpoint(path: str, *, trust_pickles: bool = False) -> CheckpointData:
    """Open one checkpoint (file, shard index or model folder) lazily.

    Raises CheckpointError (an InputError) with a one-line message when nothing usable can be read,
    and never any other exception: an unexpected failure becomes kind "unreadable".
    """
    policy = load_policy(trust_pickles)
    try:
        if os.path.isdir(path):
            return open_folder(path, policy)
        if not os.path.exists(path):
            raise CheckpointError(path, ProblemKind.MISSING, "no such file")
        if path.endswith(".json"):
            return open_index(path, policy)
        return open_single_file(path, policy)
    except CheckpointError:
        raise
    except RecursionError:
        raise CheckpointError(path, ProblemKind.UNREADABLE, "could not be read (structure nested too deeply)") from None
    except OSError as exc:
        raise CheckpointError(path, ProblemKind.UNREADABLE,
                              f"cannot read file ({exc.strerror or one_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - one damaged file must never end the report
        raise CheckpointError(path, ProblemKind.UNREADABLE, f"could not be read ({type(exc).__name__}: "
                                                            f"{one_line(exc)})") from None


def order_series(ckpts: list[CheckpointData]) -> list[CheckpointData]:
    """Checkpoints in training order: by step (from content, else file name), then mtime, then path.
    Checkpoints without any step come after the others, in mtime order."""
    return sorted(ckpts, key=lambda c: (c.step is None, c.step or 0, c.mtime, c.path))
