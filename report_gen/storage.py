"""Remote storage at the edge: fsspec URLs listed and staged into a local cache, so the readers only
ever see local files (DESIGN §2, §3).

`report-gen diagnose s3://bucket/sweep/run-7` lists the prefix once, downloads the objects the
readers would read, hard-links them into a private *view* folder that has the remote names (the
readers need the names: `tfevents`, `epoch_3.pt`, `model.safetensors.index.json`), diagnoses the
view, and writes the report with the URL wherever the view path would have appeared.

Policy
------
* **Which URLs**: anything fsspec knows (`s3://`, `gs://`, `az://`/`abfs://`, `file://`, `memory://`,
  `https://` ...). The protocol packages are extras: `report_gen[s3]`, `[gcs]`, `[azure]`.
  `--storage-options JSON` is passed to the filesystem of every URL (like pandas' and dask's
  `storage_options`); per-protocol defaults come from fsspec's own configuration
  (`~/.config/fsspec/*.json`, `FSSPEC_S3_ENDPOINT_URL=...`), which fsspec applies itself.
* **Which objects**: the ones discovery would use, decided by discovery's own tests
  (`registry.is_log_file`, `paths.is_checkpoint_path`) on the name alone; a name those tests can only
  decide from the bytes (a log reader that sniffs, a `.bin`/`.tar` checkpoint) is decided by the same
  tests on a stand-in with the same name and the object's first 64 KiB (one range read, in a sparse
  file of the object's size so size checks hold). Companions: what each log reader reads beside its
  log file (`LOG_COMPANIONS`: hparams.yaml, args.yaml, training_args.bin, MLflow's metrics/,
  W&B's files/...), the shards a staged `*.index.json` names, and a model folder's marker files
  (`config.json`, as discovery's model-folder test reads them).
* **Cache**: `<cache>/objects/<2 hex>/<sha256>`, keyed by URL, ETag/generation, size and mtime, so
  a changed object is fetched again and an unchanged one never is. Downloads go to a unique
  temporary file that is renamed into place: concurrent processes (a local pool, several CI jobs
  on one runner) may both fetch an object, never see half of one. Default cache:
  `$REPORT_GEN_CACHE_DIR`, else the user cache folder (`$XDG_CACHE_HOME/report_gen`,
  `~/Library/Caches/report_gen`, `%LOCALAPPDATA%\\report_gen\\Cache`). There is no eviction: the
  cache is safe to delete at any time.
* **Failures**: every transfer is tried `retries` times with exponential backoff and jitter.
  A missing object, a permission error or a connection that keeps failing becomes a `Problem` of
  the run that would have read the file (kind `missing-object`, `permission-denied`,
  `transfer-failed`, severity error: the diagnosis misses data that exists), reported by I101 —
  never an exception that loses the other runs. Only a URL that cannot be listed at all, or of
  which no object could be fetched, stops `diagnose` (exit 2; in a sweep, that one run fails).
* **Hostile names**: a key is a string, not a path. Empty components (`a//b`, a leading `/`) are
  dropped; a key with a `.` or `..` component, a NUL or a backslash is not staged (`unsafe-name`);
  a component longer than the file system allows is shortened around a hash of it; every local
  path is checked to lie inside its view folder before anything is written. Cached objects are
  named by hash only.
* **Secrets**: storage options are never written into a report; a password in a URL
  (`ftp://user:pw@host/`) is shown as `***`.

Not done (yet): reading byte ranges of a remote checkpoint instead of staging it whole; the readers
take local files, and a staged file is re-used by every later diagnosis.
"""
from __future__ import annotations

import datetime
import errno
import json
import logging
import math
import os
import random
import re
import shutil
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from report_gen.core import InputError, Problem, ProblemKind, json_object_option
from report_gen.readers.discovery import _MODEL_FOLDER_MARKERS as MODEL_FOLDER_MARKERS
from report_gen.readers.paths import _SNIFFED_SUFFIXES as SNIFFED_SUFFIXES
from report_gen.readers.paths import is_checkpoint_path
from report_gen.readers.registry import LOG_READERS, LogReader, is_log_file, reader_for

