"""Tag → signal mapping (DESIGN §6): which logged series is the training loss, which histogram is the
gradient of which parameter, and so on.

The mapping is by convention and configurable (`TagConventions`, and a tag given a role by the user:
`[tool.report_gen.roles]`, `--role ROLE=TAG`); it never reads files itself: it takes the `RunLog` of one
run and returns `Signals`, which also say, series by series, what was read with which role
(`Signals.read`) and what was left out and why (`Signals.ignored`), for the report's "What was read".

Roles that hold on real loggers
-------------------------------
* A user's role wins: `train_loss = "my/total"` makes that series the training loss, whatever its name;
  `ignore` takes a series out. A role names a tag (with or without its sub folder, `validation/epoch_loss`)
  or a glob; of several matches the one with the most points.
* Lightning's `self.log(name, on_step=True, on_epoch=True)` writes `<name>_step` and `<name>_epoch`: both
  are that metric. The epoch series (one mean per epoch) is the signal, the trend the curve rules judge;
  the step series of the chosen loss stays in `other_losses` under its tag with the role
  "train_loss_steps" (per batch: spikes and NaN).
* A total loss is preferred over its components: a loss tag whose words, without phase words and
  `total`/`epoch`/`step`/`batch`/`avg`/`mean`, are just "loss" (`train/loss`, `Loss/train`, `total_loss`,
  `epoch_loss`, "training loss") is a total; any other `*_loss` is a component (`train/box_loss`).
  Components never become the loss while a total exists in the same phase.
* No total but several components logged at the same steps in one namespace (Ultralytics'
  `train/box_loss`, `train/cls_loss`, `train/dfl_loss`): the loss is their SUM, a series named
  `train/box_loss+cls_loss+dfl_loss`. The logged components are the already weighted terms the
  optimizer minimises (Ultralytics multiplies them by its box/cls/dfl gains before logging), so their
  sum is the training objective itself: picking one would call a plateau while another term still
  learns, or miss a blow-up in the term not picked. Components at different steps cannot be added:
  then the longest one is the loss (a lone `Logloss` is the loss).
* Reinforcement learning: in a run that logs episodes or rewards (`rollout/ep_rew_mean`, `eval/mean_reward`,
  `episode/Return`, `charts/episodic_return`) or RL loss terms (`entropy_loss`, `policy_loss`,
  `policy_gradient_loss`, `value_loss`, `actor_loss`, `critic_loss`, `qf1_loss`, `ent_coef_loss`), no loss is
  "the training loss": the data moves with the policy, so the value loss grows with the returns, a DQN's
  TD loss rises as Q-values grow and an entropy loss rises as the policy becomes less random, on healthy
  runs. They keep the role "rl_loss" (NaN/Inf still checked); map one with `--role` to judge it anyway.
* Keras weight histograms (`sequential/dense/kernel/histogram`, tf-keras `dense/kernel_0/histogram`) are
  the weight histograms of `sequential.dense.kernel` and `dense.kernel` (a Keras kernel is a weight). When
  the run logged its model config (the callback's `write_graph=True`, its default), the Dense and Conv
  kernels' shapes come with them (`Signals.weight_shapes`, readers/keras_config.py): the fan-in a
  histogram does not carry.
* Lightning's `grad_norm()` tags: `grad_2.0_norm_total` is the gradient norm, `grad_2.0_norm/<param>` the
  gradient norm of one parameter.
"""
from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from report_gen.readers.types import HistogramSeries, ImageRef, RunLog, scalar_key
from report_gen.vocab import FAMILY_SIGNALS, SCALAR_SIGNALS, WRITTEN, Role, Signal, TagConventions

__all__ = ["Series", "SeriesUse", "Signals", "TagConventions", "build_signals", "is_evaluation_series",
           "param_name", "phase_of"]

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


