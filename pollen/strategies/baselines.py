"""Flower's own strategies under short names, so one config switch compares them."""

from __future__ import annotations

from flwr.serverapp.strategy import FedAvg, FedMedian, FedTrimmedAvg, MultiKrum

from pollen.strategies.registry import STRATEGIES, StrategyContext, sampling_kwargs, strategy_params


@STRATEGIES.register("fedavg")
def fedavg(ctx: StrategyContext) -> FedAvg:
    strategy_params(ctx.cfg, {})
    return FedAvg(**sampling_kwargs(ctx.cfg))


@STRATEGIES.register("median")
def median(ctx: StrategyContext) -> FedMedian:
    strategy_params(ctx.cfg, {})
    return FedMedian(**sampling_kwargs(ctx.cfg))


@STRATEGIES.register("trimmedmean")
def trimmedmean(ctx: StrategyContext) -> FedTrimmedAvg:
    p = strategy_params(ctx.cfg, {"beta": float})
    return FedTrimmedAvg(beta=p.get("beta", 0.2), **sampling_kwargs(ctx.cfg))


@STRATEGIES.register("multikrum")
def multikrum(ctx: StrategyContext) -> MultiKrum:
    p = strategy_params(ctx.cfg, {"num_malicious_nodes": int, "num_nodes_to_select": int})
    return MultiKrum(num_malicious_nodes=p.get("num_malicious_nodes", 0),
                     num_nodes_to_select=p.get("num_nodes_to_select", 1), **sampling_kwargs(ctx.cfg))
