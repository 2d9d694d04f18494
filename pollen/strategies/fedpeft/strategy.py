"""FedPEFT: FedAvg over the PEFT parameters only, weighted by client sample counts."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from pollen.protocol.records import from_arrays, to_arrays
from pollen.strategies.fedpeft.lora_exact import (
    attach_residual,
    fold,
    lora_pairs,
    merge_svd,
    residual_key,
    residual_of,
    split_residual,
)
from pollen.strategies.registry import STRATEGIES, StrategyContext, sampling_kwargs


class FedPEFT(FedAvg):
    """FedAvg of the trainable tensors; `lora_aggregation` chooses how LoRA factors merge.

    "factors" (default, paper-faithful) averages A and B separately, as FedPEFT does: B̄·Ā, not the
    mean update. "svd" averages the updates ΔW = B·A and keeps the best rank-r approximation
    (truncated SVD; exact only when the clients share A). "exact" (FedEx-LoRA) sends B̄, Ā plus the
    residual Σ wᵢBᵢAᵢ − B̄Ā folded into the frozen weights, so the global model is base + Σ wᵢBᵢAᵢ;
    the residual travels down to every client each round (pollen/strategies/fedpeft/lora_exact.py).
    """

    def __init__(self, *, lora_aggregation: str = "factors", **kwargs) -> None:
        super().__init__(**kwargs)
        self.lora_aggregation = lora_aggregation
        self._residual: dict[str, np.ndarray] = {}  # exact: the residual the clients trained on

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        if self.lora_aggregation != "exact":
            return super().configure_train(server_round, arrays, config, grid)
        adapter, residual = split_residual(arrays)
        self._residual = from_arrays(residual)
        return attach_residual(super().configure_train(server_round, adapter, config, grid), residual)

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is None or self.lora_aggregation == "factors":
            return arrays, metrics
        valid = [m for m in replies if not m.has_error()]
        weights = np.array([float(m.content["metrics"][self.weighted_by_key]) for m in valid])
        states = [m.content["arrays"] for m in valid]
        merged = {k: v.numpy() for k, v in arrays.items()}
        if self.lora_aggregation == "exact":
            merged.update(self._residual)  # modules without LoRA pairs keep theirs unchanged
        for a_name, b_name in lora_pairs(list(merged)):
            As = [s[a_name].numpy() for s in states]
            Bs = [s[b_name].numpy() for s in states]
            if self.lora_aggregation == "svd":
                merged[a_name], merged[b_name] = merge_svd(As, Bs, weights, rank=As[0].shape[0])
                continue
            key = residual_key(a_name)
            previous = residual_of(self._residual, key)
            merged[a_name], merged[b_name], res = fold(As, Bs, weights, previous)
            for kind in ("A", "B", "W"):
                merged.pop(f"{key}.{kind}", None)
            merged.update({f"{key}.{kind}": v for kind, v in res.items()})
        return to_arrays(merged), metrics


@STRATEGIES.register("fedpeft")
def build(ctx: StrategyContext) -> FedPEFT:
    return FedPEFT(lora_aggregation=ctx.cfg.strategy.lora_aggregation, **sampling_kwargs(ctx.cfg))