@dataclass(frozen=True)
class SeriesUse:
    """One logged series and what the report did with it (report.json `inputs.runs[].series` / `.ignored`).

    kind: "scalar" | "histogram" | "image" | "text"; tag: as the run names it (`<sub>/<tag>`);
    source: the reader's label ("TensorBoard"); points: values (histogram steps, images);
    role: a `Role` value for a series read, "" for one ignored; note: how it was made, or why it was ignored.
    """

    kind: str
    tag: str
    source: str
    points: int
    role: str = ""
    note: str = ""

    def to_dict(self) -> dict:
        d = {"tag": self.tag, "kind": self.kind, "source": self.source, "points": self.points}
        if self.role:
            d["role"] = self.role
        if self.note:
            d["note" if self.role else "reason"] = self.note
        return d


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
    # weight name (a `weight_hist` key) -> its shape in torch's layout, when the log gives it (RunLog.weight_shapes)
    weight_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    read: list[SeriesUse] = field(default_factory=list)  # every series given a role
    ignored: list[SeriesUse] = field(default_factory=list)  # every series left out, with the reason

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


def phase_of(sub: str) -> str:
    """"val" when a sub folder's name says validation (Keras `validation/`, TF `eval/`), else "train"."""
    return "val" if set(_tokens(sub)) & VAL_WORDS else "train"


_YOLO10_TERM = re.compile(r"(box|cls|dfl|seg|pose|kobj)_(om|oo)")  # YOLOv10's loss terms per head
_LIGHTNING_SUFFIXES = ("_epoch", "_step")  # self.log(name, on_step=True, on_epoch=True) writes both


def lightning_base(tag: str) -> tuple[str, str | None]:
    """(`train_loss`, `epoch`) for Lightning's `train_loss_epoch`; (tag, None) for any other tag."""
    low = tag.lower()
    for suffix in _LIGHTNING_SUFFIXES:
        if low.endswith(suffix) and len(tag) > len(suffix):
            return tag[: -len(suffix)], suffix[1:]
    return tag, None


def is_evaluation_series(tag: str, sub: str = "") -> bool:
    """A series an evaluation pass writes: its tag or folder names a validation phase (val, eval, test, ...),
    or it is an epoch counter (the HF Trainer logs `epoch` with every evaluation's metrics; Lightning's
    `train_loss_epoch` is a training loss, not a counter)."""
    toks = _tokens(tag)
    counter = bool(toks) and toks[-1] == "epoch" and lightning_base(tag)[1] is None
    return _phase(tag, sub) == "val" or counter


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
    # `loss/<phase>` shape, or YOLOv10's per-head terms (`train/box_om`, one-to-many; `train/cls_oo`,
    # one-to-one); `train/loss_scale` (AMP's scaler) is not a loss
    if parts[-1].endswith("loss") or (len(parts) >= 2 and parts[0] == "loss") or _YOLO10_TERM.fullmatch(parts[-1]) \
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


#: words that do not change which quantity a loss tag names ("train/total_loss" is the loss)
_TOTAL_NOISE = VAL_WORDS | TRAIN_WORDS | {"total", "epoch", "step", "batch", "avg", "mean", "running", "overall",
                                          "full", "all", "sum", "value", "objective"}
#: the loss terms of RL algorithms (SB3 A2C/PPO/DQN/SAC/TD3, CleanRL): never the training loss
_RL_TERMS = {"entropy", "policy", "policy_gradient", "pg", "value", "vf", "actor", "critic", "q", "qf", "qf1",
             "qf2", "ent_coef", "alpha", "td", "dqn"}
_RL_MARKERS = {"rollout", "ep_rew_mean", "ep_len_mean", "episodic_return", "episode_reward", "episode_reward_mean",
               "mean_reward", "episode_return", "ep_return", "episode_length"}
_RL_EPISODE = re.compile(r"(^|/)episode(s)?/(return|reward|length)", re.IGNORECASE)
_LIGHTNING_GRAD_NORM = re.compile(r"grad_(\d+(?:\.\d+)?|inf)_norm(?:_total|/(.+))", re.IGNORECASE)
_KERAS_WEIGHT = re.compile(r"(.+)/(kernel|bias|embeddings|gamma|beta|recurrent_kernel|depthwise_kernel|"
                           r"pointwise_kernel)(?:_\d+)?/histogram", re.IGNORECASE)
