"""The shared vocabulary: every name that travels between layers, defined once and typed.

- `Signal`: what a rule can need (each member carries its "missing" reason and a logging hint for
  `not_evaluated`); readers say which are present, `RunFacts.available` adds the derived ones.
- Tag conventions: the tag prefixes the readers recognise (`TagConventions`, DESIGN §6) and the one
  canonical spelling per role that `TrainingMonitor` writes and the hints suggest (`WRITTEN`).
- Plot kinds: one small frozen dataclass per `plot` a finding or a report section can carry. Rules
  build them, evidence and the renderers consume them; `to_dict()` is exactly the JSON of
  report.json and `parse_plot()` reads it back for `report-gen render`.
- Keys inside `details` (`Key`): the prefixes that name a curve, distribution or image there.

This is the lowest layer: it imports nothing from report_gen (core imports it).
"""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable


class _Named(str, enum.Enum):
    """A str-enum whose str() and format() are its value (as in JSON)."""

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__
    __hash__ = str.__hash__  # a member and its value are one set/dict key


# ------------------------------------------------------------------------------- tag conventions


@dataclass(frozen=True)
class TagConventions:
    """Tag prefixes recognised for each histogram/scalar family (configurable via [tool.report_gen.tags]).

    The first prefix of each default family is the canonical one: `TrainingMonitor` writes it.
    """

    weight_hist: tuple[str, ...] = ("weight_hist/", "weights/", "parameters/", "params/", "weight/")
    grad_hist: tuple[str, ...] = ("grad_hist/", "grads/", "gradients/", "grad/", "gradient/")
    grad_suffixes: tuple[str, ...] = (".grad", "/grad", "_grad")
    act_stats: tuple[str, ...] = ("activation_stats/",)
    act_hist: tuple[str, ...] = ("activations/", "selective/", "activation/")
    act_images: tuple[str, ...] = ("activation_maps/",)
    kernel_images: tuple[str, ...] = ("conv_weights/",)
    update_ratio: tuple[str, ...] = ("update_ratio/",)
    grad_norm_param: tuple[str, ...] = ("grad_norm/",)
    dynamics: tuple[str, ...] = ("dynamics/",)


DEFAULT_TAGS = TagConventions()


@dataclass(frozen=True)
class WrittenTags:
    """One canonical tag per role: what `TrainingMonitor` writes and what `enable` hints tell a user to log.

    The per-parameter/per-layer families are the first default prefix of `TagConventions`.
    """

    train_loss: str = "train/loss"
    val_loss: str = "val/loss"
    train_acc: str = "train/acc"
    val_acc: str = "val/acc"
    lr: str = "train/lr"
    grad_norm: str = "train/grad_norm"
    weight_hist: str = DEFAULT_TAGS.weight_hist[0]
    grad_hist: str = DEFAULT_TAGS.grad_hist[0]
    act_stats: str = DEFAULT_TAGS.act_stats[0]
    act_hist: str = DEFAULT_TAGS.act_hist[0]
    update_ratio: str = DEFAULT_TAGS.update_ratio[0]
    act_stat_keys: tuple[str, ...] = ("mean", "std", "max", "min")  # add_scalars keys of act_stats


WRITTEN = WrittenTags()


# ------------------------------------------------------------------------------------- signals


