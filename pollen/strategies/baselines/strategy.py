"""Flower's own strategies under short names, so one config switch compares them."""

from __future__ import annotations

from flwr.serverapp.strategy import Bulyan, FedAvg, FedMedian, FedTrimmedAvg, Krum, MultiKrum

from pollen.errors import ConfigError
from pollen.strategies.registry import (
    STRATEGIES,
    StrategyContext,
    sampled_clients,
    sampling_kwargs,
    strategy_params,
)

NAMES = ("fedavg", "median", "trimmedmean", "multikrum", "krum", "bulyan")


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


@STRATEGIES.register("krum")
def krum(ctx: StrategyContext) -> Krum:
    p = strategy_params(ctx.cfg, {"num_malicious_nodes": int})
    return Krum(num_malicious_nodes=p.get("num_malicious_nodes", 0), **sampling_kwargs(ctx.cfg))


@STRATEGIES.register("bulyan")
def bulyan(ctx: StrategyContext) -> Bulyan:
    """Bulyan needs n >= 4f+3 replies; Flower would silently skip every round otherwise."""
    p = strategy_params(ctx.cfg, {"num_malicious_nodes": int})
    f, n = p.get("num_malicious_nodes", 0), sampled_clients(ctx.cfg)
    if f < 0 or n < 4 * f + 3:
        raise ConfigError(f"bulyan with num_malicious_nodes = {f} needs at least 4·f+3 = {4 * f + 3} "
                          f"clients per round, but {n} are sampled; add clients, raise "
                          f"federation.fraction or lower strategy.params.num_malicious_nodes")
    return Bulyan(num_malicious_nodes=f, **sampling_kwargs(ctx.cfg))
