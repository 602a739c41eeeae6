"""Run discovery: turn the PATH arguments into runs (log files + checkpoints per run).

Discovery goes by names only (it never opens a file but to sniff a generic name), so it stays cheap and
a sweep can run it on stand-ins for remote objects.

Policy: one experiment folder is one run
----------------------------------------
* A *log file* is a file a registered log reader recognises (`registry.is_log_file`), e.g. a
  TensorBoard event file (any name containing ``tfevents``).
* A *run folder* is a folder that directly holds log files.
* A run folder nested inside another run folder belongs to the outer run as a *sub* folder: that is
  what torch's ``add_scalars`` writes (``run/activation_stats_conv1_mean/events...``), what TF's
  Estimator writes (``model_dir/eval/``) and what the HF Trainer writes (``output_dir/runs/<date>/``).
* hparams trials stay separate runs: torch's and tensorboardX's ``add_hparams`` write each call into a
  sub-folder named by ``time.time()`` (``runs/lr_0.01/1796122532.403024/``). A run folder with ONE such
  sub-folder keeps it (the trial's own hparams); a folder with several (``add_hparams`` called in a loop
  on one writer, the pattern of torch's documentation) has one trial per sub-folder: each is a run of its
  own, named ``<folder>/<timestamp>``.
* A folder only a training of its own writes is never a sub folder, even inside a run folder: Lightning's
  ``version_N/`` and Stable-Baselines3's ``<ALGO>_N/`` (``PPO_3``, ``DQN_Shaped_1``; SB3 also leaves a bare
  event file in the ``tensorboard_log`` folder when ``tb_log_name`` is empty, beside them).
* Keras/TF2 writes ``logs/train/`` and ``logs/validation/`` with no event file in ``logs``: sibling run
  folders named like phases (train, validation, val, eval, test...) holding only event files are
  grouped into one run named after their parent, each phase kept as a sub folder (a ``train/`` folder
  of other logs, e.g. Ultralytics' ``runs/detect/train/results.csv``, is a run of its own). Never above
  the folder given: a phase folder given as the PATH is a run of its own, named after it.
* An HF Trainer ``output_dir``: sibling ``checkpoint-N/`` (or ``last-checkpoint/``) folders holding
  log files (``trainer_state.json``) make their parent a run folder, so all checkpoints of one
  ``output_dir`` and its ``runs/<date>/`` event files are one run named after the ``output_dir``
  (never above the folder given).
* Checkpoints are attached to the deepest run folder above them (Lightning's ``version_N/checkpoints/``,
  Ultralytics' ``runs/detect/<name>/weights/``, HF's ``checkpoint-N/``).
* The experiment root: checkpoints below no run folder join the run whose logs sit beside them. Their
  experiment folder is the folder holding them, or, when they sit in a checkpoint folder (named
  checkpoints, checkpoint, ckpt, ckpts, weights, models, saved_models or snapshots, at any depth below
  it), the folder holding that one. When exactly one run has its logs inside that experiment folder,
  the checkpoints join it and the run is named after the experiment folder: ``exp/logs/`` +
  ``exp/checkpoints/``, ``exp/tb/`` + ``exp/ckpt/``, ``exp/runs/exp1/`` + ``exp/model.pt`` are each one run
  ``exp``. The series keep the sub folders of their logs (a ``Loss/train`` read from ``exp/logs/`` is
  still ``Loss/train``). An experiment folder holding the logs of several runs adopts no checkpoint
  (whose would they be?).
* Checkpoints with no run become a checkpoint-only run named after their folder (after the folder
  above a checkpoint folder).
* Checkpoints of different models in one run (different parameter names or shapes) are split after
  reading, when their contents are known (`readers.run.split_models`): each model's checkpoints become
  a run ``<run>/<model>`` of their own and the logs stay in ``<run>``.
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

Run names are stable, so a baseline made from another folder pairs (`baseline.pair_runs`): a run is
named by its folder's path relative to the PATH given (``lightning_logs/version_3``), the PATH's own
name when the run folder is the PATH itself; repeated names get ``-2``, ``-3``. With one run on each
side the baseline pairs whatever the names.
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
HPARAMS_TRIAL_DIR = re.compile(r"\d{9,11}(\.\d+)?")  # str(time.time()): add_hparams' trial sub-folder
# a folder one training of its own always writes: Lightning's version_N, SB3's <ALGO>[_<tb_log_name>]_N
RUN_OF_ITS_OWN_DIR = re.compile(r"version_\d+|(A2C|PPO|DQN|SAC|TD3|DDPG|HER|ARS|QRDQN|TQC|TRPO|RecurrentPPO|"
                                r"MaskablePPO|CrossQ)(_[\w.-]+)?_\d+")
CHECKPOINT_FOLDER_NAMES = {"checkpoints", "checkpoint", "ckpt", "ckpts", "weights", "models", "saved_models",
                           "snapshots"}
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


def _within(folder: Path, top: Path) -> bool:
    return folder == top or top in folder.parents


def _is_trial_folder(folder: Path) -> bool:
    """A sub-folder `add_hparams` wrote: named by `str(time.time())`."""
    return bool(HPARAMS_TRIAL_DIR.fullmatch(folder.name))


def _run_roots(logs: dict[Path, list[Path]], top: Path) -> dict[Path, Path]:
    """Map each log folder to the root of the run it belongs to (the module docstring's policy)."""
    log_dirs = list(logs)
    dirs = set(log_dirs)
    # HF Trainer output_dir: its checkpoint-N/ (and hub-style last-checkpoint/) folders, each with a
    # trainer_state.json, are one run rooted at the output_dir (which also gathers its runs/<date>/ events)
    dirs |= {d.parent for d in log_dirs if HF_CHECKPOINT_DIR.fullmatch(d.name) and top in d.parents}
    # add_hparams called several times on one writer: one trial per timestamp sub-folder
    trials: dict[Path, int] = {}
    for d in dirs:
        if _is_trial_folder(d):
            trials[d.parent] = trials.get(d.parent, 0) + 1
    roots: dict[Path, Path] = {}
    for d in sorted(dirs, key=lambda p: len(p.parts)):
        root = d
        if not (_is_trial_folder(d) and trials.get(d.parent, 0) > 1) and not RUN_OF_ITS_OWN_DIR.fullmatch(d.name):
            for parent in d.parents:
                if parent in dirs:
                    root = roots.get(parent, parent)
                    break
        roots[d] = root

    # Keras-style phase folders: group siblings named train/validation/... under their parent
    def keras_phase(folder: Path) -> bool:  # a phase folder of TensorBoard event files (not Ultralytics' train/)
        return folder.name.lower() in PHASE_NAMES and all(is_event_file_name(f.name) for f in logs.get(folder, []))

    for d, root in list(roots.items()):
        if root == d and keras_phase(d) and d.parent not in dirs and d != top and _within(d.parent, top):
            for s in [s for s in dirs if s.parent == d.parent and keras_phase(s)]:
                for k, r in roots.items():
                    if r == s:
                        roots[k] = d.parent
    return roots


def _experiment_folder(ckpt: Path, top: Path) -> Path:
    """The folder a checkpoint's experiment lives in: above the nearest checkpoint folder holding it, else
    the folder holding it (never above `top`)."""
    folder = ckpt.parent
    for parent in (folder, *folder.parents):
        if not _within(parent, top):
            break
        if parent.name.lower() in CHECKPOINT_FOLDER_NAMES and parent != top:
            return parent.parent
    return folder


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


def _rel_name(folder: Path, top: Path) -> str:
    rel = folder.relative_to(top) if folder != top and top in folder.parents else Path(folder.resolve().name)
    return str(rel).replace(os.sep, "/")


def _discover_dir(top: Path, taken: set[str]) -> list[RunSpec]:
    logs, ckpts = _walk(top)
    stores = _split_stores(logs)
    roots = _run_roots(logs, top)
    log_roots = sorted(set(roots.values()), key=str)
    # the run of each checkpoint: the deepest run folder above it, else the one run of its experiment folder
    home: dict[Path, Path] = {}  # log root -> experiment folder (the run's folder when it adopted checkpoints)
    owned: dict[Path, list[Path]] = {r: [] for r in log_roots}
    orphan: dict[Path, list[Path]] = {}
    below: dict[Path, list[Path]] = {}  # folder -> the run folders under it (linear in runs, not quadratic)
    for r in log_roots:
        for a in r.parents:
            below.setdefault(a, []).append(r)
            if a == top:
                break
    for c in ckpts:
        # the deepest run folder holding it: walk up from the file
        owner = next((r for r in (c, *c.parents) if r in owned), None)
        if owner is None:
            exp = _experiment_folder(c, top)
            inside = below.get(exp, [])
            if len(inside) == 1:
                owner = inside[0]
                if owner not in home or home[owner] in exp.parents:  # the outermost experiment folder wins
                    home[owner] = exp
        if owner is None:
            orphan.setdefault(c.parent, []).append(c)
        else:
            owned[owner].append(c)
    runs: list[RunSpec] = []
    by_root: dict[Path, RunSpec] = {}
    for root in sorted(log_roots, key=lambda r: str(home.get(r, r))):
        folder = home.get(root, root)
        by_root[root] = RunSpec(_unique_name(_rel_name(folder, top), taken), str(folder))
    for d, files in sorted(logs.items(), key=lambda kv: str(kv[0])):
        root = roots[d]
        sub = "" if d == root else str(d.relative_to(root)).replace(os.sep, "/")
        by_root[root].event_files.extend((str(f), sub) for f in files)
    for root, spec in by_root.items():
        spec.checkpoints = [str(c) for c in owned[root]]
        runs.append(spec)
    for folder, store in stores:
        runs.extend(_member_runs(store, f"{_rel_name(folder, top)}/{store.stem}", taken))
    for folder, files in sorted(orphan.items(), key=lambda kv: str(kv[0])):
        # checkpoints in a 'checkpoints' folder next to nothing: name after the folder's parent
        base = folder.parent if folder.name.lower() in CHECKPOINT_FOLDER_NAMES else folder
        runs.append(RunSpec(_unique_name(_rel_name(base, top), taken), str(folder), [], [str(f) for f in files]))
    return runs
