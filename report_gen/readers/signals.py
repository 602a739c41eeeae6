"""Tag → signal mapping (DESIGN §6): which logged series is the training loss, which histogram is the
gradient of which parameter, and so on.

The mapping is by convention and configurable (`TagConventions`); it never reads files itself: it takes
the `RunLog` of one run and returns `Signals`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from report_gen.readers.types import HistogramSeries, ImageRef, RunLog
from report_gen.vocab import FAMILY_SIGNALS, SCALAR_SIGNALS, WRITTEN, Signal, TagConventions

__all__ = ["Series", "Signals", "TagConventions", "build_signals", "is_evaluation_series", "param_name"]

VAL_WORDS = {"val", "valid", "validation", "eval", "evaluation", "test", "dev", "holdout"}
TRAIN_WORDS = {"train", "training"}
_SPLIT = re.compile(r"[/_\-.\s:]+")


@dataclass
class Series:
    tag: str
    steps: np.ndarray
    values: np.ndarray
    wall_times: np.ndarray | None = None

    def __len__(self) -> int:
        return int(len(self.steps))


@dataclass
class Signals:
    train_loss: Series | None = None
    val_loss: Series | None = None
    train_acc: Series | None = None
    val_acc: Series | None = None
    lr: Series | None = None
    grad_norm: Series | None = None
    other_losses: dict[str, Series] = field(default_factory=dict)
    other_scalars: dict[str, Series] = field(default_factory=dict)
    weight_hist: dict[str, HistogramSeries] = field(default_factory=dict)
    grad_hist: dict[str, HistogramSeries] = field(default_factory=dict)
    act_hist: dict[str, HistogramSeries] = field(default_factory=dict)
    act_stats: dict[str, dict[str, Series]] = field(default_factory=dict)  # layer -> mean/std/max/min
    update_ratio: dict[str, Series] = field(default_factory=dict)
    grad_norm_param: dict[str, Series] = field(default_factory=dict)
    dynamics: dict[str, Series] = field(default_factory=dict)
    kernel_images: dict[str, list[ImageRef]] = field(default_factory=dict)
    act_images: dict[str, list[ImageRef]] = field(default_factory=dict)
    other_images: dict[str, list[ImageRef]] = field(default_factory=dict)
    texts: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    hparams: dict = field(default_factory=dict)

    def present(self) -> list[Signal]:
        """The signals read from the logs (each is the attribute of the same name)."""
        return [sig for sig in SCALAR_SIGNALS if getattr(self, sig.value) is not None] + \
            [sig for sig in FAMILY_SIGNALS if getattr(self, sig.value)]


def param_name(raw: str) -> str:
    """`layer1/0/conv1/weight` → `layer1.0.conv1.weight` (DESIGN §6: `/` may stand for `.`)."""
    return raw.strip("/").replace("/", ".")


def _tokens(text: str) -> list[str]:
    return [t for t in _SPLIT.split(text.lower()) if t]


def _phase(tag: str, sub: str) -> str:
    toks = set(_tokens(tag)) | set(_tokens(sub))
    return "val" if toks & VAL_WORDS else "train"


def is_evaluation_series(tag: str, sub: str = "") -> bool:
    """A series an evaluation pass writes: its tag or folder names a validation phase (val, eval, test, ...),
    or it is an epoch counter (the HF Trainer logs `epoch` with every evaluation's metrics)."""
    toks = _tokens(tag)
    return _phase(tag, sub) == "val" or (bool(toks) and toks[-1] == "epoch")


_LIGHTNING_SUFFIXES = ("_epoch", "_step")  # self.log(name, on_step=True, on_epoch=True) writes both


def lightning_base(tag: str) -> tuple[str, str | None]:
    """(`train_loss`, `epoch`) for Lightning's `train_loss_epoch`; (tag, None) for any other tag."""
    low = tag.lower()
    for suffix in _LIGHTNING_SUFFIXES:
        if low.endswith(suffix) and len(tag) > len(suffix):
            return tag[: -len(suffix)], suffix[1:]
    return tag, None


def _metric(tag: str) -> str | Signal | None:
    """"loss" or "acc" (the phase decides which signal), Signal.LR, Signal.GRAD_NORM, or None."""
    base, suffix = lightning_base(tag)
    if suffix is not None and _metric(base) in ("loss", "acc"):
        return _metric(base)  # DESIGN §6: Lightning's _step/_epoch series of a loss are that loss
    toks = _tokens(tag)
    if not toks:
        return None
    last = toks[-1]
    parts = [p for p in tag.lower().split("/") if p]
    # DESIGN §6: a loss is a tag whose last part ends in "loss" (train/box_loss, Logloss), or the
    # `loss/<phase>` shape; `train/loss_scale` (AMP's scaler) is not a loss
    if parts[-1].endswith("loss") or (len(parts) >= 2 and parts[0] == "loss") \
            or (len(parts) >= 2 and parts[-2].endswith("loss") and set(_tokens(parts[-1])) <= VAL_WORDS | TRAIN_WORDS):
        return "loss"
    if last in {"acc", "accuracy", "top1"} or last.endswith("accuracy") or toks[0] in {"acc", "accuracy"} \
            or (len(toks) >= 2 and toks[-2:] == ["acc", "top1"]):
        return "acc"
    if last in {"lr", "learning", "rate"} and ("lr" in toks or "learning" in toks) or toks[0] == "lr":
        return Signal.LR
    if toks[-2:] == ["grad", "norm"] or toks[-2:] == ["gradient", "norm"]:
        return Signal.GRAD_NORM
    return None


# (metric, phase) -> the signal its best candidate becomes
_ROLES = {("loss", "train"): Signal.TRAIN_LOSS, ("loss", "val"): Signal.VAL_LOSS,
          ("acc", "train"): Signal.TRAIN_ACC, ("acc", "val"): Signal.VAL_ACC}


# Exact conventional tags, preferred over the generic "ends with loss" match.
_PREFERRED = {
    ("loss", "train"): [WRITTEN.train_loss, "loss/train", "train_loss", "training/loss", "loss", "epoch_loss"],
    ("loss", "val"): [WRITTEN.val_loss, "loss/val", "val_loss", "eval/loss", "validation/loss", "test/loss",
                      "loss/validation", "valid/loss", "epoch_loss", "evaluation_loss_vs_iterations"],
    ("acc", "train"): [WRITTEN.train_acc, "acc/train", "train_acc", "train/accuracy", "accuracy/train",
                       "train_accuracy", "accuracy", "acc", "epoch_accuracy"],
    ("acc", "val"): [WRITTEN.val_acc, "acc/val", "val_acc", "val/accuracy", "accuracy/val", "val_accuracy",
                     "eval/accuracy", "test/acc", "test/accuracy", "epoch_accuracy"],
}


def _rank(metric: str, phase: str, tag: str, n: int) -> tuple:
    """Conventional names first; Lightning's `<name>_epoch` series (one point per epoch: the trend) next to
    its `<name>`, before `<name>_step` (per batch: kept among the other series, for spikes)."""
    pref = _PREFERRED.get((metric, phase), [])
    base, suffix = lightning_base(tag)
    t = base.lower()
    return (pref.index(t) if t in pref else len(pref), {None: 0, "epoch": 1, "step": 2}[suffix], -n, tag.lower())


def build_signals(data: RunLog, conv: TagConventions = TagConventions()) -> Signals:
    sig = Signals(hparams=dict(data.hparams), texts=dict(data.texts))
    _map_scalars(data, conv, sig)
    _map_histograms(data, conv, sig)
    _map_images(data, conv, sig)
    return sig


def _series_groups(data: RunLog):
    df = data.scalars
    if df is None or df.empty:
        return
    for (sub, tag), g in df.groupby(["run", "tag"], sort=False):
        yield str(sub), str(tag), Series(tag if not sub else f"{sub}/{tag}",
                                         g["step"].to_numpy(np.int64), g["value"].to_numpy(np.float64),
                                         g["wall_time"].to_numpy(np.float64))


def _match_prefix(tag: str, prefixes: tuple[str, ...]) -> str | None:
    low = tag.lower()
    for p in prefixes:
        if low.startswith(p.lower()) and len(tag) > len(p):
            return tag[len(p):]
    return None


def _map_scalars(data: RunLog, conv: TagConventions, sig: Signals) -> None:
    candidates: dict[tuple[str, str], list[Series]] = {}
    for sub, tag, s in _series_groups(data):
        # torch add_scalars: sub folder "<main_tag with / -> _>_<key>", tag = main_tag
        key = None
        flat = tag.replace("/", "_")
        if sub and sub.startswith(flat + "_"):
            key = sub[len(flat) + 1:]
        if key is not None:
            layer = _match_prefix(tag, conv.act_stats)
            if layer is not None:
                sig.act_stats.setdefault(layer, {})[key.lower()] = Series(f"{tag}/{key}", s.steps, s.values, s.wall_times)
                continue
            tag, sub = f"{tag}/{key}", ""
            s = Series(tag, s.steps, s.values, s.wall_times)
        for prefixes, target in ((conv.update_ratio, sig.update_ratio), (conv.grad_norm_param, sig.grad_norm_param),
                                 (conv.dynamics, sig.dynamics)):
            rest = _match_prefix(tag, prefixes)
            if rest is not None:
                target[param_name(rest)] = s
                break
        else:
            layer_stat = _match_prefix(tag, conv.act_stats)
            if layer_stat is not None and "/" in layer_stat:
                layer, stat = layer_stat.rsplit("/", 1)
                sig.act_stats.setdefault(layer, {})[stat.lower()] = s
                continue
            metric = _metric(tag)
            if metric in ("loss", "acc"):
                candidates.setdefault((metric, _phase(tag, sub)), []).append((tag, s))
            elif metric == Signal.LR and (sig.lr is None or len(s) > len(sig.lr)):
                sig.lr = s
            elif metric == Signal.GRAD_NORM and (sig.grad_norm is None or len(s) > len(sig.grad_norm)):
                sig.grad_norm = s
            else:
                sig.other_scalars[s.tag] = s
    for (metric, phase), group in candidates.items():
        group.sort(key=lambda ts: _rank(metric, phase, ts[0], len(ts[1])))
        setattr(sig, _ROLES[(metric, phase)].value, group[0][1])
        rest = sig.other_losses if metric == "loss" else sig.other_scalars
        for _, s in group[1:]:
            rest[s.tag] = s


def _map_histograms(data: RunLog, conv: TagConventions, sig: Signals) -> None:
    for key, h in data.histograms.items():
        tag = key
        if "/" in key:
            head = key.split("/", 1)[0]
            if head.lower() in TRAIN_WORDS | VAL_WORDS:
                tag = key.split("/", 1)[1]
        for prefixes, target, as_param in ((conv.weight_hist, sig.weight_hist, True),
                                           (conv.grad_hist, sig.grad_hist, True),
                                           (conv.act_hist, sig.act_hist, False)):
            rest = _match_prefix(tag, prefixes)
            if rest is not None:
                target[param_name(rest) if as_param else rest] = h
                break
        else:
            low = tag.lower()
            suffix = next((x for x in conv.grad_suffixes if low.endswith(x)), None)
            if suffix is not None:
                sig.grad_hist[param_name(tag[: -len(suffix)])] = h
            elif _tokens(tag) and _tokens(tag)[-1] in {"weight", "bias"}:
                sig.weight_hist[param_name(tag)] = h
            # any other histogram is not a signal any rule reads


def _map_images(data: RunLog, conv: TagConventions, sig: Signals) -> None:
    for key, imgs in data.images.items():
        rest = _match_prefix(key, conv.kernel_images)
        if rest is not None:
            sig.kernel_images[param_name(rest)] = imgs
            continue
        rest = _match_prefix(key, conv.act_images)
        if rest is not None:
            sig.act_images[rest] = imgs
            continue
        sig.other_images[key] = imgs
