"""What the readers of text logs share (HF trainer_state.json, Lightning/Ultralytics CSV, MLflow, W&B).

Reading a file
    `read_text` reads one log file whole, or not at all, and never raises: a file above its cap
    (`MAX_LOG_BYTES` for logs, `MAX_YAML_BYTES` for YAML side files) is a "too-large" Problem, an I/O
    error an "unreadable" one, and a file that resolves (through a symlink) outside the run folder an
    "unsafe-path" one: a reader never reads outside the run folder it was given.

YAML
    `load_yaml` uses PyYAML's SafeLoader, never the full loader. Lightning's hparams.yaml can hold
    `!!python/object:...`, `!!python/name:...` or `!!python/object/apply:...` tags (a pickled loss
    module, an optimizer class): those are never constructed, each becomes the text `<python/...:name>`
    and one "unsafe-yaml-tag" Problem (info) counts them; `!!python/tuple` is read as a list (plain
    data); any other unknown tag (`!custom`) is kept as text too. Aliases are followed by reference
    (PyYAML never copies them) and `flatten_hparams` visits at most `MAX_HPARAM_NODES` nodes, so a
    "billion laughs" file costs nothing.

Hyper-parameters
    `flatten_hparams` turns nested configs into the flat `RunLog.hparams` the run card shows: dotted
    keys (`model.optimizer.lr`), plain values (numbers, strings, bools, None); lists become their text
    (cut at `MAX_HPARAM_TEXT` characters); at most `MAX_HPARAMS` keys.

Series and the step policy
    `SeriesBuilder` collects (tag, step, value, wall time, session) in write order and applies the
    event reader's step policy to each series (`events.merge.apply_step_policy`): a value whose step is
    <= a step already seen and that comes from a later writing session drops every earlier value at a
    step >= its own (the later rows win), with one "step-restart" Problem (info) per file. What a
    "session" is, each reader says (a CSV: rows after its global step went backwards; trainer_state:
    none, the merge of checkpoints already keeps the newest).
"""
from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from report_gen.core import Problem, ProblemKind, clamp_int64
from report_gen.readers.events.merge import Restarts, apply_step_policy
from report_gen.readers.types import RunLog, ScalarSeries, ScalarTable
from report_gen.safe_open import open_regular

MAX_LOG_BYTES = 64 * 1024 * 1024  # one trainer_state.json / metrics.csv / results.csv / MLflow metric file
MAX_YAML_BYTES = 4 * 1024 * 1024  # hparams.yaml, args.yaml, meta.yaml, config.yaml
MAX_HPARAMS = 1000
MAX_HPARAM_NODES = 20000
MAX_HPARAM_TEXT = 300


def run_root(path: str, sub: str) -> str:
    """The run folder of a log file handed over as `(path, sub)`: its folder without the `sub` part."""
    folder = os.path.dirname(os.path.abspath(path))
    for _ in [p for p in sub.split("/") if p]:
        folder = os.path.dirname(folder)
    return folder


def inside(path: str, root: str) -> bool:
    """True when `path`, with every symlink resolved, is `root` or below it (resolved too)."""
    real, base = os.path.realpath(path), os.path.realpath(root)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def read_text(path: str, problems: list[Problem], *, root: str | None = None, cap: int | None = None,
              what: str = "log file") -> str | None:
    """The text of `path` (UTF-8, undecodable bytes replaced), or None with a Problem. Never raises.

    cap: the size limit in bytes (default `MAX_LOG_BYTES`, looked up at call time)."""
    cap = MAX_LOG_BYTES if cap is None else cap
    if root is not None and not inside(path, root):
        problems.append(Problem(path, ProblemKind.UNSAFE_PATH,
                                f"{path}: this {what} points outside the run folder ({os.path.realpath(path)}); not read"))
        return None
    try:
        with open_regular(path) as f:  # never a FIFO or device (report_gen.safe_open)
            size = os.fstat(f.fileno()).st_size
            if size > cap:
                problems.append(Problem(path, ProblemKind.TOO_LARGE,
                                        f"{path}: this {what} is {size} bytes, above the {cap}-byte cap; not read"))
                return None
            raw = f.read(cap + 1)
    except OSError as e:
        problems.append(Problem(path, ProblemKind.UNREADABLE, f"{path}: the {what} could not be read: {e.strerror or e}"))
        return None
    return raw.decode("utf-8", errors="replace")


# ---- YAML --------------------------------------------------------------------------------------------

def _loader_class():
    import yaml

    class NeutralLoader(yaml.SafeLoader):
        """SafeLoader that keeps unknown and python/ tags as text instead of refusing the whole file."""

        neutralised: list[str]

    def neutral(loader, tag_suffix, node=None):
        if node is None:  # the catch-all constructor is called as (loader, node)
            node, tag_suffix = tag_suffix, ""
        loader.neutralised.append(node.tag)
        name = node.tag.replace("tag:yaml.org,2002:", "")
        return f"<{name}>"

    def python_tuple(loader, node):
        return loader.construct_sequence(node)

    NeutralLoader.add_constructor("tag:yaml.org,2002:python/tuple", python_tuple)
    NeutralLoader.add_multi_constructor("tag:yaml.org,2002:python/", neutral)
    NeutralLoader.add_multi_constructor("!", neutral)
    NeutralLoader.add_constructor(None, neutral)
    return NeutralLoader


_LOADER = None


