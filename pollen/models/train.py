"""First-order local training of the trainable (PEFT) parameters, and evaluation."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch


@dataclass
class EvalResult:
    loss: float
    accuracy: float | None
    examples: int

    def metrics(self) -> dict[str, float]:
        """The ledger's evaluation columns; accuracy only where the task has one."""
        out = {"eval_loss": self.loss}
        if self.accuracy is not None:
            out["eval_accuracy"] = self.accuracy
        return out


def train_steps(model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]], *, lr: float,
                weight_decay: float = 0.0) -> tuple[float, int]:
    """Runs the given batches once; returns (mean loss, examples seen). Non-finite losses are skipped."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    model.train()
    total, steps, seen = 0.0, 0, 0
    for batch in batches:
        loss = model(**batch).loss
        seen += int(batch["input_ids"].shape[0])
        if not torch.isfinite(loss):
            opt.zero_grad(set_to_none=True)
            continue
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        total += float(loss.detach())
        steps += 1
    model.eval()
    return (total / steps if steps else math.nan), seen


@torch.inference_mode()
def evaluate(model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]], task: str) -> EvalResult:
    """Token-weighted loss for causal LM (mean over response tokens), example-weighted otherwise."""
    model.eval()
    loss_sum, weight, correct, n = 0.0, 0, 0, 0
    for batch in batches:
        out = model(**batch)
        if task == "seq-cls":
            k = int(batch["labels"].shape[0])
            loss_sum += float(out.loss) * k
            weight += k
            correct += int((out.logits.argmax(-1) == batch["labels"]).sum())
            n += k
        else:
            k = int((batch["labels"][:, 1:] != -100).sum())
            loss_sum += float(out.loss) * k
            weight += k
            n += int(batch["input_ids"].shape[0])
    return EvalResult(loss=loss_sum / max(weight, 1), accuracy=(correct / n if task == "seq-cls" else None),
                      examples=n)
