"""Data the readers hand to the rest of report_gen (contract between readers and facts/engine).

Readers never know a rule exists: they only turn files into these containers plus a list of
`Problem`s describing damage they worked around.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from report_gen.core import Problem

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
class RunLog:
    """Everything read from the logs of one run, whatever wrote them (TensorBoard event files are one
    log reader of `readers.registry`; add_scalars siblings already regrouped).

    scalars: tidy DataFrame with columns SCALAR_COLUMNS; `run` is the sub-folder the value came
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

    scalars: pd.DataFrame
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

    @classmethod
    def empty(cls) -> "RunLog":
        return cls(scalars=pd.DataFrame({c: pd.Series(dtype=SCALAR_DTYPES[c]) for c in SCALAR_COLUMNS}))


def tidy_scalars(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with exactly the RunLog scalar columns, in order, and their dtypes."""
    return frame.astype(SCALAR_DTYPES)[SCALAR_COLUMNS]


def series_in_order(scalars: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted by run, then tag (stable: each series keeps its own order, as its log gave it)."""
    runs = pd.factorize(scalars["run"], sort=True)[0]
    tags = pd.factorize(scalars["tag"], sort=True)[0]
    return tidy_scalars(scalars.iloc[np.lexsort((tags, runs))].reset_index(drop=True))


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