_COUNTERS = {"epoch", "step", "global_step", "iteration", "iter", "n_updates", "total_timesteps", "trainer/global_step",
             "train/epoch", "time/iterations", "time/total_timesteps", "train/n_updates"}
_TIMING = {"fps", "runtime", "samples_per_second", "steps_per_second", "time", "eta_seconds", "data_time",
           "time_elapsed", "total_flos", "train_runtime", "epoch_time", "throughput"}


def build_signals(data: RunLog, conv: TagConventions = TagConventions(),
                  roles: Mapping[str, Sequence[str]] | None = None) -> Signals:
    """The signals of one run. roles: a user's role -> tag patterns (`config.Config.roles`), applied first."""
    sig = Signals(hparams=dict(data.hparams), texts=dict(data.texts))
    _map_scalars(data, conv, sig, dict(roles or {}))
    _map_histograms(data, conv, sig)
    _map_images(data, conv, sig)
    for key, entries in data.texts.items():
        sig.ignored.append(SeriesUse("text", key, data.source_of("text", key), len(entries),
                                     note="text summaries are kept in the report, not judged"))
    for d in data.dropped:
        sig.ignored.append(SeriesUse(d.kind, d.key, d.source, d.points, note=d.reason))
    return sig


@dataclass
class _Entry:
    """One scalar series while roles are given."""

    sub: str
    tag: str  # the tag inside its sub folder (after add_scalars regrouping)
    series: Series
    source: str

    @property
    def name(self) -> str:
        return self.series.tag


def _series_groups(data: RunLog):
    for one in data.table.series:
        if not len(one):
            continue
        key = scalar_key(one.run, one.tag)
        yield one.run, one.tag, Series(key, one.steps, one.values, one.wall_times), data.source_of("scalar", key)


def _match_prefix(tag: str, prefixes: tuple[str, ...]) -> str | None:
    low = tag.lower()
    for p in prefixes:
        if low.startswith(p.lower()) and len(tag) > len(p):
            return tag[len(p):]
    return None


def _matches(pattern: str, entry: _Entry) -> bool:
    names = (entry.name, entry.tag)
    if any(c in pattern for c in "*?["):
        return any(fnmatch.fnmatchcase(n, pattern) for n in names)
    return pattern in names


def _loss_words(tag: str) -> list[str]:
    base, _ = lightning_base(tag)
    return [t for t in _tokens(base) if t not in _TOTAL_NOISE]


def _is_total(tag: str) -> bool:
    """A loss tag that names the whole loss, not one of its terms (see the module docstring)."""
    return _loss_words(tag) in (["loss"], ["losses"])


def _rl_term(tag: str) -> bool:
    """An RL algorithm's loss term: `train/entropy_loss`, `losses/value_loss`, `train/policy_gradient_loss`."""
    base, _ = lightning_base(tag)
    last = base.lower().rsplit("/", 1)[-1]
    for suffix in ("_loss", "loss"):
        if last.endswith(suffix) and len(last) > len(suffix):
            return last[: -len(suffix)].strip("_") in _RL_TERMS
    parts = base.lower().split("/")
    return len(parts) >= 2 and parts[-2] in {"losses", "loss"} and parts[-1] in _RL_TERMS


def _is_rl_run(entries: list[_Entry]) -> bool:
    for e in entries:
        low = e.tag.lower()
        parts = low.split("/")
        if parts[0] == "rollout" or parts[-1] in _RL_MARKERS or _RL_EPISODE.search(low) or \
                (_metric(e.tag) == "loss" and _rl_term(e.tag)):
            return True
    return False


def _namespace(tag: str) -> str:
    return tag.rsplit("/", 1)[0] if "/" in tag else ""


def _summed(group: list[_Entry]) -> Series | None:
    """The sum of several loss components logged at the same steps (None when they cannot be added)."""
    first = group[0].series
    if any(len(e.series) != len(first) or not np.array_equal(e.series.steps, first.steps) for e in group[1:]):
        return None
    ns = _namespace(group[0].name)
    lasts = [e.name.rsplit("/", 1)[-1] for e in group]
    name = (f"{ns}/" if ns else "") + "+".join(lasts)
    return Series(name, first.steps.copy(), np.sum([e.series.values for e in group], axis=0), first.wall_times)


