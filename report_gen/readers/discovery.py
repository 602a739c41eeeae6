"""Run discovery: turn the PATH arguments into runs (log files + checkpoints per run).

Policy
------
* A *log file* is a file a registered log reader recognises (`registry.is_log_file`), e.g. a
  TensorBoard event file (any name containing ``tfevents``).
* A *run folder* is a folder that directly holds log files.
* A run folder nested inside another run folder belongs to the outer run as a *sub* folder: that is
  what torch's ``add_scalars`` writes (``run/activation_stats_conv1_mean/events...``).
* Keras/TF2 writes ``logs/train/`` and ``logs/validation/`` with no event file in ``logs``: sibling run
  folders named like phases (train, validation, val, eval, test...) holding only event files are
  grouped into one run named after their parent, each phase kept as a sub folder (a ``train/`` folder
  of other logs, e.g. Ultralytics' ``runs/detect/train/results.csv``, is a run of its own).
* An HF Trainer ``output_dir``: sibling ``checkpoint-N/`` (or ``last-checkpoint/``) folders holding
  log files (``trainer_state.json``) make their parent a run folder, so all checkpoints of one
  ``output_dir`` and its ``runs/<date>/`` event files are one run named after the ``output_dir``
  (never above the folder given).
* Checkpoints are attached to the nearest run folder above them, or, when the run has log files
  elsewhere, to the run whose folder contains them. Checkpoints with no log-file run become a
  checkpoint-only run named after their folder.
* A log file holding several runs (an MLflow SQLite store, see ``LogReader.members``) is one run per
  member: named ``<folder>/<file stem>/<run name>`` (``<file stem>/<run name>`` when given directly),
  with only that file, ``member`` set, and no checkpoints; a store with no runs makes none. It takes
  no part in the run-folder policy above (its folder is a run folder only through its other logs).
* An MLflow file store needs no rule here: its reader's log file is the run's ``meta.yaml``, so
  ``mlruns/<experiment>/<run_id>/`` is the run folder (metrics/params/tags and artifacts below it).
* A single log file or checkpoint given directly is a run of its own.
* Folders are walked iteratively (`walk_folders`), never following symlinked folders, at most
  `MAX_DEPTH` levels below the folder given (deeper folders are skipped with a warning): a
  hostile tree 1,100 levels deep costs a warning, not the report. Discovery never opens a file
  that is not regular (the names it sniffs go through `report_gen.safe_open`); a log or checkpoint
  that is not a regular file is kept as its run's file and reported when read
  ("not-a-regular-file", by `registry.read_logs` and the checkpoint reader), never opened.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from report_gen.core import InputError
from report_gen.readers.events import is_event_file_name
from report_gen.readers.paths import is_checkpoint_path
from report_gen.readers.registry import is_log_file, reader_for
from report_gen.safe_open import regular_file_problem

# a folder is ONE checkpoint (HF model folder, sharded weights) only when it says so by these names;
# a folder of several step-N.safetensors files is a series of checkpoints
_MODEL_FOLDER_MARKERS = ("config.json", "model.safetensors", "model.safetensors.index.json",
                         "pytorch_model.bin", "pytorch_model.bin.index.json")
HF_CHECKPOINT_DIR = re.compile(r"checkpoint-\d+|last-checkpoint")
PHASE_NAMES = {"train", "training", "validation", "valid", "val", "eval", "evaluation", "test"}
_SKIP_DIRS = {".git", "__pycache__", "node_modules", ".ipynb_checkpoints"}
#: folder levels walked below a folder given on the command line. Real layouts are < 12 deep
#: (runs/<exp>/version_0/checkpoints/, an HF cache's models--x/snapshots/<rev>/); the cap only
#: bounds a hostile tree (each level is a scandir and a Path; os.walk recursed, and died at ~1,000)
MAX_DEPTH = 256

log = logging.getLogger("report_gen")


@dataclass
class RunSpec:
    name: str
    path: str
    event_files: list[tuple[str, str]] = field(default_factory=list)  # (file, sub) of every log file
    checkpoints: list[str] = field(default_factory=list)
    member: str | None = None  # the run inside a multi-run log file (an MLflow SQLite store), else None


def walk_folders(root: str | Path, max_depth: int = MAX_DEPTH) -> Iterator[tuple[str, list[str], list[str]]]:
    """`os.walk(root, followlinks=False)` without recursion, and no deeper than `max_depth` levels:
    the same (dirpath, dirnames, filenames) top-down, in the same order; dirnames may be pruned in
    place. Unreadable folders are skipped (as os.walk does); folders past the cap are skipped with
    one warning."""
    stack = [(os.fspath(root), 0)]
    warned = False
    while stack:
        top, depth = stack.pop()
        dirnames, filenames, real_dirs = [], [], set()
        try:
            with os.scandir(top) as entries:
                for entry in entries:
                    try:
                        is_dir = entry.is_dir()
                    except OSError:
                        is_dir = False
                    (dirnames if is_dir else filenames).append(entry.name)
                    if is_dir and not entry.is_symlink():
                        real_dirs.add(entry.name)
        except OSError:
            continue
        yield top, dirnames, filenames
        below = [n for n in dirnames if n in real_dirs]
        if below and depth >= max_depth:
            if not warned:
                log.warning("%s: folders more than %d levels deep were not searched (first: %s)",
                            os.fspath(root), max_depth, os.path.join(top, below[0]))
                warned = True
            continue
        stack.extend((os.path.join(top, n), depth + 1) for n in reversed(below))


def _walk(root: Path) -> tuple[dict[Path, list[Path]], list[Path]]:
    """Folders holding log files (-> their files), and checkpoint paths, below root."""
    logs: dict[Path, list[Path]] = {}
    ckpts: list[Path] = []
    for dirpath, dirnames, filenames in walk_folders(root):
        d = Path(dirpath)
        dirnames[:] = sorted(n for n in dirnames if n not in _SKIP_DIRS)
        # an HF model folder / sharded checkpoint folder is ONE checkpoint; its log files and its
        # sub folders (a Trainer's runs/ and checkpoint-N/) are still walked
        model_folder = any(m in filenames for m in _MODEL_FOLDER_MARKERS) and is_checkpoint_path(str(d))
        if model_folder:
            ckpts.append(d)
        for name in sorted(filenames):
            p = d / name
            if is_log_file(str(p)):
                logs.setdefault(d, []).append(p)
            elif not model_folder and is_checkpoint_path(str(p)):
                ckpts.append(p)
    return logs, ckpts


def _run_roots(logs: dict[Path, list[Path]], top: Path) -> dict[Path, Path]:
    """Map each log folder to the root of the run it belongs to."""
    log_dirs = list(logs)
    dirs = set(log_dirs)
    # HF Trainer output_dir: its checkpoint-N/ (and hub-style last-checkpoint/) folders, each with a
    # trainer_state.json, are one run rooted at the output_dir (which also gathers its runs/<date>/ events)
    dirs |= {d.parent for d in log_dirs if HF_CHECKPOINT_DIR.fullmatch(d.name) and top in d.parents}
    roots: dict[Path, Path] = {}
    for d in sorted(dirs, key=lambda p: len(p.parts)):
        root = d
        for parent in d.parents:
            if parent in dirs:
                root = roots.get(parent, parent)
                break
        roots[d] = root
    # Keras-style phase folders: group siblings named train/validation/... under their parent
    def keras_phase(folder: Path) -> bool:  # a phase folder of TensorBoard event files (not Ultralytics' train/)
        return folder.name.lower() in PHASE_NAMES and all(is_event_file_name(f.name) for f in logs.get(folder, []))

    for d, root in list(roots.items()):
        if root == d and keras_phase(d) and d.parent not in dirs:
            siblings = [s for s in dirs if s.parent == d.parent and keras_phase(s)]
            if len(siblings) >= 1:
                for s in siblings:
                    for k, r in roots.items():
                        if r == s:
                            roots[k] = d.parent
    return roots


def _unique_name(base: str, taken: set[str]) -> str:
    name, i = base, 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    taken.add(name)
    return name


def discover(paths: list[str]) -> list[RunSpec]:
    """Find runs under the given paths. Raises InputError for a missing path or nothing usable."""
    runs: list[RunSpec] = []
    taken: set[str] = set()
    for raw in paths:
        if not Path(raw).exists():
            raise InputError(f"{raw}: no such file or directory")
    for raw in _without_nested(paths):
        p = Path(raw)
        if not p.is_dir() and not p.is_file():  # a FIFO, device or socket given directly
            raise InputError(f"{raw}: {regular_file_problem(raw)}; not read")
        if p.is_file():
            reader = reader_for(str(p))
            if reader is not None and reader.members is not None:
                members = _member_runs(p, p.stem, taken)
                if not members:
                    raise InputError(f"{raw}: an {reader.what[:-1] if reader.what.endswith('s') else reader.what} "
                                     "with no runs")
                runs.extend(members)
            elif reader is not None:
                runs.append(RunSpec(_unique_name(p.parent.name or p.stem, taken), str(p), [(str(p), "")]))
            elif is_checkpoint_path(str(p)):
                runs.append(RunSpec(_unique_name(p.stem, taken), str(p), [], [str(p)]))
            else:
                raise InputError(f"{raw}: not an event file (name must contain 'tfevents') "
                                 "or a checkpoint (.pt, .pth, .ckpt, .bin, .safetensors)")
            continue
        found = _discover_dir(p, taken)
        if not found:
            raise InputError(f"{raw}: no TensorBoard event files or checkpoints found in this folder")
        runs.extend(found)
    return runs


def _without_nested(paths: list[str]) -> list[str]:
    """Drop repeated paths and paths inside another given folder (they would be read twice)."""
    resolved = [(raw, Path(raw).resolve()) for raw in paths]
    kept = []
    for raw, r in resolved:
        if any(o != r and o in r.parents for _, o in resolved) or any(r == k for _, k in kept):
            continue
        kept.append((raw, r))
    return [raw for raw, _ in kept]


def _member_runs(path: Path, base: str, taken: set[str]) -> list[RunSpec]:
    """One RunSpec per run inside a multi-run log file."""
    reader = reader_for(str(path))
    return [RunSpec(_unique_name(f"{base}/{name}", taken), str(path), [(str(path), "")], member=member)
            for member, name in reader.members(str(path))]


def _split_stores(logs: dict[Path, list[Path]]) -> list[tuple[Path, Path]]:
    """Take the multi-run log files out of `logs` (a folder left with none is no log folder)."""
    stores = []
    for d in list(logs):
        kept = []
        for f in logs[d]:
            reader = reader_for(str(f))
            if reader is not None and reader.members is not None:
                stores.append((d, f))
            else:
                kept.append(f)
        if kept:
            logs[d] = kept
        else:
            del logs[d]
    return stores


def _discover_dir(top: Path, taken: set[str]) -> list[RunSpec]:
    logs, ckpts = _walk(top)
    stores = _split_stores(logs)
    roots = _run_roots(logs, top)
    by_root: dict[Path, RunSpec] = {}
    for root in sorted(set(roots.values()), key=lambda r: str(r)):
        rel = root.relative_to(top) if root != top else Path(top.resolve().name)
        by_root[root] = RunSpec(_unique_name(str(rel).replace(os.sep, "/"), taken), str(root))
    for d, files in sorted(logs.items(), key=lambda kv: str(kv[0])):
        root = roots[d]
        sub = "" if d == root else str(d.relative_to(root)).replace(os.sep, "/")
        by_root[root].event_files.extend((str(f), sub) for f in files)
    orphan: dict[Path, list[Path]] = {}
    for c in ckpts:
        # the deepest run folder holding it: walk up from the file (linear in runs, not quadratic)
        owner = next((by_root[r] for r in (c, *c.parents) if r in by_root), None)
        if owner is None:
            orphan.setdefault(c.parent if c.is_file() else c.parent, []).append(c)
        else:
            owner.checkpoints.append(str(c))
    runs = list(by_root.values())
    for folder, store in stores:
        rel = folder.relative_to(top) if folder != top else Path(top.resolve().name)
        runs.extend(_member_runs(store, f"{str(rel).replace(os.sep, '/')}/{store.stem}", taken))
    for folder, files in sorted(orphan.items(), key=lambda kv: str(kv[0])):
        # checkpoints in a 'checkpoints' folder next to nothing: name after the folder's parent
        base = folder.parent if folder.name.lower() in {"checkpoints", "ckpt", "ckpts", "weights"} else folder
        rel = base.relative_to(top) if base != top and top in base.parents else Path(base.resolve().name)
        runs.append(RunSpec(_unique_name(str(rel).replace(os.sep, "/"), taken), str(folder), [],
                            [str(f) for f in files]))
    return runs