log = logging.getLogger("report_gen")

_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_PASSWORD_RE = r"^([A-Za-z][A-Za-z0-9+.\-]*://[^/@:]*):[^/@]*@"  # compiled (and cached by re) for a URL shown
HEAD_BYTES = 64 * 1024  # enough for every sniff (a few KiB), and for the first tar headers of a legacy torch tar
INDEX_MAX_BYTES = 16 * 1024 * 1024  # a *.index.json larger than this is not parsed for shard names
MAX_NAME_BYTES = 255  # one path component, on every common file system
MAX_PATH_CHARS = 3000  # a staged path longer than this is refused (PATH_MAX is 4096 on Linux)
STALE_VIEW_S = 24 * 3600  # views left behind by killed processes are removed after a day
_ABSENT = os.path.join(tempfile.gettempdir(), f"report_gen-absent-{os.urandom(16).hex()}")  # never created
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
FETCH_THREADS = 8  # concurrent transfers per staged URL

# --------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object. rel: its key relative to the listed URL ('/'-separated, as listed, maybe
    hostile); size in bytes (None if unknown); version: ETag/generation/mtime, whatever the store gave."""

    rel: str
    size: int | None
    version: str
    mtime: float | None = None  # the store's modification time: staged files keep it (checkpoints of one step sort by it)


@dataclass(frozen=True)
class Listing:
    """What listing a URL found: the filesystem path of the root, whether the URL is one object, and
    the objects below it (for a single object: one entry whose rel is its name)."""

    url: str
    root: str
    is_file: bool
    objects: tuple[ObjectInfo, ...]


@dataclass(frozen=True)
class StorageSettings:
    """How URLs are read. Picklable: a sweep sends it to every worker.

    options: keyword arguments for the filesystem of every URL (`--storage-options`).
    cache_dir: the local cache (None: `default_cache_dir()`).
    listings: URL -> Listing made earlier (the sweep driver lists once; a task then stages exactly
              what was listed, so an object deleted in between is reported, not silently skipped).
    retries: attempts per transfer; backoff: the first pause in seconds (doubled each time, jittered).
    """

    options: Mapping[str, Any] = field(default_factory=dict)
    cache_dir: str | None = None
    listings: Mapping[str, Listing] = field(default_factory=dict)
    retries: int = 3
    backoff: float = 0.25


def default_cache_dir() -> Path:
    env = os.environ.get("REPORT_GEN_CACHE_DIR")
    if env:
        return Path(env)
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / "report_gen" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "report_gen"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "report_gen"


def parse_storage_options(text: str | None) -> dict[str, Any]:
    """`--storage-options` JSON -> dict; InputError (one line) when it is not a JSON object."""
    return json_object_option(text, "--storage-options", example="'{\"anon\": true}'")


# ------------------------------------------------------------------------------------------- URLs


def url_protocol(text: str) -> str | None:
    m = _URL_RE.match(str(text))
    return m.group(1).lower() if m else None


def is_url(text: str) -> bool:
    """True for `proto://...` (a URL for fsspec); plain and relative paths are local."""
    return url_protocol(text) is not None


def display_url(url: str) -> str:
    """The URL as reports show it: a password in it replaced by ***."""
    return re.sub(_PASSWORD_RE, r"\1:***@", url)


def join_url(url: str, rel: str) -> str:
    return url.rstrip("/") + "/" + rel if rel else url


def filesystem(url: str, options: Mapping[str, Any]):
    """(fsspec filesystem, path) for a URL; InputError for an unknown protocol or a missing package."""
    import fsspec
    from fsspec.core import url_to_fs

    proto = url_protocol(url) or "file"
    if proto not in fsspec.available_protocols() and proto not in fsspec.registry:
        raise InputError(f"{display_url(url)}: unknown storage protocol {proto!r} (fsspec knows "
                         f"{', '.join(sorted(p for p in fsspec.available_protocols() if len(p) <= 5))}, ...)")
    try:
        return url_to_fs(url, **dict(options))
    except ImportError as e:
        extra = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure",
                 "abfss": "azure", "adl": "azure"}.get(proto)
        hint = f"pip install 'report_gen[{extra}]'" if extra else str(e).splitlines()[0]
        raise InputError(f"{display_url(url)}: the {proto}:// filesystem is not installed ({hint})") from None
    except (TypeError, ValueError) as e:
        raise InputError(f"{display_url(url)}: bad storage options or URL ({type(e).__name__}: {e})") from None


def _version(info: Mapping[str, Any]) -> str:
    """ETag/generation/mtime from an fsspec info dict, whatever the backend calls them."""
    parts = []
    for key in ("ETag", "etag", "md5Hash", "generation", "VersionId", "version_id",
                "LastModified", "last_modified", "mtime", "updated", "modified", "ino"):
        value = info.get(key)
        if value not in (None, ""):
            parts.append(f"{key}={value}")
    return "|".join(parts)


def _mtime(info: Mapping[str, Any]) -> float | None:
    """The modification time from an fsspec info dict (a datetime on S3/GCS/Azure, seconds locally)."""
    for key in ("LastModified", "last_modified", "mtime", "updated", "modified", "created"):
        value = info.get(key)
        try:
            if isinstance(value, datetime.datetime):
                t = value.timestamp()
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                t = float(value)
            elif isinstance(value, str) and value:
                t = datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            else:
                continue
        except (ValueError, OverflowError, OSError):
            continue
        if math.isfinite(t) and 0 < t < 2**40:
            return t
    return None


def _size(info: Mapping[str, Any]) -> int | None:
    size = info.get("size", info.get("Size"))
    return int(size) if isinstance(size, (int, float)) and size >= 0 else None


def _retry(fn: Callable[[], Any], settings: StorageSettings) -> Any:
    """fn() tried `settings.retries` times with exponential backoff; a missing object or a permission
    error is final at once. Raises TransferError (the last error and the attempt count) when all fail."""
    attempts = max(int(settings.retries), 1)
    for attempt in range(attempts):
        try:
            return fn()
        except _PERMANENT:
            raise
        except Exception as e:  # noqa: BLE001 - any other error may be transient: retry, bounded
            if attempt + 1 >= attempts:
                raise TransferError(e, attempts) from e
            pause = settings.backoff * (2 ** attempt) * random.uniform(0.5, 1.5)
            log.debug("transfer failed (%s: %s); retrying in %.2f s", type(e).__name__, e, pause)
            time.sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover


class TransferError(Exception):
    def __init__(self, cause: BaseException, attempts: int) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause, self.attempts = cause, attempts


def list_url(url: str, settings: StorageSettings) -> Listing:
    """List everything below a URL (or the one object it names). InputError when it cannot be listed."""
    fs, root = filesystem(url, settings.options)
    shown = display_url(url)
    try:
        fs.invalidate_cache(root)
        info = _retry(lambda: fs.info(root), settings)
        if info.get("type") != "directory":
            name = root.rstrip("/").rsplit("/", 1)[-1]
            return Listing(url, root, True, (ObjectInfo(name, _size(info), _version(info), _mtime(info)),))
        found = _retry(lambda: fs.find(root, withdirs=False, detail=True), settings)
    except FileNotFoundError:
        raise InputError(f"{shown}: no such file or directory") from None
    except PermissionError as e:
        raise InputError(f"{shown}: permission denied ({e})") from None
    except TransferError as e:
        raise InputError(f"{shown}: cannot be listed after {e.attempts} attempts ({e})") from None
    prefix = root.rstrip("/") + "/"
    objects = []
    for path, meta in sorted(found.items()):
        if meta.get("type", "file") != "file" or not path.startswith(prefix):
            continue
        objects.append(ObjectInfo(path[len(prefix):], _size(meta), _version(meta), _mtime(meta)))
    return Listing(url, root.rstrip("/"), False, tuple(objects))


# -------------------------------------------------------------------------------- which objects


def _name_wanted(name: str) -> bool:
    """Discovery's own tests (`is_log_file`, `is_checkpoint_path`) on a name alone: the path they are
    given cannot exist, so nothing is opened and a test that needs the bytes says no."""
    absent = os.path.join(_ABSENT, name)
    return is_log_file(absent) or is_checkpoint_path(absent)


def needs_sniff(name: str) -> bool:
    """A name that is a log or a checkpoint only if its first bytes say so: a log reader's name test
    passes but the reader sniffs (`metrics.csv`), or a checkpoint suffix too generic to trust (`.bin`)."""
    if _name_wanted(name):
        return False
    return name.lower().endswith(SNIFFED_SUFFIXES) or any(r.sniff and r.name_matches(name) for r in LOG_READERS)


def wanted_after_sniff(probe: str) -> bool:
    """The same tests on a local stand-in (same name, true first bytes, true size)."""
    return is_log_file(probe) or is_checkpoint_path(probe)


#: What each log reader reads beside its log file (readers/registry.py, by reader name), as patterns
#: relative to the log file's folder: a name, "../name" in the folder above, "folder/**" everything
#: below a folder. A reader missing here fails tests/test_storage.py, so its author decides.
LOG_COMPANIONS: dict[str, tuple[str, ...]] = {
    "tensorboard": (),
    "hf-trainer": ("training_args.bin", "../training_args.bin"),
    "lightning-csv": ("hparams.yaml",),
    "ultralytics-csv": ("args.yaml",),
    "mlflow-files": ("metrics/**", "params/**", "tags/**"),
    "mlflow-sqlite": (),
    "wandb": ("files/wandb-history.jsonl", "files/config.yaml", "files/wandb-summary.json"),
}


def log_companions(log: ObjectInfo, reader: LogReader, by_rel: Mapping[str, ObjectInfo]) -> list[ObjectInfo]:
    """The listed objects `reader` reads beside the log file `log` (LOG_COMPANIONS)."""
    out = []
    for pattern in LOG_COMPANIONS.get(reader.name, ()):
        base: str | None = log.rel.rpartition("/")[0]
        while pattern.startswith("../") and base is not None:
            base, pattern = (base.rpartition("/")[0] if base else None), pattern[3:]
        if base is None:
            continue
        prefix = f"{base}/" if base else ""
        if pattern.endswith("/**"):
            below = prefix + pattern[:-2]
            out += [o for rel, o in by_rel.items() if rel.startswith(below)]
        elif prefix + pattern in by_rel:
            out.append(by_rel[prefix + pattern])
    return out


#: What the checkpoint reader reads in a model folder beyond its weights (readers/checkpoint/hf.py
#: open_folder: config.json, trainer_state.json, optimizer.pt).
MODEL_FOLDER_EXTRAS = ("optimizer.pt",)


def model_folder_files(siblings: Iterable[ObjectInfo]) -> list[ObjectInfo]:
    """In a folder discovery takes for one model (it holds one of its marker names), the marker files
    and what the checkpoint reader reads there; elsewhere nothing."""
    siblings = list(siblings)
    names = {o.rel.rpartition("/")[2] for o in siblings}
    if not names & set(MODEL_FOLDER_MARKERS):
        return []
    wanted = set(MODEL_FOLDER_MARKERS) | set(MODEL_FOLDER_EXTRAS)
    return [o for o in siblings if o.rel.rpartition("/")[2] in wanted]


def reader_of_name(name: str) -> LogReader | None:
    """The log reader a name alone decides (None for a checkpoint, or when the bytes must decide)."""
    return reader_for(os.path.join(_ABSENT, name))


def is_multi_run_name(name: str) -> bool:
    """A log file that may hold several runs (an MLflow SQLite store): discovery must read it whole."""
    return any(r.members is not None and r.name_matches(name) for r in LOG_READERS)


def select(objects: Iterable[ObjectInfo]) -> tuple[list[ObjectInfo], list[ObjectInfo], dict[str, list[ObjectInfo]]]:
    """Split a listing: (wanted by name, to sniff, companions by folder).

    Companions are the other objects of every folder that holds a wanted object: a model folder's
    `config.json` is staged with it, and the shards a staged index names are chosen from them.
    """
    wanted, sniff, folders = [], [], {}
    by_folder: dict[str, list[ObjectInfo]] = {}
    for o in objects:
        folder, _, name = o.rel.rpartition("/")
        by_folder.setdefault(folder, []).append(o)
        if _name_wanted(name):
            wanted.append(o)
        elif needs_sniff(name):
            sniff.append(o)
    for o in wanted + sniff:
        folder = o.rel.rpartition("/")[0]
        folders[folder] = by_folder[folder]
    return wanted, sniff, folders


# ---------------------------------------------------------------------------------- local names


class UnsafeName(ValueError):
    pass


def _fit_component(part: str) -> str:
    """A path component that fits MAX_NAME_BYTES: long ones keep their start and end around a hash."""
    raw = part.encode("utf-8", "surrogateescape")
    if len(raw) <= MAX_NAME_BYTES:
        return part
    import hashlib

    digest = hashlib.sha256(raw).hexdigest()[:12]
    head = raw[:80].decode("utf-8", "ignore")
    tail = raw[-120:].decode("utf-8", "ignore")
    return f"{head}~{digest}~{tail}"


def local_relpath(rel: str) -> str:
    """The local relative path for a remote key, or UnsafeName. Never absolute, never climbing."""
    if "\x00" in rel or "\\" in rel:
        raise UnsafeName("a NUL or backslash in the name")
    parts = [p for p in rel.split("/") if p != ""]
    if not parts:
        raise UnsafeName("an empty name")
    if any(p in (".", "..") for p in parts):
        raise UnsafeName("a '.' or '..' path component")
    fitted = [_fit_component(p) for p in parts]
    if fitted[-1] != parts[-1] and _name_wanted(parts[-1]) and not _name_wanted(fitted[-1]):
        raise UnsafeName("a name too long to keep what makes it an event file or checkpoint")
    return os.path.join(*fitted)


def confined(root: Path, rel: str) -> Path:
    """root/rel, checked to lie inside root (after normalisation); UnsafeName otherwise."""
    target = Path(os.path.normpath(os.path.join(str(root), rel)))
    base = os.path.normpath(str(root))
    if not str(target).startswith(base + os.sep) or len(str(target)) > MAX_PATH_CHARS:
        raise UnsafeName("a path that leaves the staging folder or is too long")
    return target


def _local_name(part: str, fallback: str) -> str:
    try:
        return local_relpath(part)
    except UnsafeName:
        return fallback


def view_folder(listing: Listing) -> tuple[str, str | None]:
    """(folder name, file name) standing for a listed URL locally. A folder keeps the last part of its
    URL, a single object its name and its parent folder's name: discovery names runs after them."""
    parts = [p for p in listing.root.rstrip("/").split("/") if p]
    if listing.is_file:
        parent = _local_name(parts[-2], "root") if len(parts) > 1 else "root"
        return parent, _local_name(parts[-1], "object")
    return (_local_name(parts[-1], "root") if parts else "root"), None


