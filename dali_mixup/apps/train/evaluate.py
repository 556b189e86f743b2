"""Validation: top-1 and top-5 over every validation image of every process."""

from __future__ import annotations

from typing import Tuple

import torch

from .build import Trainer
from .processes import all_sum


def evaluate(trainer: Trainer) -> Tuple[float, float]:
    """in: a Trainer with a validation loader -> out: (top-1, top-5) in percent over every validation image
    of every rank. Targets may be class indices (B,) or one-hot rows (B, C)."""
    t = trainer
    t.model.eval()
    correct1 = correct5 = count = 0.0
    with torch.no_grad():
        for images, targets in t.val_loader:
            if t.channels_last:
                images = images.permute(0, 3, 1, 2)
            with torch.autocast(t.ctx.device.type, dtype=t.amp_dtype, enabled=t.amp_dtype is not None):
                logits = t.model(images)
            labels = targets.to(t.ctx.device)
            labels = labels.argmax(1) if labels.ndim == 2 else labels
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            correct1 += (top[:, 0] == labels).sum().item()
            correct5 += (top == labels[:, None]).any(1).sum().item()
            count += len(labels)
    c1, c5, n = all_sum([correct1, correct5, count], t.ctx.device)
    return 100.0 * c1 / max(n, 1), 100.0 * c5 / max(n, 1)