def load_yaml(path: str, problems: list[Problem], *, root: str | None = None) -> Any:
    """The document of a YAML side file (safe loader, python/ tags neutralised), or None. Never raises."""
    global _LOADER
    text = read_text(path, problems, root=root, cap=max(1, MAX_YAML_BYTES), what="YAML file")
    if text is None:
        return None
    import yaml

    if _LOADER is None:
        _LOADER = _loader_class()
    loader = _LOADER(text)
    loader.neutralised = []
    try:
        doc = loader.get_single_data()
    except (yaml.YAMLError, ValueError, TypeError, RecursionError) as e:
        where = getattr(e, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        problems.append(Problem(path, ProblemKind.BAD_YAML, f"{path}: not valid YAML{line}: "
                                f"{str(e).splitlines()[0] if str(e) else type(e).__name__}",
                                offset=getattr(where, "index", None)))
        return None
    finally:
        loader.dispose()
    if loader.neutralised:
        tags = sorted(set(loader.neutralised))
        problems.append(Problem(path, ProblemKind.UNSAFE_YAML_TAG,
                                f"{path}: {len(loader.neutralised)} value(s) with code tags ({', '.join(tags[:3])}"
                                f"{' ...' if len(tags) > 3 else ''}) kept as text, never constructed",
                                count=len(loader.neutralised)))
    return doc


# ---- hyper-parameters ---------------------------------------------------------------------------------

def plain_value(value: Any) -> Any:
    """A run-card value: numbers, strings, bools and None as they are, anything else as capped text."""
    if value is None or isinstance(value, (bool, int, str)):
        return value if not isinstance(value, str) else value[:MAX_HPARAM_TEXT]
    if isinstance(value, float):
        return value
    if isinstance(value, np.generic):
        return plain_value(value.item())
    return str(value)[:MAX_HPARAM_TEXT]


def flatten_hparams(obj: Any, prefix: str = "", into: dict[str, Any] | None = None) -> dict[str, Any]:
    """Nested mappings -> one flat dict with dotted keys and plain values (see the module docstring)."""
    out: dict[str, Any] = {} if into is None else into
    budget = [MAX_HPARAM_NODES]

    def walk(value: Any, key: str) -> None:
        budget[0] -= 1
        if budget[0] < 0 or len(out) >= MAX_HPARAMS:
            return
        if isinstance(value, dict):
            if not value and key:
                out.setdefault(key, "{}")
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif key:
            out.setdefault(key, plain_value(value) if not isinstance(value, (list, tuple)) else _list_text(value))

    walk(obj, prefix)
    return out


def _list_text(value: Any) -> str:
    parts, size = [], 0
    for item in value:
        text = repr(item) if not isinstance(item, (dict, list, tuple)) else type(item).__name__
        parts.append(text)
        size += len(text) + 2
        if size > MAX_HPARAM_TEXT:
            break
    return ("[" + ", ".join(parts) + "]")[:MAX_HPARAM_TEXT]


def to_float(text: Any) -> float | None:
    """A logged value as a float: numbers, and the texts nan / inf / -inf / NaN / Infinity; else None."""
    if isinstance(text, bool):
        return float(text)
    if isinstance(text, int):  # float() of a 5,000-digit int raises OverflowError
        return float(text) if -(2**1023) < text < 2**1023 else (math.inf if text > 0 else -math.inf)
    if isinstance(text, float):
        return text
    if not isinstance(text, str):
        return None
    t = text.strip()
    if not t:
        return None
    try:
        return float(t)
    except ValueError:
        low = t.lower()
        if low in {"nan", "+nan", "-nan"}:
            return math.nan
        if low in {"infinity", "+infinity"}:
            return math.inf
        if low == "-infinity":
            return -math.inf
        return None


# ---- series -------------------------------------------------------------------------------------------

class SeriesBuilder:
    """Scalar values of one log, in write order, to one RunLog scalar frame under the step policy."""

    def __init__(self, sub: str = "") -> None:
        self.sub = sub
        self.values: dict[str, tuple[list, list, list, list, list]] = {}

    def add(self, tag: str, step: int, value: float, wall_time: float = math.nan, session: int = 0,
            file: str = "") -> None:
        cols = self.values.setdefault(tag, ([], [], [], [], []))
        cols[0].append(clamp_int64(int(step)))  # a step of 10**5000 or 1e308 in a file: bounded, not a crash
        cols[1].append(float(value))
        cols[2].append(float(wall_time))
        cols[3].append(int(session))
        cols[4].append(file)

    def __len__(self) -> int:
        return sum(len(c[0]) for c in self.values.values())

    def scalar_series(self, restarts: Restarts | None = None) -> list[ScalarSeries]:
        """The values kept by the step policy, ordered by step per tag; restarts recorded in `restarts`."""
        parts = []
        for tag, (steps, values, walls, sessions, files) in self.values.items():
            st = np.asarray(steps, dtype=np.int64)
            kept, found = apply_step_policy(st, np.asarray(sessions, dtype=np.int64), None)
            if restarts is not None:
                for i, dropped in found:
                    restarts.add(files[i], tag, int(st[i]), dropped)
            parts.append(ScalarSeries(self.sub, tag, st[kept], np.asarray(walls, dtype=np.float64)[kept],
                                      np.asarray(values, dtype=np.float64)[kept]))
        return parts


def run_log(parts: list[list[ScalarSeries] | None], problems: list[Problem], files: list[str],
            hparams: dict[str, Any] | None = None) -> RunLog:
    """One RunLog from a text reader's scalar series (one list per reader part), problems, files and hparams."""
    log = RunLog.empty()
    log.table = ScalarTable(one for part in parts if part for one in part)
    log.problems.extend(problems)
    log.files.extend(files)
    log.hparams.update(hparams or {})
    return log
