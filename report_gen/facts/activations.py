"""Activation and attention facts: pure functions from one captured tensor to a few numbers.

These functions never decide whether a number is good or bad (that is the rules' job); they only
reduce a layer's output to statistics small enough to keep for every layer of a model.

Fixed definitions used below (reporting levels of the facts, not verdict thresholds):

* a unit is *active* at one (sample, position) when its output is > 0 (relu-like layers) or
  |output| > 1e-6 (every other kind); it is *dead* when active in fewer than 1% of the
  (sample × position) cells (SageMaker Debugger's definition);
* *saturated*: sigmoid output < 0.01 or > 0.99; tanh |output| > 0.99;
* channel pairs count as *highly correlated* when |corr| > 0.9;
* spatial concentration is the share of |activation| mass in the top 5% of positions.

`cells` tells how much evidence a layer's per-unit numbers rest on: with fewer than 100 cells
"active in fewer than 1%" simply means "never active in this batch".
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

#: module class name -> activation kind; anything not listed is "other".
ACTIVATION_KINDS: dict[str, str] = {
    **dict.fromkeys(
        ["ReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "ELU", "CELU", "SELU", "GELU", "SiLU",
         "Mish", "Hardswish", "Softplus"], "relu-like"),
    **dict.fromkeys(["Sigmoid", "Hardsigmoid"], "sigmoid"),
    **dict.fromkeys(["Tanh", "Hardtanh", "Softsign"], "tanh"),
    **dict.fromkeys(["Softmax", "Softmax2d"], "softmax"),
    **dict.fromkeys(
        ["Linear", "LazyLinear", "Bilinear", "NonDynamicallyQuantizableLinear", "Conv1d", "Conv2d",
         "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "LazyConv1d",
         "LazyConv2d", "LazyConv3d"], "linear"),
}

_ACTIVE_EPS = 1e-6          # |x| above this counts as active for non-relu kinds
_DEAD_ACTIVE_FRAC = 0.01    # a unit active in fewer than 1% of cells is dead
_SATURATION_MARGIN = 0.01   # sigmoid < 0.01 or > 0.99, tanh |x| > 0.99
_HIGH_CORR = 0.9            # reporting level for channel_corr_high_frac
_TOP_POSITIONS = 0.05       # spatial_concentration: share of mass in the top 5% positions
_MAX_CORR_CHANNELS = 256    # channel correlation is computed on at most this many channels...
_MAX_CORR_POSITIONS = 16384  # ...and this many (sample, position) columns (evenly strided)
_MAX_MAP_SIDE = 64          # stored maps are average-pooled down to at most 64 x 64


@dataclass
class ActivationStats:
    """Statistics of one layer's output for one probe batch (see the module docstring)."""

    layer: str
    module_type: str
    kind: str
    shape: tuple[int, ...]
    units: int
    cells: int  # (sample, position) cells per unit: how much evidence the per-unit numbers rest on
    mean: float
    std: float
    min: float
    max: float
    abs_mean: float
    dead_unit_frac: float
    unit_active_frac: np.ndarray
    saturated_frac: float
    inter_batch_var: float
    intra_batch_var: float
    channel_corr_mean: float
    channel_corr_high_frac: float
    spatial_concentration: float | None
    maps: np.ndarray | None


@dataclass
class AttentionStats:
    """Per-head statistics of one attention module's weights (N, heads, L, S)."""

    layer: str
    heads: int
    seq_len: int
    entropy: np.ndarray
    max_weight: np.ndarray
    maps: np.ndarray | None


@dataclass
class ProbeResult:
    """Everything one probe pass produced: per-layer activation and attention statistics."""

    activations: dict[str, ActivationStats] = field(default_factory=dict)
    attention: dict[str, AttentionStats] = field(default_factory=dict)
    input_description: str = ""
    load_report: dict | None = None
    batchnorm_batch_stats: list[str] = field(default_factory=list)  # BN layers run on batch statistics


