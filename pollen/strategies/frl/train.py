"""Local FRL training: SGD on supermask scores only (weights stay frozen), as the FRL reference does.

Per round the client runs `epochs` epochs with lr annealed by a cosine over the epochs of that round
(CosineAnnealingLR(T_max=epochs), stepped per epoch); across rounds the caller decays the base lr with
`round_lr` (reference: 0.4·0.999^round). Weight decay applies to the scores, as in the reference.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pollen.errors import ConfigError, ModelError
from pollen.models.supermask import supermask_layers

Batch = tuple[Tensor, Tensor]


class TensorBatches:
    """Re-iterable mini-batches over in-memory arrays; reshuffles on every pass from one seeded generator."""

    def __init__(self, x: np.ndarray | Tensor, y: np.ndarray | Tensor, batch_size: int, *,
                 shuffle: bool = True, seed: int = 0) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.x, self.y = torch.as_tensor(x), torch.as_tensor(y).long()
        if self.x.shape[0] != self.y.shape[0]:
            raise ConfigError(f"{self.x.shape[0]} inputs but {self.y.shape[0]} labels")
        self.batch_size, self.shuffle = batch_size, shuffle
        self._gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(self.x.shape[0] / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        n = self.x.shape[0]
        order = torch.randperm(n, generator=self._gen) if self.shuffle else torch.arange(n)
        for i in range(0, n, self.batch_size):
            idx = order[i:i + self.batch_size]
            yield self.x[idx], self.y[idx]


def round_lr(base_lr: float, round_index: int, decay: float = 0.999) -> float:
    """Reference FRL per-round decay: base·decay^round (round counted from 0)."""
    return base_lr * decay ** round_index


def _score_params(model: nn.Module) -> list[nn.Parameter]:
    layers = supermask_layers(model)
    if not layers:
        raise ModelError("train_scores: the model has no supermask layers")
    score_ids = {id(m.scores) for m in layers.values()}
    stray = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in score_ids]
    if stray:
        raise ModelError(f"FRL trains scores only, but these parameters require grad: {stray[:5]}")
    return [m.scores for m in layers.values()]


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def train_scores(model: nn.Module, batches: Iterable[Batch], *, epochs: int, lr: float,
                 momentum: float = 0.9, weight_decay: float = 1e-4,
                 lr_schedule: Literal["cosine", "constant"] = "cosine") -> dict[str, float]:
    """Train the supermask scores in place; returns mean loss/accuracy over all steps, examples and steps.

    `batches` must be re-iterable (a list, DataLoader or TensorBatches) when epochs > 1; a one-shot
    iterator is materialised first. A non-finite loss aborts with ModelError instead of voting garbage.
    """
    if epochs < 1 or lr <= 0:
        raise ConfigError(f"train_scores needs epochs >= 1 and lr > 0, got epochs={epochs}, lr={lr}")
    if lr_schedule not in ("cosine", "constant"):
        raise ConfigError(f"lr_schedule must be 'cosine' or 'constant', got {lr_schedule!r}")
    if isinstance(batches, Iterator):
        batches = list(batches)
    params = _score_params(model)
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs) if lr_schedule == "cosine" else None
    device = _device_of(model)
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    examples = steps = 0
    for _ in range(epochs):
        for x, y in batches:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach().double() * y.shape[0]
            correct += (logits.detach().argmax(1) == y).sum()
            examples += int(y.shape[0])
            steps += 1
        if sched is not None:
            sched.step()
    if examples == 0:
        raise ConfigError("train_scores got no training batches")
    mean_loss = float(loss_sum) / examples
    if not math.isfinite(mean_loss):
        raise ModelError("supermask training diverged (non-finite loss); lower the lr")
    return {"loss": mean_loss, "accuracy": int(correct) / examples, "examples": float(examples),
            "steps": float(steps)}


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[Batch]) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) over all examples of `batches`."""
    device = _device_of(model)
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        n += int(y.shape[0])
    if n == 0:
        raise ConfigError("evaluate got no batches")
    return loss_sum / n, correct / n
