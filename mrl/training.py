"""What every trainer shares (mrl/train.py: images and vectors; mrl/text/train.py: the text adapter): the result it
returns and its learning-rate schedule (linear warmup, then cosine decay)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TrainResult:
    path: Path
    epochs: int
    final_loss: float
    seconds: float
    items_per_second: float
    history: list[dict] = field(default_factory=list)
    unit: str = "items"  # what items_per_second counts (the text adapter: pairs)
    objective: str = ""  # what it was trained with (e.g. mrl, contrastive, similarity)


def lr_lambda(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor
