"""The standard initialisation scales of a weight tensor, from its shape: pure functions, numbers only.

Fan-in and fan-out as `torch.nn.init._calculate_fan_in_and_fan_out` computes them (shape [out, in, *kernel]:
fan_in = in x prod(kernel), fan_out = out x prod(kernel)). The standard deviations of the common inits:

* PyTorch's default for nn.Linear / nn.ConvNd: `kaiming_uniform_(a=sqrt(5))`, i.e. U(-1/sqrt(fan_in),
  1/sqrt(fan_in)), std = 1/sqrt(3 fan_in) (torch/nn/modules/linear.py `reset_parameters`);
* Kaiming/He (He et al. 2015, `torch.nn.init.kaiming_normal_`, ReLU gain sqrt(2)): std = sqrt(2/fan_in),
  the widest of the standard scales;
* Xavier/Glorot (Glorot & Bengio 2010, `xavier_normal_`, Keras' default `glorot_uniform`): std =
  sqrt(2/(fan_in + fan_out));
* LeCun (`lecun_normal`, SELU): std = 1/sqrt(fan_in).
"""
from __future__ import annotations

import math
from dataclasses import dataclass


def fans(shape: tuple[int, ...]) -> tuple[int, int] | None:
    """(fan_in, fan_out) of a weight of this shape as torch computes them; None below two dimensions."""
    if len(shape) < 2 or any(int(d) <= 0 for d in shape):
        return None
    receptive = math.prod(int(d) for d in shape[2:]) if len(shape) > 2 else 1
    return int(shape[1]) * receptive, int(shape[0]) * receptive


@dataclass(frozen=True)
class InitScales:
    fan_in: int
    fan_out: int

    @property
    def pytorch_default(self) -> float:
        return 1.0 / math.sqrt(3.0 * self.fan_in)

    @property
    def kaiming(self) -> float:
        return math.sqrt(2.0 / self.fan_in)

    @property
    def xavier(self) -> float:
        return math.sqrt(2.0 / (self.fan_in + self.fan_out))

    @property
    def lecun(self) -> float:
        return 1.0 / math.sqrt(self.fan_in)

    @property
    def widest(self) -> float:
        """The largest of the standard scales (Kaiming/He for every fan-in)."""
        return max(self.pytorch_default, self.kaiming, self.xavier, self.lecun)


def init_scales(shape: tuple[int, ...]) -> InitScales | None:
    f = fans(shape)
    return InitScales(*f) if f is not None else None
