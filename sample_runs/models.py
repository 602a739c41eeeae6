"""Model classes and zero-argument factories for the bundled sample runs.

Each factory is named after the run it belongs to, so a tool can rebuild a run's model from
``sample_runs/models.py:<run name>`` and load one of that run's checkpoints into it. The file has no
imports outside torch and can be loaded by path (it is not part of a package).

Factories build the architecture *and* its initialisation (including the deliberately bad ones);
seeding is the caller's business.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

IMAGE_CLASSES = 4  # classes of the synthetic bar images (see make_samples.bar_images)
IMAGE_SIZE = 12  # images are 1 x IMAGE_SIZE x IMAGE_SIZE
TABULAR_FEATURES = 16  # features of the synthetic tabular data (see make_samples.tabular)
TABULAR_CLASSES = 4


class SmallCNN(nn.Module):
    """conv-BN-ReLU x2, global average pooling and a linear classifier.

    Module names (``conv1``, ``bn1``, ``relu1``, ``conv2``, ``bn2``, ``relu2``, ``fc``) are what the
    sample runs log under, e.g. ``activation_stats/relu1`` and ``weight_hist/conv2.weight``.
    """

    def __init__(self, channels: tuple[int, int] = (8, 16), in_channels: int = 1,
                 num_classes: int = IMAGE_CLASSES) -> None:
        super().__init__()
        c1, c2 = channels
        self.conv1 = nn.Conv2d(in_channels, c1, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class NormMLP(nn.Module):
    """Linear-LayerNorm-GELU-Dropout blocks and a linear head (the ``healthy_mlp`` architecture)."""

    def __init__(self, in_features: int = TABULAR_FEATURES, hidden: tuple[int, ...] = (64, 64),
                 num_classes: int = TABULAR_CLASSES, dropout: float = 0.1) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_features
        for h in hidden:
            blocks.append(nn.Sequential(OrderedDict(
                linear=nn.Linear(width, h), norm=nn.LayerNorm(h), act=nn.GELU(), drop=nn.Dropout(dropout))))
            width = h
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x))


class PlainMLP(nn.Module):
    """Linear layers ``fc1..fcN`` each followed by an activation ``act1..actN``, then ``head``.

    Children are registered flat (``fc1``, ``act1``, ``fc2``, ...), so parameter names read
    ``fc1.weight`` and hooks can address ``act3`` directly.
    """

    def __init__(self, hidden: tuple[int, ...], activation: type[nn.Module] = nn.ReLU,
                 in_features: int = TABULAR_FEATURES, num_classes: int = TABULAR_CLASSES) -> None:
        super().__init__()
        width = in_features
        for i, h in enumerate(hidden, start=1):
            self.add_module(f"fc{i}", nn.Linear(width, h))
            self.add_module(f"act{i}", activation())
            width = h
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.children():
            x = module(x)
        return x


class ResidualMLP(nn.Module):
    """``fc1``-``act1``, one residual ReLU block ``fc2``-``act2``-``fc3`` added back, and ``head``.

    The skip connection keeps the network trainable even when every unit of ``act2`` is dead.
    """

    def __init__(self, width: int = 64, block_width: int = 32, in_features: int = TABULAR_FEATURES,
                 num_classes: int = TABULAR_CLASSES) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, width)
        self.act1 = nn.ReLU()
        self.fc2 = nn.Linear(width, block_width)
        self.act2 = nn.ReLU()
        self.fc3 = nn.Linear(block_width, width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act1(self.fc1(x))
        h = h + self.fc3(self.act2(self.fc2(h)))
        return self.head(h)


def healthy_cnn() -> SmallCNN:
    """The healthy convolutional classifier (BatchNorm, 8 and 16 channels)."""
    return SmallCNN()


def frozen_layer() -> SmallCNN:
    """Same architecture as ``healthy_cnn``; the fault (conv2 left out of the optimizer) is in training."""
    return SmallCNN()


def diverging() -> PlainMLP:
    """A LeakyReLU MLP without normalisation, so nothing tames a learning rate that is far too high."""
    return PlainMLP(hidden=(64, 64, 64), activation=nn.LeakyReLU)


def healthy_mlp() -> NormMLP:
    """The healthy tabular classifier: LayerNorm + GELU + Dropout blocks."""
    return NormMLP()


def dead_relu() -> ResidualMLP:
    """A residual ReLU MLP whose block layer ``fc2`` has its biases initialised to -8.

    Every unit of ``act2`` then outputs 0 for every input, gets zero gradient and never recovers
    (dead ReLUs); the skip connection lets the rest of the network train around the dead block.
    """
    model = ResidualMLP()
    with torch.no_grad():
        model.fc2.bias.fill_(-8.0)
    return model


def vanishing_sigmoid() -> PlainMLP:
    """A 12-hidden-layer sigmoid MLP with PyTorch's default init: gradients vanish towards the input."""
    return PlainMLP(hidden=(32,) * 12, activation=nn.Sigmoid)


def overfitting() -> PlainMLP:
    """A wide two-hidden-layer ReLU MLP, far too large for the 64 training samples it gets."""
    return PlainMLP(hidden=(128, 128), activation=nn.ReLU)