# --------------------------------------------------------------------------------------- cache


class Cache:
    """Content-addressed objects under `root/objects`, partial downloads under `root/tmp`."""

    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(root) if root else default_cache_dir()
        try:
            for sub in ("objects", "tmp", "views"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"{self.root}: cannot create the cache folder ({e.strerror or e})") from None

    @staticmethod
    def key(url: str, obj: ObjectInfo) -> str:
        import hashlib

        ident = json.dumps([url, obj.version, obj.size], separators=(",", ":"))
        return hashlib.sha256(ident.encode("utf-8", "surrogateescape")).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / "objects" / key[:2] / key

    def lookup(self, key: str, size: int | None) -> Path | None:
        """The cached object, or None (absent, or not of the listed size: fetched again)."""
        p = self.path(key)
        try:
            actual = p.stat().st_size
        except OSError:
            return None
        return p if size is None or actual == size else None

    def temporary(self) -> Path:
        return self.root / "tmp" / f"{os.getpid()}-{os.urandom(16).hex()}.part"

    def commit(self, tmp: Path, key: str, mtime: float | None = None) -> Path:
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))  # the store's time: the readers order same-step checkpoints by it
        os.replace(tmp, final)  # atomic: readers see the old object, the new one, or none
        return final

    def fetch(self, fs, remote: str, url: str, o: "ObjectInfo", settings: "StorageSettings") -> Path:
        """The object in the cache, downloaded first if it is not there yet (raises on failure)."""
        key = self.key(url, o)
        path = self.lookup(key, o.size)
        if path is None:
            tmp = self.temporary()
            _download(fs, remote, tmp, o.size, settings)
            path = self.commit(tmp, key, o.mtime)
        return path

    def new_view(self) -> Path:
        self._clean_stale_views()
        view = self.root / "views" / f"{os.getpid()}-{os.urandom(6).hex()}"
        view.mkdir(parents=True)
        return view.resolve()  # the readers resolve paths; the view must already be resolved to be found again

    def _clean_stale_views(self) -> None:
        now = time.time()
        try:
            entries = list((self.root / "views").iterdir())
        except OSError:
            return
        for entry in entries:
            try:
                if now - entry.stat().st_mtime > STALE_VIEW_S:
                    shutil.rmtree(entry, ignore_errors=True)
            except OSError:
                pass


def _download(fs, remote: str, dest: Path, expected: int | None, settings: StorageSettings) -> None:
    def once() -> None:
        fs.get_file(remote, str(dest))  # streams to disk (one GET on object stores, no HEAD)
        got = dest.stat().st_size
        if expected is not None and got != expected:
            raise OSError(f"got {got} of {expected} bytes")

    try:
        _retry(once, settings)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


def read_head(fs, remote: str, size: int | None, dest: Path, settings: StorageSettings) -> Path:
    """The first HEAD_BYTES of an object in a sparse local file of the object's full size."""
    end = HEAD_BYTES if size is None else min(HEAD_BYTES, size)
    data = _retry(lambda: fs.cat_file(remote, start=0, end=end), settings)
    with open(dest, "wb") as out:
        out.write(data)
        if size is not None and size > len(data):
            out.truncate(size)
    return dest


def _link(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:  # another file system, or no hard links: a copy (with the object's mtime)
        shutil.copy2(src, dest)


# ------------------------------------------------------------------------------------ staging


@dataclass
class _Root:
    url: str  # as given (shown with display_url)
    local: str  # the view path standing for it


class Staged:
    """Inputs with every URL replaced by a local view. `paths` go to discovery; `attach` gives the
    runs the problems staging met; `publish` puts the URLs back into the report and drops the view."""

    def __init__(self, paths: list[str], roots: list[_Root], failures: list[tuple[str, Problem]],
                 view: Path | None) -> None:
        self.paths, self.roots, self.failures, self.view = paths, roots, failures, view
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(view), True) if view else None

    def attach(self, runs: Sequence[Any]) -> None:
        """Each staging problem goes to the run whose folder is nearest the file it concerns."""
        for run, problems in zip(runs, self.problems_of([r.path for r in runs])):
            run.problems.extend(problems)

    def problems_of(self, run_paths: Sequence[str]) -> list[list[Problem]]:
        """The staging problems of each run (by its path), as `attach` gives them: known before the runs
        are read, so that a run diagnosed in a worker process gets its own."""
        out: list[list[Problem]] = [[] for _ in run_paths]
        if not run_paths:
            return out
        for local, problem in self.failures:
            owner = max(range(len(run_paths)), key=lambda i: _common_len(str(run_paths[i]), local))
            out[owner].append(problem)
        return out

    def publish(self, report: dict) -> dict:
        """The report with every view path replaced by its URL; the view folder is removed."""
        if self._finalizer is not None:
            self._finalizer()
        if not self.roots:
            return report
        pairs = sorted(((r.local, display_url(r.url.rstrip("/"))) for r in self.roots), key=lambda p: -len(p[0]))
        return _replace_strings(report, pairs)


