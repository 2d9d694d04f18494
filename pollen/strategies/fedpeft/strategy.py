"""FedPEFT: FedAvg over the PEFT parameters only, weighted by client sample counts."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import FedAvg

from pollen.protocol.records import to_arrays
from pollen.strategies.fedpeft.lora_exact import lora_pairs, merge_exact
from pollen.strategies.registry import STRATEGIES, StrategyContext, sampling_kwargs


class FedPEFT(FedAvg):
    """FedAvg of the trainable tensors; `lora_aggregation="exact"` merges LoRA factors exactly.

    "factors" (default, paper-faithful) averages A and B separately, as FedPEFT does. "exact" averages
    the updates ΔW = B·A and re-factorises them at the configured rank with a truncated SVD.
    """

    def __init__(self, *, lora_aggregation: str = "factors", **kwargs) -> None:
        super().__init__(**kwargs)
        self.lora_aggregation = lora_aggregation

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is None or self.lora_aggregation != "exact":
            return arrays, metrics
        valid = [m for m in replies if not m.has_error()]
        weights = np.array([float(m.content["metrics"][self.weighted_by_key]) for m in valid])
        states = [m.content["arrays"] for m in valid]
        merged = {k: v.numpy() for k, v in arrays.items()}
        for a_name, b_name in lora_pairs(list(merged)):
            As = [s[a_name].numpy() for s in states]
            Bs = [s[b_name].numpy() for s in states]
            merged[a_name], merged[b_name] = merge_exact(As, Bs, weights, rank=As[0].shape[0])
        return to_arrays(merged), metrics


@STRATEGIES.register("fedpeft")
def build(ctx: StrategyContext) -> FedPEFT:
    return FedPEFT(lora_aggregation=ctx.cfg.strategy.lora_aggregation, **sampling_kwargs(ctx.cfg))