def _ignore_reason(tag: str, rl: bool) -> str:
    low = tag.lower()
    last = low.rsplit("/", 1)[-1]
    words = set(_tokens(tag))
    if low in _COUNTERS or last in _COUNTERS:
        return "a counter (epoch, step), not a training signal"
    if last in _TIMING or words & {"fps", "runtime", "eta", "seconds", "second", "flos", "throughput"}:
        return "timing or throughput, not a training signal"
    if re.fullmatch(r"evaluation_.+_vs_iterations", last):
        return "Keras's copy of a validation metric against iterations (its epoch_ series is read)"
    if last == "hp_metric":
        return "the hparams plugin's metric (Lightning logs -1 until it is set), not a training curve"
    if rl and (words & {"rew", "reward", "return", "returns"} or low.startswith("rollout/")):
        return "a reward or episode statistic: no rule judges rewards"
    return "no rule reads it: not a loss, accuracy, learning rate or gradient norm by its name"


def _map_scalars(data: RunLog, conv: TagConventions, sig: Signals, roles: dict[str, Sequence[str]]) -> None:
    entries: list[_Entry] = []
    for sub, tag, s, source in _series_groups(data):
        # torch add_scalars: sub folder "<main_tag with / -> _>_<key>", tag = main_tag
        key = None
        flat = tag.replace("/", "_")
        if sub and sub.startswith(flat + "_"):
            key = sub[len(flat) + 1:]
        if key is not None:
            layer = _match_prefix(tag, conv.act_stats)
            if layer is not None:
                sig.act_stats.setdefault(layer, {})[key.lower()] = Series(f"{tag}/{key}", s.steps, s.values,
                                                                          s.wall_times)
                sig.read.append(SeriesUse("scalar", s.tag, source, len(s), Role.ACT_STATS.value, f"{layer}: {key}"))
                continue
            tag, sub = f"{tag}/{key}", ""
            s = Series(tag, s.steps, s.values, s.wall_times)
        entries.append(_Entry(sub, tag, s, source))

    def use(entry: _Entry, role: Role, note: str = "", series: Series | None = None) -> None:
        sig.read.append(SeriesUse("scalar", entry.name, entry.source, len(series or entry.series), role.value, note))

    # 1. the user's roles
    taken: set[int] = set()
    for role, patterns in roles.items():
        for pattern in patterns:
            hits = [e for e in entries if id(e) not in taken and _matches(pattern, e)]
            if role == "ignore":
                for e in hits:
                    taken.add(id(e))
                    sig.ignored.append(SeriesUse("scalar", e.name, e.source, len(e.series),
                                                 note=f"ignored by the configuration ({pattern})"))
                continue
            if not hits:
                continue
            best = max(hits, key=lambda e: (len(e.series), e.name))
            if getattr(sig, role) is None:
                setattr(sig, role, best.series)
                taken.add(id(best))
                use(best, Role(role), f"mapped by the configuration ({pattern})")
    rest = [e for e in entries if id(e) not in taken]
    rl = _is_rl_run(rest)

    # 2. families by prefix, learning rate, gradient norm; loss and accuracy candidates
    candidates: dict[tuple[str, str], list[_Entry]] = {}
    for e in rest:
        tag, s = e.tag, e.series
        family = next(((target, role, rest_) for prefixes, target, role in (
            (conv.update_ratio, sig.update_ratio, Role.UPDATE_RATIO),
            (conv.grad_norm_param, sig.grad_norm_param, Role.GRAD_NORM_PARAM),
            (conv.dynamics, sig.dynamics, Role.DYNAMICS)) if (rest_ := _match_prefix(tag, prefixes)) is not None), None)
        if family is not None:
            target, role, name = family
            target[param_name(name)] = s
            use(e, role)
            continue
        layer_stat = _match_prefix(tag, conv.act_stats)
        if layer_stat is not None and "/" in layer_stat:
            layer, stat = layer_stat.rsplit("/", 1)
            sig.act_stats.setdefault(layer, {})[stat.lower()] = s
            use(e, Role.ACT_STATS)
            continue
        lightning = _LIGHTNING_GRAD_NORM.fullmatch(tag)
        if lightning is not None and lightning.group(2):
            sig.grad_norm_param[param_name(lightning.group(2))] = s
            use(e, Role.GRAD_NORM_PARAM)
            continue
        metric = Signal.GRAD_NORM if lightning is not None else _metric(tag)
        if metric in ("loss", "acc"):
            candidates.setdefault((metric, _phase(tag, e.sub)), []).append(e)
        elif metric in (Signal.LR, Signal.GRAD_NORM):
            candidates.setdefault((metric, ""), []).append(e)
        else:
            sig.other_scalars[s.tag] = s
            sig.ignored.append(SeriesUse("scalar", e.name, e.source, len(s), note=_ignore_reason(tag, rl)))

    # 3. one series per role
    for (metric, phase), group in sorted(candidates.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        if metric in (Signal.LR, Signal.GRAD_NORM):
            group.sort(key=lambda e: (-len(e.series), e.name))
            if getattr(sig, metric.value) is None:  # not given by the user: the longest series
                setattr(sig, metric.value, group[0].series)
                use(group[0], Role(metric.value))
                group = group[1:]
            for e in group:
                sig.other_scalars[e.name] = e.series
                sig.ignored.append(SeriesUse("scalar", e.name, e.source, len(e.series),
                                             note=f"another {Role(metric.value).words} series; "
                                                  f"{getattr(sig, metric.value).tag} was read"))
            continue
        signal = _ROLES[(metric, phase)]
        if metric == "acc":
            _pick_accuracy(sig, signal, group, use)
        else:
            _pick_loss(sig, signal, phase, group, rl, use)


def _pick_accuracy(sig: Signals, signal: Signal, group: list[_Entry], use) -> None:
    group.sort(key=lambda e: _rank("acc", "val" if signal == Signal.VAL_ACC else "train", e.tag, len(e.series)))
    if getattr(sig, signal.value) is None:
        setattr(sig, signal.value, group[0].series)
        use(group[0], Role(signal.value))
        group = group[1:]
    chosen = getattr(sig, signal.value)
    for e in group:
        sig.other_scalars[e.name] = e.series
        sig.ignored.append(SeriesUse("scalar", e.name, e.source, len(e.series),
                                     note=f"another {Role(signal.value).words} series; {chosen.tag} was read"
                                         ))


def _pick_loss(sig: Signals, signal: Signal, phase: str, group: list[_Entry], rl: bool, use) -> None:
    """The loss of one phase: a total, else the sum of aligned components, else the longest component."""
    if rl:
        for e in group:
            sig.other_losses[e.name] = e.series
            use(e, Role.RL_LOSS, "a reinforcement-learning run: no loss is the training loss")
        return
    if getattr(sig, signal.value) is not None:  # given by the user
        for e in group:
            sig.other_losses[e.name] = e.series
            use(e, Role.OTHER_LOSS if _is_total(e.tag) else Role.LOSS_COMPONENT)
        return
    totals = sorted((e for e in group if _is_total(e.tag)), key=lambda e: _rank("loss", phase, e.tag, len(e.series)))
    parts = sorted((e for e in group if not _is_total(e.tag)), key=lambda e: _rank("loss", phase, e.tag, len(e.series)))
    chosen: _Entry | None = None
    if totals:
        chosen = totals[0]
        setattr(sig, signal.value, chosen.series)
        use(chosen, Role(signal.value))
    elif len(parts) >= 2:
        spaces: dict[str, list[_Entry]] = {}
        for e in parts:
            spaces.setdefault((e.sub, _namespace(e.tag)), []).append(e)
        biggest = max(spaces.values(), key=lambda g: (len(g), sum(len(e.series) for e in g)))
        total = _summed(sorted(biggest, key=lambda e: e.name)) if len(biggest) >= 2 else None
        if total is not None:
            setattr(sig, signal.value, total)
            names = ", ".join(sorted(e.name for e in biggest))
            sig.read.append(SeriesUse("scalar", total.tag, biggest[0].source, len(total), signal.value,
                                      f"the sum of {len(biggest)} components logged at the same steps: {names}"))
    if getattr(sig, signal.value) is None and parts:
        chosen = parts[0]
        setattr(sig, signal.value, chosen.series)
        use(chosen, Role(signal.value), "no total loss logged: the longest loss series")
    steps_sibling = None
    if chosen is not None:
        base, suffix = lightning_base(chosen.tag)
        if suffix == "epoch":
            steps_sibling = f"{base}_step"
    for e in group:
        if chosen is not None and e is chosen:
            continue
        sig.other_losses[e.name] = e.series
        if steps_sibling is not None and e.tag == steps_sibling and signal == Signal.TRAIN_LOSS:
            use(e, Role.TRAIN_LOSS_STEPS, f"the per-step series of {chosen.name}")
        else:
            use(e, Role.OTHER_LOSS if _is_total(e.tag) else Role.LOSS_COMPONENT)


def _map_histograms(data: RunLog, conv: TagConventions, sig: Signals) -> None:
    for key, h in data.histograms.items():
        source = data.source_of("histogram", key)
        tag = key
        if "/" in key:
            head = key.split("/", 1)[0]
            if head.lower() in TRAIN_WORDS | VAL_WORDS:
                tag = key.split("/", 1)[1]
        role = None
        for prefixes, target, as_param, r in ((conv.weight_hist, sig.weight_hist, True, Role.WEIGHT_HIST),
                                              (conv.grad_hist, sig.grad_hist, True, Role.GRAD_HIST),
                                              (conv.act_hist, sig.act_hist, False, Role.ACT_HIST)):
            rest = _match_prefix(tag, prefixes)
            if rest is not None:
                name = param_name(rest) if as_param else rest
                target[name] = h
                role = r
                break
        else:
            low = tag.lower()
            suffix = next((x for x in conv.grad_suffixes if low.endswith(x)), None)
            keras = _KERAS_WEIGHT.fullmatch(tag)
            if suffix is not None:
                sig.grad_hist[param_name(tag[: -len(suffix)])] = h
                role = Role.GRAD_HIST
            elif keras is not None:
                name = param_name(f"{keras.group(1)}/{keras.group(2)}")
                sig.weight_hist[name] = h
                role = Role.WEIGHT_HIST
            elif _tokens(tag) and _tokens(tag)[-1] in {"weight", "bias"}:
                name = param_name(tag)
                sig.weight_hist[name] = h
                role = Role.WEIGHT_HIST
        if role == Role.WEIGHT_HIST and key in data.weight_shapes:
            sig.weight_shapes[name] = data.weight_shapes[key]
        if role is None:  # any other histogram is not a signal any rule reads
            sig.ignored.append(SeriesUse("histogram", key, source, len(h),
                                         note="not a weight, gradient or activation histogram by its name "
                                              "(add its prefix: [tool.report_gen.tags])"))
        else:
            sig.read.append(SeriesUse("histogram", key, source, len(h), role.value))


def _map_images(data: RunLog, conv: TagConventions, sig: Signals) -> None:
    for key, imgs in data.images.items():
        source = data.source_of("image", key)
        rest = _match_prefix(key, conv.kernel_images)
        if rest is not None:
            sig.kernel_images[param_name(rest)] = imgs
            sig.read.append(SeriesUse("image", key, source, len(imgs), Role.KERNEL_IMAGES.value))
            continue
        rest = _match_prefix(key, conv.act_images)
        if rest is not None:
            sig.act_images[rest] = imgs
            sig.read.append(SeriesUse("image", key, source, len(imgs), Role.ACT_IMAGES.value))
            continue
        sig.other_images[key] = imgs
        sig.ignored.append(SeriesUse("image", key, source, len(imgs),
                                     note="an image: shown in the report, not judged"))