def activation_kind(module_type: str) -> str:
    """Kind of an activation module class name: relu-like, sigmoid, tanh, softmax, linear or other."""
    return ACTIVATION_KINDS.get(module_type, "other")


def unit_dim(shape: tuple[int, ...], module_type: str) -> int:
    """Which dimension holds the units of an output of this shape.

    (N, F) and (N, C, ...) image/volume outputs: dim 1. Three-dimensional outputs are ambiguous:
    (N, C, L) for 1-d convolutions, pools and norms (class names ending in "1d"), else a sequence
    (N, L, F) whose units are the last dimension.
    """
    if len(shape) == 3 and not module_type.endswith("1d"):
        return 2
    return 1


def activation_stats(layer: str, module_type: str, output: torch.Tensor, *,
                     max_maps: int = 4) -> ActivationStats:
    """Reduce one layer output (batch first) to an ActivationStats.

    `output` is at least 2-d (N, ...); `max_maps` channel maps of sample 0 are kept for 4-d outputs.
    Variances and std use the unbiased estimator (torch's default, as in the seed tutorial).
    Raises ValueError for an empty or less than 2-d tensor.
    """
    x = output.detach().float()
    if x.ndim < 2 or x.numel() == 0:
        raise ValueError(f"{layer}: expected a non-empty batch-first tensor, got shape {tuple(x.shape)}")
    kind = activation_kind(module_type)
    units_first = x.movedim(unit_dim(tuple(x.shape), module_type), 0)
    per_unit = units_first.reshape(units_first.shape[0], -1)
    active_frac = _unit_active_frac(per_unit, kind)
    corr_mean, corr_high = _channel_correlation(per_unit)
    return ActivationStats(
        layer=layer,
        module_type=module_type,
        kind=kind,
        shape=tuple(x.shape),
        units=int(per_unit.shape[0]),
        cells=int(per_unit.shape[1]),
        mean=float(x.mean()),
        std=float(x.std()) if x.numel() > 1 else math.nan,
        min=float(x.min()),
        max=float(x.max()),
        abs_mean=float(x.abs().mean()),
        dead_unit_frac=float((active_frac < _DEAD_ACTIVE_FRAC).float().mean()),
        unit_active_frac=active_frac.numpy().astype(np.float64),
        saturated_frac=_saturated_frac(x, kind),
        inter_batch_var=_batch_var(x, dim=0),
        intra_batch_var=_batch_var(x, dim=1),
        channel_corr_mean=corr_mean,
        channel_corr_high_frac=corr_high,
        spatial_concentration=_spatial_concentration(x) if x.ndim == 4 else None,
        maps=_channel_maps(x, max_maps) if x.ndim == 4 else None,
    )


def _unit_active_frac(per_unit: torch.Tensor, kind: str) -> torch.Tensor:
    """(units,) fraction of (sample, position) cells where each unit is active."""
    active = per_unit > 0 if kind == "relu-like" else per_unit.abs() > _ACTIVE_EPS
    return active.float().mean(dim=1)


def _saturated_frac(x: torch.Tensor, kind: str) -> float:
    """Fraction of outputs pinned at the limits of a sigmoid or tanh; nan for other kinds."""
    if kind == "sigmoid":
        return float(((x < _SATURATION_MARGIN) | (x > 1 - _SATURATION_MARGIN)).float().mean())
    if kind == "tanh":
        return float((x.abs() > 1 - _SATURATION_MARGIN).float().mean())
    return math.nan


def _batch_var(x: torch.Tensor, dim: int) -> float:
    """Mean of the variance along `dim` of the (N, features) flattening; nan if that dim has < 2."""
    flat = x.reshape(x.shape[0], -1)
    if flat.shape[dim] < 2:
        return math.nan
    return float(flat.var(dim=dim).mean())


def even_indices(n: int, cap: int) -> np.ndarray:
    """All indices 0..n-1 when n <= cap, else `cap` (>= 2) evenly spaced ones, first and last included."""
    if n <= cap:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max(cap, 2)).round().astype(np.int64))


