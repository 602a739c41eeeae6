"""Facts about a logged learning-rate series, and the published default learning rates of the common
optimizers: pure functions, numbers only (verdicts belong to rules).

The defaults are the values the libraries ship (the "usual" point of each optimizer's range):

* `torch.optim` (PyTorch 2.x signatures, https://pytorch.org/docs/stable/optim.html): SGD lr=1e-3,
  Adam/AdamW/RAdam lr=1e-3, NAdam/Adamax lr=2e-3, RMSprop lr=1e-2, Adagrad lr=1e-2, Adadelta lr=1.0;
* Hugging Face `TrainingArguments.learning_rate` = 5e-5 with `optim="adamw_torch"`
  (https://huggingface.co/docs/transformers/main_classes/trainer#transformers.TrainingArguments), the
  fine-tuning default (BERT's paper searched 2e-5..5e-5);
* Keras `optimizers.SGD(learning_rate=0.01)`, `Adam(learning_rate=0.001)` (https://keras.io/api/optimizers/).

Lightning ships no default learning rate (`LightningModule.configure_optimizers` is the user's); its
`LearningRateMonitor` names the logged series after the optimizer class (`lr-SGD`, `lr-Adam`), which is how
the optimizer of a run is recognised from its logs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

#: optimizer family -> the lowest default learning rate its libraries ship (see the module docstring)
DEFAULT_LR: dict[str, float] = {
    "sgd": 1e-3,  # torch.optim.SGD (Keras SGD: 1e-2)
    "adam": 5e-5,  # HF TrainingArguments (AdamW) for fine-tuning; torch.optim.Adam/AdamW: 1e-3
    "rmsprop": 1e-2,  # torch.optim.RMSprop
    "adagrad": 1e-2,  # torch.optim.Adagrad
    "adadelta": 1.0,  # torch.optim.Adadelta
}

#: optimizer family -> torch.optim's default learning rate (the reference for "far above")
TORCH_DEFAULT_LR: dict[str, float] = {"sgd": 1e-3, "adam": 1e-3, "rmsprop": 1e-2, "adagrad": 1e-2, "adadelta": 1.0}

_FAMILY = (  # optimizer names (class names, HF `optim` values, checkpoint kinds) -> family
    (r"adam|lamb|lion|adafactor|nadam|radam|adamax", "adam"),  # patterns, case-insensitive: compiled (and
    (r"^(sgd|nesterov)|sgd", "sgd"),  # cached by re) when an optimizer name is looked up
    (r"rmsprop", "rmsprop"),
    (r"adagrad", "adagrad"),
    (r"adadelta", "adadelta"),
)


def optimizer_family(name: str | None) -> str | None:
    """`adam` for "AdamW", "adamw_torch", "adam"; `sgd` for "SGD"; None when unknown."""
    if not name or not isinstance(name, str):
        return None
    for pattern, family in _FAMILY:
        if re.search(pattern, name, re.I):
            return family
    return None


def optimizer_from_lr_tag(tag: str) -> str | None:
    """The optimizer class in a Lightning LearningRateMonitor tag: `lr-SGD` -> "SGD", `lr-AdamW/pg1` -> "AdamW"."""
    match = re.match(r"^(?:.*/)?lr-([A-Za-z][A-Za-z0-9_]*)", tag)
    return match.group(1) if match else None


@dataclass(frozen=True)
class LrProfile:
    """A learning-rate series summarised. Indexes are positions in the finite logged points.

    peak: the largest logged value; peak_index/peak_step where it is first reached (the end of any warm-up).
    after_peak: points after the peak. zero_after_peak: how many of them are exactly 0.0.
    first_zero_step: the first step after the peak with lr exactly 0.0 (None if none).
    """

    points: int
    steps: np.ndarray
    values: np.ndarray
    peak: float
    peak_index: int
    peak_step: int
    after_peak: int
    zero_after_peak: int
    first_zero_step: int | None

    @property
    def zero_share(self) -> float:
        """Share of all logged points that come after the peak and are exactly 0."""
        return self.zero_after_peak / self.points if self.points else 0.0

    def below_share(self, ratio: float) -> float:
        """Share of all logged points, after the peak, at or below `ratio` × peak (exact zeros included)."""
        if not self.points or self.peak <= 0:
            return 0.0
        tail = self.values[self.peak_index + 1:]
        return float(np.sum(tail <= ratio * self.peak)) / self.points

    def first_below_step(self, ratio: float) -> int | None:
        """The first step after the peak at or below `ratio` × peak."""
        tail = np.flatnonzero(self.values[self.peak_index + 1:] <= ratio * self.peak)
        return int(self.steps[self.peak_index + 1 + tail[0]]) if tail.size else None


def lr_profile(steps, values) -> LrProfile | None:
    """The profile of the finite, non-negative part of a logged lr series; None when nothing is left."""
    s = np.asarray(steps, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(v) & (v >= 0)
    s, v = s[keep], v[keep]
    if not v.size:
        return None
    i = int(np.argmax(v))
    tail = v[i + 1:]
    zeros = np.flatnonzero(tail == 0.0)
    return LrProfile(points=int(v.size), steps=s, values=v, peak=float(v[i]), peak_index=i, peak_step=int(s[i]),
                     after_peak=int(tail.size), zero_after_peak=int(zeros.size),
                     first_zero_step=int(s[i + 1 + zeros[0]]) if zeros.size else None)
