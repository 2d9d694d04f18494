"""Strategies by name: Pollen's own plus Flower's baselines, built from the run config."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flwr.serverapp.strategy import Strategy

from pollen.config import PollenConfig
from pollen.errors import ConfigError
from pollen.registry import Registry


@dataclass
class StrategyContext:
    """What a strategy factory may need beyond the config."""

    cfg: PollenConfig
    tensor_names: list[str]


Factory = Callable[[StrategyContext], Strategy]
STRATEGIES: Registry[Factory] = Registry("strategy")


def sampling_kwargs(cfg: PollenConfig) -> dict[str, Any]:
    """Flower's sampling knobs from the federation section; evaluation is centralised on the server."""
    fed = cfg.federation
    sampled = max(1, math.ceil(fed.fraction * fed.clients))
    return {
        "fraction_train": fed.fraction,
        "fraction_evaluate": 0.0,
        "min_train_nodes": fed.min_clients or sampled,
        "min_available_nodes": fed.clients,
    }


def sampled_clients(cfg: PollenConfig) -> int:
    """Clients Flower samples per train round with `sampling_kwargs` (FedAvg.configure_train's rule)."""
    kw = sampling_kwargs(cfg)
    return max(int(cfg.federation.clients * kw["fraction_train"]), kw["min_train_nodes"])


def strategy_params(cfg: PollenConfig, allowed: dict[str, type]) -> dict[str, Any]:
    """Validate `[strategy.params]` against what the chosen strategy accepts."""
    out = {}
    for key, value in cfg.strategy.params.items():
        if key not in allowed:
            raise ConfigError(f"strategy {cfg.strategy.name!r} has no parameter {key!r}; "
                              f"it accepts: {', '.join(sorted(allowed)) or 'none'}")
        typ = allowed[key]
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, typ) or isinstance(value, bool) and typ is not bool:
            raise ConfigError(f"strategy.params.{key}: expected {typ.__name__}, got {value!r}")
        out[key] = value
    return out


def load_builtins() -> None:
    """Import the built-in strategy modules so they register themselves (idempotent)."""
    from pollen.strategies.baselines import strategy as baselines  # noqa: F401
    from pollen.strategies.fedkseed import strategy as fedkseed  # noqa: F401
    from pollen.strategies.fedpeft import strategy as fedpeft  # noqa: F401
    from pollen.strategies.flag import strategy as flag  # noqa: F401
    from pollen.strategies.frl import strategy as frl  # noqa: F401


def build_strategy(ctx: StrategyContext) -> Strategy:
    load_builtins()
    return STRATEGIES.get(ctx.cfg.strategy.name)(ctx)