class Signal(_Named):
    """A signal a rule can need. `missing`: why a rule needing it was not evaluated; `enable`: how to log it."""

    missing: str
    enable: str

    def __new__(cls, value: str, missing: str, enable: str) -> "Signal":
        member = str.__new__(cls, value)
        member._value_ = value
        member.missing = missing
        member.enable = enable
        return member

    # scalar series (readers.signals.Signals attributes of the same name)
    TRAIN_LOSS = ("train_loss", "no training loss series found",
                  f"writer.add_scalar('{WRITTEN.train_loss}', loss.item(), step)")
    VAL_LOSS = ("val_loss", "no validation loss series found",
                f"writer.add_scalar('{WRITTEN.val_loss}', val_loss, step)")
    TRAIN_ACC = ("train_acc", "no training accuracy series found",
                 f"writer.add_scalar('{WRITTEN.train_acc}', acc, step)")
    VAL_ACC = ("val_acc", "no validation accuracy series found",
               f"writer.add_scalar('{WRITTEN.val_acc}', val_acc, step)")
    LR = ("lr", "no learning-rate series found",
          f"writer.add_scalar('{WRITTEN.lr}', optimizer.param_groups[0]['lr'], step)")
    GRAD_NORM = ("grad_norm", "no gradient-norm series found",
                 f"writer.add_scalar('{WRITTEN.grad_norm}', torch.nn.utils.clip_grad_norm_(model.parameters(), "
                 "float('inf')), step)")
    # per-parameter / per-layer families (Signals attributes of the same name)
    WEIGHT_HIST = ("weight_hist", "no weight histograms logged",
                   f"writer.add_histogram(f'{WRITTEN.weight_hist}{{name}}', p, step)  "
                   "# for name, p in model.named_parameters()")
    GRAD_HIST = ("grad_hist", "no gradient histograms logged",
                 f"writer.add_histogram(f'{WRITTEN.grad_hist}{{name}}', p.grad, step)  "
                 "# for name, p in model.named_parameters()")
    ACT_HIST = ("act_hist", "no activation histograms logged",
                f"writer.add_histogram(f'{WRITTEN.act_hist}{{layer}}', a, step)")
    ACT_STATS = ("act_stats", "no activation statistics logged",
                 f"writer.add_scalars(f'{WRITTEN.act_stats}{{layer}}', {{"
                 + ", ".join(f"'{k}': a.{k}()" for k in WRITTEN.act_stat_keys) + "}, step)")
    UPDATE_RATIO = ("update_ratio", "no update-ratio series logged",
                    "report_gen.monitor.TrainingMonitor(...).log_after_step(model, step)  "
                    f"# writes {WRITTEN.update_ratio}<param>")
    GRAD_NORM_PARAM = ("grad_norm_param", "no per-parameter gradient norms logged",
                       f"writer.add_scalar(f'{DEFAULT_TAGS.grad_norm_param[0]}{{name}}', p.grad.norm(), step)")
    DYNAMICS = ("dynamics", "no dynamics series logged",
                f"writer.add_scalar(f'{DEFAULT_TAGS.dynamics[0]}{{layer}}_mean', value, step)")
    KERNEL_IMAGES = ("kernel_images", "no kernel images logged",
                     f"writer.add_image(f'{DEFAULT_TAGS.kernel_images[0]}{{name}}', make_grid(w), step)")
    ACT_IMAGES = ("act_images", "no activation maps logged",
                  f"writer.add_image(f'{DEFAULT_TAGS.act_images[0]}{{layer}}', make_grid(a), step)")
    # derived by facts.run.RunFacts.available
    LOSS_ANY = ("loss_any", "no loss or metric series found",
                f"writer.add_scalar('{WRITTEN.train_loss}', loss.item(), step)")
    OPTIMIZER_STATE = ("optimizer_state", "no optimizer state (Adam exp_avg_sq / SGD momentum) in the checkpoints",
                       "torch.save({'model': model.state_dict(), 'optimizer': optimizer.state_dict(), 'step': step}, "
                       "path)")
    CHECKPOINT = ("checkpoint", "no readable checkpoint found",
                  "torch.save({'model': model.state_dict(), 'step': step}, f'checkpoints/step_{step}.pt')")
    CHECKPOINT_SERIES = ("checkpoint_series", "fewer than two readable checkpoints",
                         "save a checkpoint every few epochs: "
                         "torch.save(model.state_dict(), f'checkpoints/epoch_{epoch}.pt')")
    PROBE = ("probe", "no probe run (activations need the model)",
             "report-gen diagnose RUN --model pkg.module:factory --probe-shape 8,3,32,32")
    PROBE_SERIES = ("probe_series", "no probe over two or more checkpoints",
                    "report-gen diagnose RUN --model pkg.module:factory --probe batch.pt  (with 2+ checkpoints)")
    ATTENTION = ("attention", "no attention probabilities captured by a probe",
                 "an HF checkpoint folder (config.json + weights) probes itself with transformers installed "
                 "(pip install 'report_gen[hf]'); any other model: report-gen diagnose RUN --model pkg.module:factory "
                 "--probe batch.pt")
    WEIGHT_SHAPES = ("weight_shapes", "no logged model config gives the weight histograms' shapes",
                     "save a checkpoint; Keras: TensorBoard(histogram_freq=1) with write_graph=True (its default) "
                     "logs the model config that gives each kernel's shape")
    ATTENTION_WEIGHTS = ("attention_weights", "no query/key projections found in the checkpoints",
                         "save the model's state_dict in a checkpoint; a config.json beside it (num_attention_heads, "
                         "hidden_size) gives the heads")
    INPUT_PROBLEMS = ("input_problems", "", "")  # always available: every run has (possibly no) problems


SCALAR_SIGNALS = (Signal.TRAIN_LOSS, Signal.VAL_LOSS, Signal.TRAIN_ACC, Signal.VAL_ACC, Signal.LR, Signal.GRAD_NORM)
FAMILY_SIGNALS = (Signal.WEIGHT_HIST, Signal.GRAD_HIST, Signal.ACT_HIST, Signal.ACT_STATS, Signal.UPDATE_RATIO,
                  Signal.GRAD_NORM_PARAM, Signal.DYNAMICS, Signal.KERNEL_IMAGES, Signal.ACT_IMAGES)


class Role(_Named):
    """The role a logged series plays in the report (report.json `inputs.runs[].series[].role`), with the
    words the run card's "What was read" uses for it. The six scalar signals and the signal families keep
    their Signal value; the others are losses the curve rules only check for NaN/Inf."""

    words: str

    def __new__(cls, value: str, words: str) -> "Role":
        member = str.__new__(cls, value)
        member._value_ = value
        member.words = words
        return member

    TRAIN_LOSS = (Signal.TRAIN_LOSS.value, "training loss")
    VAL_LOSS = (Signal.VAL_LOSS.value, "validation loss")
    TRAIN_ACC = (Signal.TRAIN_ACC.value, "training accuracy")
    VAL_ACC = (Signal.VAL_ACC.value, "validation accuracy")
    LR = (Signal.LR.value, "learning rate")
    GRAD_NORM = (Signal.GRAD_NORM.value, "gradient norm")
    TRAIN_LOSS_STEPS = ("train_loss_steps", "training loss per step (for spikes and NaN)")
    LOSS_COMPONENT = ("loss_component", "a component of the loss (checked for NaN/Inf)")
    OTHER_LOSS = ("other_loss", "another loss (checked for NaN/Inf)")
    RL_LOSS = ("rl_loss", "a reinforcement-learning loss term (checked for NaN/Inf; not expected to fall)")
    WEIGHT_HIST = (Signal.WEIGHT_HIST.value, "weight histogram")
    GRAD_HIST = (Signal.GRAD_HIST.value, "gradient histogram")
    ACT_HIST = (Signal.ACT_HIST.value, "activation histogram")
    ACT_STATS = (Signal.ACT_STATS.value, "activation statistics")
    UPDATE_RATIO = (Signal.UPDATE_RATIO.value, "update ratio")
    GRAD_NORM_PARAM = (Signal.GRAD_NORM_PARAM.value, "gradient norm of one parameter")
    DYNAMICS = (Signal.DYNAMICS.value, "dynamics series")
    KERNEL_IMAGES = (Signal.KERNEL_IMAGES.value, "kernel images")
    ACT_IMAGES = (Signal.ACT_IMAGES.value, "activation maps")


#: the roles a user may give a tag (`[tool.report_gen.roles]`, `--role ROLE=TAG`); "ignore" takes a tag out
USER_ROLES = tuple(sig.value for sig in SCALAR_SIGNALS) + ("ignore",)


