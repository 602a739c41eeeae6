"""Data the readers hand to the rest of report_gen (contract between readers and facts/engine).

Readers never know a rule exists: they only turn files into these containers plus a list of
`Problem`s describing damage they worked around.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

from report_gen.core import Problem

if TYPE_CHECKING:
    import pandas as pd

SCALAR_COLUMNS = ["run", "tag", "step", "wall_time", "value"]
SCALAR_DTYPES = {"run": "str", "tag": "str", "step": "int64", "wall_time": "float64", "value": "float64"}
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")  # state, not trained parameters


@dataclass
class HistogramSeries:
    """All values logged for one histogram tag, ordered by step (after the restart policy).

    min/max/num/sum/sum_squares are exact statistics from the HistogramProto (or derived from the
    TF2 [k, 3] tensor form: num = sum(counts); sum ≈ Σ count·centre; min/max = first/last
    non-empty edges). `limits[i]` are the right bucket edges of step i, `counts[i]` their counts
    (bucket edges can differ from step to step, so they are kept per step).
    """

    tag: str
    steps: np.ndarray  # int64 (n,)
    wall_times: np.ndarray  # float64 (n,)
    min: np.ndarray  # float64 (n,)
    max: np.ndarray
    num: np.ndarray
    sum: np.ndarray
    sum_squares: np.ndarray
    limits: list[np.ndarray] = field(default_factory=list)  # right edges per step
    counts: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return int(len(self.steps))

    @property
    def mean(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.num > 0, self.sum / np.maximum(self.num, 1), np.nan)

    @property
    def rms(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.sqrt(np.where(self.num > 0, self.sum_squares / np.maximum(self.num, 1), np.nan))

    @property
    def std(self) -> np.ndarray:
        m = self.mean
        with np.errstate(invalid="ignore"):
            return np.sqrt(np.maximum(self.rms**2 - m**2, 0.0))


@dataclass
class ImageRef:
    """A logged image, kept encoded; `load()` decodes it lazily (PNG bytes)."""

    tag: str
    step: int
    width: int
    height: int
    encoded: bytes

    def png_bytes(self) -> bytes:
        return self.encoded


def scalar_key(run: str, tag: str) -> str:
    """How a scalar series is named outside its RunLog: `<sub>/<tag>`, or the tag for the run folder itself."""
    return f"{run}/{tag}" if run else tag


@dataclass(frozen=True)
class DroppedSeries:
    """A series a reader read but the run log left out, and why (the report lists it as ignored).

    kind: "scalar" | "histogram" | "image" | "text"; key: `scalar_key` of a scalar, else the family key;
    source: the reader's label; points: how many values it held.
    """

    kind: str
    key: str
    source: str
    points: int
    reason: str


@dataclass
class ScalarSeries:
    """The values of one scalar series (one tag in one sub-folder), in the order its log gave them."""

    run: str
    tag: str
    steps: np.ndarray  # int64
    wall_times: np.ndarray  # float64
    values: np.ndarray  # float64

    def __len__(self) -> int:
        return int(self.steps.size)


class ScalarTable:
    """The scalar series of one run, one per (run, tag), sorted by run then tag; numpy only.

    Several pieces of one (run, tag) are joined in the order given. ``frame()`` is the tidy pandas
    form (columns `SCALAR_COLUMNS`, rows by run, tag, then the series' own order), built on first use:
    reading and judging a run never needs pandas, whose import alone costs a third of a second.
    """

    def __init__(self, series: Iterable[ScalarSeries] = ()) -> None:
        pieces: dict[tuple[str, str], list[ScalarSeries]] = {}
        for one in series:
            pieces.setdefault((str(one.run), str(one.tag)), []).append(one)
        self.series: list[ScalarSeries] = []
        for (run, tag) in sorted(pieces):
            group = pieces[(run, tag)]
            if len(group) == 1:
                one = group[0]
                self.series.append(ScalarSeries(run, tag, np.asarray(one.steps, dtype=np.int64),
                                                np.asarray(one.wall_times, dtype=np.float64),
                                                np.asarray(one.values, dtype=np.float64)))
            else:
                self.series.append(ScalarSeries(run, tag, *(np.concatenate([np.asarray(getattr(g, a), dtype=d)
                                                                            for g in group])
                                                            for a, d in (("steps", np.int64),
                                                                         ("wall_times", np.float64),
                                                                         ("values", np.float64)))))
        self._frame: pd.DataFrame | None = None

    def __len__(self) -> int:
        """The number of values (rows of the tidy frame)."""
        return sum(len(s) for s in self.series)

    @property
    def empty(self) -> bool:
        return not any(len(s) for s in self.series)

    def frame(self) -> "pd.DataFrame":
        """The tidy DataFrame (cached): columns `SCALAR_COLUMNS` with `SCALAR_DTYPES`."""
        if self._frame is None:
            import pandas as pd

            present = [s for s in self.series if len(s)]
            if not present:
                frame = pd.DataFrame({c: pd.Series(dtype=SCALAR_DTYPES[c]) for c in SCALAR_COLUMNS})
            else:
                frame = pd.DataFrame({
                    "run": np.repeat(np.array([s.run for s in present], dtype=object), [len(s) for s in present]),
                    "tag": np.repeat(np.array([s.tag for s in present], dtype=object), [len(s) for s in present]),
                    "step": np.concatenate([s.steps for s in present]),
                    "wall_time": np.concatenate([s.wall_times for s in present]),
                    "value": np.concatenate([s.values for s in present])})
            self._frame = tidy_scalars(frame)
        return self._frame

    @classmethod
    def from_frame(cls, frame: "pd.DataFrame") -> "ScalarTable":
        """The table of a tidy scalar frame (any row order: each (run, tag) keeps its rows' order)."""
        if frame is None or frame.empty:
            return cls()
        frame = tidy_scalars(frame)
        runs, tags = frame["run"].to_numpy(dtype=object), frame["tag"].to_numpy(dtype=object)
        keys = list(zip(runs.tolist(), tags.tolist()))
        index: dict[tuple[str, str], int] = {}
        codes = np.array([index.setdefault(k, len(index)) for k in keys], dtype=np.int64)
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(index) + 1))
        steps, walls, values = (frame[c].to_numpy(dtype=d) for c, d in
                                (("step", np.int64), ("wall_time", np.float64), ("value", np.float64)))
        return cls(ScalarSeries(run, tag, steps[rows], walls[rows], values[rows])
                   for (run, tag), rows in ((k, order[bounds[i]:bounds[i + 1]]) for k, i in index.items()))

    def step_range(self) -> tuple[int, int] | None:
        present = [s for s in self.series if len(s)]
        if not present:
            return None
        return min(int(s.steps.min()) for s in present), max(int(s.steps.max()) for s in present)

    def tag_count(self) -> int:
        """Distinct tags (the same tag in two sub-folders counts once)."""
        return len({s.tag for s in self.series if len(s)})


@dataclass
class RunLog:
    """Everything read from the logs of one run, whatever wrote them (TensorBoard event files are one
    log reader of `readers.registry`; add_scalars siblings already regrouped).

    table: the scalar series (`ScalarTable`); ``scalars`` is its tidy DataFrame (built on first use, and
             assignable: a frame set there becomes the table) with columns SCALAR_COLUMNS; `run` is the sub-folder the value came
             from ("" for the run folder itself, e.g. "activation_stats_conv1_mean" for an
             add_scalars sibling or "validation" for Keras). Rows sorted by run and tag
             (alphabetically), then step, then write order: row order says nothing about model depth.
    histograms: tag -> HistogramSeries. Keys are in WRITE ORDER (order of first appearance: sub-folders
             sorted, "" first; then files in merge order; then records in file order), NOT
             alphabetical. Loggers write per-layer histograms from the input layer to the output layer,
             so consumers may take key order as model depth (input first).
    images: tag -> list[ImageRef] (ordered by step); keys in write order, as for histograms
    texts: tag -> list[(step, text)]; keys in write order, as for histograms
    hparams: flat dict of hyper-parameters found in hparams plugin data (may be empty)
    problems: damage found while reading (truncation, CRC errors, junk, restarts...)
    files: the log files read, in merge order
    source: the label of the reader that read this log ("TensorBoard"; `registry.read_logs` sets it)
    sources: (kind, key) -> source of each series when several readers' logs were merged (kind and key
             as in `DroppedSeries`); `source_of` falls back to `source`
    dropped: series read but left out (a second copy of one series, `registry.merge_logs`)
    weight_shapes: histogram key -> the shape of the weight it summarises, in torch's layout (out, in,
             *kernel), when the log itself says it (a Keras model config: readers/keras_config.py); a
             histogram carries no shape
    """

    table: ScalarTable = field(default_factory=ScalarTable)
    histograms: dict[str, HistogramSeries] = field(default_factory=dict)
    images: dict[str, list[ImageRef]] = field(default_factory=dict)
    texts: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    hparams: dict[str, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    source: str = ""
    sources: dict[tuple[str, str], str] = field(default_factory=dict)
    dropped: list[DroppedSeries] = field(default_factory=list)
    weight_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def source_of(self, kind: str, key: str) -> str:
        return self.sources.get((kind, key), self.source)

    @property
    def scalars(self) -> "pd.DataFrame":
        return self.table.frame()

    @scalars.setter
    def scalars(self, frame: "pd.DataFrame") -> None:
        self.table = ScalarTable.from_frame(frame)

    @classmethod
    def empty(cls) -> "RunLog":
        return cls()


def tidy_scalars(frame: "pd.DataFrame") -> "pd.DataFrame":
    """`frame` with exactly the RunLog scalar columns, in order, and their dtypes."""
    return frame.astype(SCALAR_DTYPES)[SCALAR_COLUMNS]


@dataclass
class TensorInfo:
    """One tensor of a checkpoint. role: "param" (trainable weight) or "buffer" (running_mean,
    running_var, num_batches_tracked, integer tensors, or a module's `_buffers`)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    role: str = "param"


@dataclass
class CheckpointData:
    """One checkpoint file, opened lazily.

    path: the file (or the folder for sharded safetensors / HF folders)
    step: training step/epoch found inside the file, or in its name, or None
    step_source: "content" | "filename" | "mtime"
    format: "torch-zip" | "torch-legacy" | "safetensors" | "safetensors-sharded" | "torchscript" | ...
    tensors: parameter name -> TensorInfo for model parameters/buffers (prefixes stripped)
    load(name) -> torch.Tensor (float32 on CPU) for one tensor, loaded on demand, never the whole file
    optimizer: optional dict with keys "kind" ("adam", "sgd", ...), "grad_rms": {param: float},
               "mapping": "names-in-file" | "shapes-verified" | "unique-shapes" | "ambiguous" | "unmapped" | "not-read"
               (param groups only, no tensor read: `optimizer_groups`), "step": int | None,
               "order": where the entry order came from: "file" | "structure" | "architecture" | None
               (readers/checkpoint/order.py)
               "lrs": the `lr` of every param group (the scheduler's value at save time), "group_params": how many
               parameters the param groups hold, "state_entries": how many of them have optimizer state (moments)
    metadata: small plain values found beside the weights (epoch, global_step, hyper_parameters...);
              "aliases"/"alias_count" when a tensor was saved under several names (only the first is kept),
              "tensor_order" for HF folders of safetensors ("architecture" when put back in model order)
    problems: Problems found (e.g. unsafe globals replaced by placeholders)
    weights_at: the key path of the weights inside the saved object ("model_state", "nets/generator"; ""
                for the file itself: a plain state_dict, a safetensors file)
    """

    path: str
    step: int | None
    step_source: str
    format: str
    tensors: dict[str, TensorInfo]
    load: Callable[[str], Any]
    optimizer: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    mtime: float = 0.0
    weights_at: str = ""