def _channel_correlation(per_unit: torch.Tensor) -> tuple[float, float]:
    """Mean off-diagonal |corr| between unit responses and the fraction of pairs above 0.9.

    Constant units are left out; nan when fewer than two non-constant units, or fewer than 3
    (sample, position) columns (two points are always perfectly correlated).
    """
    rows = torch.from_numpy(even_indices(per_unit.shape[0], _MAX_CORR_CHANNELS))
    cols = torch.from_numpy(even_indices(per_unit.shape[1], _MAX_CORR_POSITIONS))
    m = per_unit[rows][:, cols].double()
    if m.shape[1] < 3:
        return math.nan, math.nan
    centred = m - m.mean(dim=1, keepdim=True)
    norms = centred.norm(dim=1)
    centred = centred[norms > 0] / norms[norms > 0, None]
    if centred.shape[0] < 2:
        return math.nan, math.nan
    corr = (centred @ centred.T).abs()
    iu = torch.triu_indices(corr.shape[0], corr.shape[0], offset=1)
    pairs = corr[iu[0], iu[1]]
    return float(pairs.mean()), float((pairs > _HIGH_CORR).double().mean())


def _spatial_concentration(x: torch.Tensor) -> float:
    """Mean over (sample, channel) maps of the |activation| share held by the top 5% positions.

    Maps with no mass at all are left out; nan when every map is all zero.
    """
    mass = x.abs().reshape(x.shape[0] * x.shape[1], -1)
    k = max(1, math.ceil(_TOP_POSITIONS * mass.shape[1]))
    total = mass.sum(dim=1)
    top = mass.topk(k, dim=1).values.sum(dim=1)
    keep = total > 0
    return float((top[keep] / total[keep]).mean()) if bool(keep.any()) else math.nan


def _channel_maps(x: torch.Tensor, max_maps: int) -> np.ndarray | None:
    """Up to max_maps channel maps of sample 0 as float32 (C', H', W'), pooled to at most 64 x 64."""
    if max_maps <= 0:
        return None
    maps = x[0, :max_maps]
    h, w = maps.shape[-2:]
    if h > _MAX_MAP_SIDE or w > _MAX_MAP_SIDE:
        maps = F.adaptive_avg_pool2d(maps, (min(h, _MAX_MAP_SIDE), min(w, _MAX_MAP_SIDE)))
    return maps.numpy().astype(np.float32, copy=True)


def attention_stats(layer: str, weights: torch.Tensor) -> AttentionStats:
    """Per-head entropy and peak of attention weights (N, heads, L, S); (N, L, S) counts as 1 head.

    entropy: mean over samples and query rows of the row entropy divided by log(S), so 1 means
    uniform attention and 0 one-hot; nan when S == 1. Fully masked (NaN) rows are ignored.
    max_weight: mean of each row's largest weight. maps: sample 0, L and S capped at 64.
    """
    w = weights.detach().float()
    if w.ndim == 3:
        w = w.unsqueeze(1)
    if w.ndim != 4 or w.numel() == 0:
        raise ValueError(f"{layer}: expected attention weights (N, heads, L, S), got {tuple(weights.shape)}")
    seq_s = w.shape[-1]
    row_entropy = -torch.special.xlogy(w, w).sum(dim=-1)
    entropy = (torch.nanmean(row_entropy / math.log(seq_s), dim=(0, 2)) if seq_s > 1
               else torch.full((w.shape[1],), math.nan))
    return AttentionStats(
        layer=layer,
        heads=int(w.shape[1]),
        seq_len=int(w.shape[2]),
        entropy=entropy.numpy().astype(np.float64),
        max_weight=torch.nanmean(w.amax(dim=-1), dim=(0, 2)).numpy().astype(np.float64),
        maps=w[0, :, :_MAX_MAP_SIDE, :_MAX_MAP_SIDE].numpy().astype(np.float32, copy=True),
    )