def role_words(value: Any) -> str:
    """The words for a role value read back from a report.json (an unknown one is shown as it is)."""
    try:
        return Role(str(value)).words
    except ValueError:
        return str(value)


def missing_reason(needs: Iterable[Signal]) -> tuple[str, str]:
    """(reason, enable) for a rule none of whose `needs` a run has: every missing reason, the first hint."""
    needs = tuple(needs)
    return "; ".join(dict.fromkeys(n.missing for n in needs)), needs[0].enable


# ------------------------------------------------------------------------------ keys in details


class Key(_Named):
    """Prefixes of the keys that name one curve, distribution, activation series or image in `details`.

    `Key.UPDATE_RATIO.of("fc.weight")` -> "update_ratio:fc.weight"; `Key.UPDATE_RATIO.name_in(...)` back.
    The six scalar curves are keyed by their Signal alone (`details.curves["train_loss"]`).
    """

    OTHER = "other"  # curves: a loss or metric series beyond the six named ones, by tag
    UPDATE_RATIO = Signal.UPDATE_RATIO.value  # curves: a logged update-ratio series, by parameter
    WEIGHT = "weight"  # distributions: histogram sources
    GRAD = "grad"
    ACTIVATION = "activation"
    KERNELS = "kernels"  # images: kernel grid of a conv weight (last checkpoint)
    PROBE = "probe"  # images and activation series: from the post-hoc probe
    ATTENTION = "attention"  # images: attention maps from the probe
    LOGGED = "logged"  # images: logged by the run itself

    def of(self, name: str) -> str:
        return f"{self.value}:{name}"

    def name_in(self, key: str) -> str | None:
        """The name after this prefix, or None when `key` does not start with it."""
        head, sep, rest = str(key).partition(":")
        return rest if sep and head == self.value else None


DISTRIBUTION_SOURCES = (Key.WEIGHT, Key.GRAD, Key.ACTIVATION)


def curve_label(key: str) -> str:
    """A curve key as people read it: the tag of an `other:` series, else the key."""
    name = Key.OTHER.name_in(key)
    return key if name is None else name


class LayerFact(_Named):
    """Per-checkpoint series of one parameter in `details.layer_series` (facts.dynamics)."""

    REL_UPDATE = "rel_update"
    WEIGHT_NORM = "weight_norm"


# ------------------------------------------------------------------------------------ plot kinds


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _names(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, (list, tuple)) else ()


def _number(value: Any) -> int | float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _flag(value: Any) -> bool:
    return value is True


def _of(kind: type) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        return kind(value)  # ValueError for an unknown member: the plot is dropped
    return parse


def _field(default: Any = dataclasses.MISSING, parse: Callable[[Any], Any] = _text, omit: Any = None):
    """A plot payload field: how to read it back from JSON, and which value is left out of the JSON."""
    return field(default=default, metadata={"parse": parse, "omit": omit})


PLOT_KINDS: dict[str, type["Plot"]] = {}


