"""Flower's own strategies under short names, so one config switch compares them."""

from __future__ import annotations

from flwr.serverapp.strategy import Bulyan, FedAvg, FedMedian, FedTrimmedAvg, Krum, MultiKrum

from pollen.strategies.baselines.config import (
    BulyanParams,
    KrumParams,
    MultiKrumParams,
    NoParams,
    TrimmedMeanParams,
)
from pollen.strategies.registry import (
    STRATEGIES,
    StrategyContext,
    sampled_clients,
    sampling_kwargs,
    typed_params,
)

NAMES = ("fedavg", "median", "trimmedmean", "multikrum", "krum", "bulyan")


@STRATEGIES.register("fedavg")
def fedavg(ctx: StrategyContext) -> FedAvg:
    typed_params(ctx.cfg, NoParams)
    return FedAvg(**sampling_kwargs(ctx.cfg))


@STRATEGIES.register("median")
def median(ctx: StrategyContext) -> FedMedian:
    typed_params(ctx.cfg, NoParams)
    return FedMedian(**sampling_kwargs(ctx.cfg))


@STRATEGIES.register("trimmedmean")
def trimmedmean(ctx: StrategyContext) -> FedTrimmedAvg:
    p = typed_params(ctx.cfg, TrimmedMeanParams)
    return FedTrimmedAvg(beta=p.beta, **sampling_kwargs(ctx.cfg))


@STRATEGIES.register("multikrum")
def multikrum(ctx: StrategyContext) -> MultiKrum:
    p = typed_params(ctx.cfg, MultiKrumParams)
    return MultiKrum(num_malicious_nodes=p.num_malicious_nodes, num_nodes_to_select=p.num_nodes_to_select,
                     **sampling_kwargs(ctx.cfg))


@STRATEGIES.register("krum")
def krum(ctx: StrategyContext) -> Krum:
    p = typed_params(ctx.cfg, KrumParams)
    return Krum(num_malicious_nodes=p.num_malicious_nodes, **sampling_kwargs(ctx.cfg))


@STRATEGIES.register("bulyan")
def bulyan(ctx: StrategyContext) -> Bulyan:
    p = typed_params(ctx.cfg, BulyanParams)
    p.check_sampled(sampled_clients(ctx.cfg))
    return Bulyan(num_malicious_nodes=p.num_malicious_nodes, **sampling_kwargs(ctx.cfg))
