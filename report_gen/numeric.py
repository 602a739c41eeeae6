"""Numerical helpers shared by readers and facts: float64 accumulation over float32 tensors in chunks,
so a large tensor never needs a full float64 copy."""
from __future__ import annotations

from typing import Iterator

import torch

CHUNK = 1 << 20  # elements per float64 chunk (8 MB): bounds temporaries


def chunks(t: torch.Tensor) -> Iterator[torch.Tensor]:
    flat = t.reshape(-1)
    for start in range(0, flat.numel(), CHUNK):
        yield flat[start:start + CHUNK]


def float64_sum(t: torch.Tensor, power: int = 1, center: float = 0.0) -> float:
    """sum((t - center) ** power), accumulated in float64 chunk by chunk."""
    total = 0.0
    for chunk in chunks(t):
        d = chunk.to(torch.float64)
        if center:
            d = d - center
        total += float((d if power == 1 else d.pow(power)).sum())
    return total