@dataclass(frozen=True)
class Plot:
    """A plot hint: which numbers of `details.runs[run]` to draw. Subclasses declare `kind`."""

    kind: ClassVar[str] = ""
    is_image: ClassVar[bool] = False  # an already encoded image in details.images, not a drawn figure
    run: str = _field()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" not in cls.__dict__:  # a shared base of several kinds
            return
        if cls.kind in PLOT_KINDS:
            raise ValueError(f"duplicate plot kind {cls.kind!r}")
        PLOT_KINDS[cls.kind] = cls

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (report.json `plot`): {"kind": ..., <fields in order>}, omitted values left out."""
        out: dict[str, Any] = {"kind": self.kind}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            omit = f.metadata["omit"]
            if value is None or (omit is not None and value == omit):
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value.value if isinstance(value, enum.Enum) else value
        return out


def parse_plot(data: Any) -> Plot | None:
    """A plot read back from JSON, or None when it is not one (unknown kind, a field of the wrong kind)."""
    if isinstance(data, Plot):
        return data
    if not isinstance(data, dict):
        return None
    cls = PLOT_KINDS.get(data.get("kind")) if isinstance(data.get("kind"), str) else None
    if cls is None:
        return None
    values = {}
    try:
        for f in dataclasses.fields(cls):
            if f.name in data:
                values[f.name] = f.metadata["parse"](data[f.name])
            elif f.default is dataclasses.MISSING:
                values[f.name] = f.metadata["parse"](None)
        return cls(**values)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class CurvePlot(Plot):
    """Curves `series` (keys of details.curves) against step, a vertical line at `mark_step`.

    `baseline` (set by the view model, never by a rule): also draw the baseline report's same series.
    """

    kind: ClassVar[str] = "curve"
    series: tuple[str, ...] = _field((), _names)
    mark_step: int | None = _field(None, _number)
    baseline: bool = _field(False, _flag, omit=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "series", tuple(str(s) for s in self.series))


@dataclass(frozen=True)
class DistributionPlot(Plot):
    """Percentile bands over time of one histogram (key of details.distributions, e.g. "weight:fc.weight")."""

    kind: ClassVar[str] = "distribution"
    key: str = _field("")

    @classmethod
    def of(cls, run: str, source: Key, name: str) -> "DistributionPlot":
        return cls(run, source.of(name))


@dataclass(frozen=True)
class GradDepthPlot(Plot):
    """Gradient RMS per parameter, input to output (details.grad_depth)."""

    kind: ClassVar[str] = "grad_depth"


@dataclass(frozen=True)
class LayerSeriesPlot(Plot):
    """One per-checkpoint fact of one parameter (details.layer_series[param][fact])."""

    kind: ClassVar[str] = "layer_series"
    param: str = _field("")
    fact: LayerFact = _field(LayerFact.REL_UPDATE, _of(LayerFact))


@dataclass(frozen=True)
class _LayerStatsPlot(Plot):
    """Activation statistics of one layer against step (details.activation_series[series_key])."""

    prefix: ClassVar[Key | None] = None
    layer: str = _field("")

    @property
    def series_key(self) -> str:
        return self.layer if self.prefix is None else self.prefix.of(self.layer)


@dataclass(frozen=True)
class ActivationSeriesPlot(_LayerStatsPlot):
    """Logged activation statistics of a layer over training (details.activation_series[layer])."""

    kind: ClassVar[str] = "activation_series"


@dataclass(frozen=True)
class ProbeSeriesPlot(_LayerStatsPlot):
    """The probe's activation statistics of a layer across checkpoints (details.activation_series["probe:<layer>"])."""

    kind: ClassVar[str] = "probe_series"
    prefix: ClassVar[Key | None] = Key.PROBE


@dataclass(frozen=True)
class _StoredImagePlot(Plot):
    """An image already in details.images (decoded, never drawn)."""

    is_image: ClassVar[bool] = True
    image: str = _field("")


@dataclass(frozen=True)
class KernelsPlot(_StoredImagePlot):
    """The kernel grid of a conv weight at the last checkpoint (details.images["kernels:<param>"])."""

    kind: ClassVar[str] = "kernels"

    @classmethod
    def of(cls, run: str, param: str) -> "KernelsPlot":
        return cls(run, Key.KERNELS.of(param))


@dataclass(frozen=True)
class ImagePlot(_StoredImagePlot):
    """An image of details.images (probe maps, attention maps, logged images)."""

    kind: ClassVar[str] = "image"

    @classmethod
    def of(cls, run: str, source: Key, name: str) -> "ImagePlot":
        return cls(run, source.of(name))


# ------------------------------------------------------------------------------ details payloads


@dataclass(frozen=True, eq=False)
class Picture:
    """One image of `details.images` before it is encoded: `pixels` (a float array in [0, 1], H×W or
    H×W×3) drawn by evidence, or `png` bytes logged by the run itself. render.images encodes it (JSON:
    {"title", "step"?, "png_base64"}); eq=False: compared and cached by identity."""

    title: str
    pixels: Any = None
    png: bytes | None = None
    step: int | None = None
