"""First-order local training of the trainable (PEFT) parameters, and evaluation."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pollen.data.tokenize import IGNORE

# Causal LMs whose logits are exactly lm_head(decoder(x)): no scaling or soft-capping after the
# head, so the loss can be taken on the response tokens alone (see `lm_loss`).
PLAIN_LM_HEADS = frozenset({"llama", "mistral", "qwen2", "qwen3"})


def _decoder_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """The model's decoder stack and vocabulary projection, where `lm_loss` may split them."""
    peft_config = getattr(model, "active_peft_config", None)
    if getattr(peft_config, "is_prompt_learning", False):
        return None  # the PeftModel's own forward prepends the virtual tokens
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(getattr(base, "config", None), "model_type", None) not in PLAIN_LM_HEADS:
        return None
    get_decoder = getattr(base, "get_decoder", None)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if get_decoder is None or head is None:
        return None
    return get_decoder(), head


def lm_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(mean next-token cross-entropy over response tokens, number of those tokens).

    Why not `model(**batch).loss`: that projects every position onto the whole vocabulary (49,152
    logits per token for SmolLM2) and keeps the logits, their softmax and its gradient for the
    backward pass, the largest activations of a small LM; in a chat example most positions are the
    prompt or padding and carry no loss. Here only positions whose next token is a response token
    reach the head. Same value as the model's own loss; architectures with anything after the head,
    and prompt tuning, take the model's own path.
    """
    labels = batch["labels"][:, 1:]
    keep = labels != IGNORE
    tokens = int(keep.sum())
    parts = _decoder_and_head(model)
    if parts is None:
        return model(**batch).loss, tokens
    decoder, head = parts
    hidden = decoder(input_ids=batch["input_ids"],
                     attention_mask=batch.get("attention_mask")).last_hidden_state
    logits = head(hidden[:, :-1][keep]).float()
    if tokens == 0:  # no response token: the model's own loss is NaN here too
        return logits.sum() * math.nan, 0
    return F.cross_entropy(logits, labels[keep]), tokens


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each layer's activations in the backward pass instead of keeping them.

    Why: with a frozen, shared base model the activations kept for the backward pass are most of
    what one more concurrent client costs (docs/benchmarks.md "Issue 14: memory"). Non-reentrant
    checkpointing needs no input that requires grad, so PEFT adapters train unchanged.
    """
    from pollen.errors import ConfigError

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise ConfigError(f"train.gradient_checkpointing: {type(base).__name__} does not support "
                          "gradient checkpointing; set it to false")
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


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
    causal = None
    for batch in batches:
        if causal is None:  # per-token labels: a causal LM
            causal = batch["labels"].dim() == 2
        loss = lm_loss(model, batch)[0] if causal else model(**batch).loss
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
        if task == "seq-cls":
            out = model(**batch)
            k = int(batch["labels"].shape[0])
            loss_sum += float(out.loss) * k
            weight += k
            correct += int((out.logits.argmax(-1) == batch["labels"]).sum())
            n += k
        else:
            loss, k = lm_loss(model, batch)
            if k:
                loss_sum += float(loss) * k
                weight += k
            n += int(batch["input_ids"].shape[0])
    return EvalResult(loss=loss_sum / max(weight, 1), accuracy=(correct / n if task == "seq-cls" else None),
                      examples=n)