def _common_len(a: str, b: str) -> int:
    try:
        return len(os.path.commonpath([a, b]))
    except ValueError:
        return 0


def _replace_strings(value: Any, pairs: list[tuple[str, str]]) -> Any:
    if isinstance(value, str):
        for local, url in pairs:
            if local in value:
                value = value.replace(local, url)
        return value
    if isinstance(value, dict):
        return {_replace_strings(k, pairs): _replace_strings(v, pairs) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_strings(v, pairs) for v in value]
    if isinstance(value, tuple):
        return tuple(_replace_strings(v, pairs) for v in value)
    return value


def stage_inputs(paths: Sequence[str], settings: StorageSettings | None = None,
                 progress: Callable[[str, int, int], None] | None = None) -> Staged:
    """Local paths unchanged, every URL staged into a view (see the module policy)."""
    if not any(is_url(p) for p in paths):
        return Staged(list(paths), [], [], None)
    settings = settings or StorageSettings()
    cache = Cache(settings.cache_dir)
    view = cache.new_view()
    try:
        return _stage_all(paths, settings, cache, view, progress)
    except BaseException:
        shutil.rmtree(view, ignore_errors=True)
        raise


def _stage_all(paths: Sequence[str], settings: StorageSettings, cache: Cache, view: Path, progress) -> Staged:
    out_paths: list[str] = []
    roots: list[_Root] = []
    failures: list[tuple[str, Problem]] = []
    for i, raw in enumerate(paths):
        if not is_url(raw):
            out_paths.append(raw)
            continue
        listing = settings.listings.get(raw) or list_url(raw, settings)
        folder, file_name = view_folder(listing)
        local_root = view / str(i) / folder
        staged, problems = _stage_listing(listing, local_root, file_name, cache, settings, progress)
        failures.extend(problems)
        if not staged:
            first = problems[0][1].message if problems else "no event file or checkpoint among its objects"
            raise InputError(f"{display_url(raw)}: nothing could be staged ({first})")
        out_paths.append(str(local_root / file_name) if file_name else str(local_root))
        folder_url = raw.rstrip("/").rsplit("/", 1)[0] if file_name else raw
        roots.append(_Root(folder_url, str(local_root)))
    return Staged(out_paths, roots, failures, view)


def _stage_listing(listing: Listing, local_root: Path, file_name: str | None, cache: Cache,
                   settings: StorageSettings, progress) -> tuple[int, list[tuple[str, Problem]]]:
    """Fetch the wanted objects of one listing into local_root (a single object: as file_name in
    it), FETCH_THREADS at a time; (objects staged, problems)."""
    fs, _ = filesystem(listing.url, settings.options)
    problems: list[tuple[str, Problem]] = []

    def url_of(o: ObjectInfo) -> str:
        return listing.url if listing.is_file else join_url(listing.url, o.rel)

    def remote_of(o: ObjectInfo) -> str:
        return listing.root if listing.is_file else listing.root + "/" + o.rel

    def fail(o: ObjectInfo, local: Path | None, kind: ProblemKind, message: str) -> None:
        where = str(local) if local is not None else str(local_root)
        problems.append((where, Problem(file=display_url(url_of(o)), kind=kind, message=message)))

    def cached(o: ObjectInfo) -> Path:
        """The object in the cache, downloaded if it is not there yet (raises on failure)."""
        return cache.fetch(fs, remote_of(o), url_of(o), o, settings)

    def sniffed(o: ObjectInfo) -> tuple[bool, LogReader | None]:
        """(wanted, the log reader that recognises it) from a same-name stand-in with its first bytes."""
        folder = cache.temporary()  # the stand-in keeps the object's name: the name tests see it
        folder.mkdir()
        try:
            probe = str(read_head(fs, remote_of(o), o.size, folder / _fit_component(o.rel.rpartition("/")[2]
                                                                                    or "object"), settings))
            return wanted_after_sniff(probe), reader_for(probe)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def materialize(objs: list[ObjectInfo], taken: set[Path]) -> list[tuple[ObjectInfo, Path]]:
        """Fetch (in parallel) and link into the view; what fails becomes a Problem."""
        placed: list[tuple[ObjectInfo, Path]] = []
        for o in objs:
            try:
                local = confined(local_root, file_name or local_relpath(o.rel))
            except UnsafeName as e:
                fail(o, None, ProblemKind.UNSAFE_NAME, f"not staged: the key has {e}")
                continue
            if local in taken:
                fail(o, local, ProblemKind.UNSAFE_NAME, "not staged: another key maps to the same local name")
                continue
            taken.add(local)
            placed.append((o, local))
        done = []
        for (o, local), outcome in zip(placed, _parallel(cached, [o for o, _ in placed])):
            if progress is not None:
                progress(f"staging {display_url(url_of(o))}", len(done), len(placed))
            try:
                if isinstance(outcome, BaseException):
                    raise outcome
                _link(outcome, local)
            except FileNotFoundError:
                fail(o, local, ProblemKind.MISSING_OBJECT, "the object was listed but is gone (deleted or "
                                                           "replaced while the diagnosis ran)")
            except PermissionError as e:
                fail(o, local, ProblemKind.PERMISSION_DENIED, f"access denied ({e})")
            except TransferError as e:
                fail(o, local, ProblemKind.TRANSFER_FAILED, f"could not be fetched after {e.attempts} attempts ({e})")
            except OSError as e:  # the local side: a name the file system refuses, a full disk
                kind = ProblemKind.UNSAFE_NAME if e.errno in (errno.ENAMETOOLONG, errno.EINVAL) else ProblemKind.TRANSFER_FAILED
                fail(o, local, kind, f"could not be written to the cache ({e.strerror or e})")
            else:
                done.append((o, local))
        return done

    wanted, sniff, folders = select(listing.objects)
    readers = {o.rel: r for o in wanted if (r := reader_of_name(o.rel.rpartition("/")[2])) is not None}
    for o, outcome in zip(sniff, _parallel(sniffed, sniff)):
        if isinstance(outcome, BaseException):
            fail(o, None, ProblemKind.TRANSFER_FAILED, f"its first bytes could not be read ({outcome})")
        elif outcome[0]:
            wanted.append(o)
            if outcome[1] is not None:
                readers[o.rel] = outcome[1]
    chosen = {o.rel for o in wanted}
    by_rel = {o.rel: o for o in listing.objects}
    markers = [m for w in wanted for m in model_folder_files(folders.get(w.rel.rpartition("/")[0], []))
               if m.rel not in chosen]
    markers += [c for o in wanted if o.rel in readers for c in log_companions(o, readers[o.rel], by_rel)
                if c.rel not in chosen]
    taken: set[Path] = set()
    staged = materialize(sorted({o.rel: o for o in wanted + markers}.values(), key=lambda x: x.rel), taken)
    chosen |= {o.rel for o in markers}
    shards = [s for o, local in staged if o.rel.endswith(".index.json")
              for s in _shards(local, folders.get(o.rel.rpartition("/")[0], [])) if s.rel not in chosen]
    staged += materialize(sorted({o.rel: o for o in shards}.values(), key=lambda x: x.rel), taken)
    return len(staged), problems


def fetch_whole(listing: Listing, o: ObjectInfo, dest: Path, settings: StorageSettings) -> None:
    """One listed object, whole, at dest (through the cache: a later staging re-uses it)."""
    fs, _ = filesystem(listing.url, settings.options)
    cache = Cache(settings.cache_dir)
    url = listing.url if listing.is_file else join_url(listing.url, o.rel)
    remote = listing.root if listing.is_file else listing.root + "/" + o.rel
    _link(cache.fetch(fs, remote, url, o, settings), dest)


def _parallel(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """fn over items, FETCH_THREADS at a time (transfers wait on the network, not the CPU); each
    result is the return value or the exception raised."""
    def safe(x: Any) -> Any:
        try:
            return fn(x)
        except Exception as e:  # noqa: BLE001 - handed back to the caller, which classifies it
            return e

    if len(items) <= 1:
        return [safe(x) for x in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(FETCH_THREADS, len(items)), thread_name_prefix="report-gen-fetch") as pool:
        return list(pool.map(safe, items))


def _shards(index: Path, siblings: list[ObjectInfo]) -> list[ObjectInfo]:
    """The shards a staged `*.index.json` names (its weight_map values) among the objects beside it."""
    by_name = {o.rel.rpartition("/")[2]: o for o in siblings}
    try:
        if index.stat().st_size > INDEX_MAX_BYTES:
            return []
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map") or {}
        return [by_name[s] for s in dict.fromkeys(map(str, weight_map.values())) if s in by_name]
    except (OSError, ValueError, AttributeError):
        return []  # the checkpoint reader reports a bad index itself
