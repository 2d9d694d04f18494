"""Strategies and methods by name: Pollen's own plus Flower's baselines, built from the run config.

A *strategy* is a Flower `Strategy` factory found by `strategy.name`; a *method* (`Method`) groups the
strategies that share a client trainer and server hooks. Method folders register both here; the
package `pollen.strategies` imports every built-in method, so importing it is enough to find them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, get_args, get_type_hints

from flwr.serverapp.strategy import Strategy

from pollen.config import PollenConfig
from pollen.errors import ConfigError
from pollen.registry import Registry
from pollen.strategies.method import Method


@dataclass
class StrategyContext:
    """What a strategy factory may need beyond the config."""

    cfg: PollenConfig
    tensor_names: list[str]


Factory = Callable[[StrategyContext], Strategy]
STRATEGIES: Registry[Factory] = Registry("strategy")
METHODS: Registry[Method] = Registry("method")
_METHOD_OF: dict[str, str] = {}


def register_method(method: Method) -> Method:
    """The one line a method folder adds; its strategies must already be registered."""
    for name in method.strategies:
        STRATEGIES.get(name)  # unknown strategy -> a clear error at import time
        if name in _METHOD_OF:
            raise ConfigError(f"strategy {name!r} belongs to methods {_METHOD_OF[name]!r} and {method.name!r}")
    METHODS.add(method.name, method)
    for name in method.strategies:
        _METHOD_OF[name] = method.name
    return method


def method_of(strategy: str) -> Method:
    """The method whose strategies include `strategy` (unknown names list the choices)."""
    STRATEGIES.get(strategy)
    return METHODS.get(_METHOD_OF[strategy])


def method_for(cfg: PollenConfig) -> Method:
    return method_of(cfg.strategy.name)


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


P = TypeVar("P")


def typed_params(cfg: PollenConfig, cls: type[P]) -> P:
    """`[strategy.params]` as the method's params dataclass `cls` (its fields are what it accepts).

    Types are checked here (ints pass as floats); `cls.__post_init__` validates values, so a params
    class is validated where it is declared.
    """
    hints = get_type_hints(cls)
    allowed = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        typ = hints[f.name]
        args = [a for a in get_args(typ) if a is not type(None)]
        allowed[f.name] = args[0] if args else typ
    return cls(**strategy_params(cfg, allowed))


def build_strategy(ctx: StrategyContext) -> Strategy:
    return STRATEGIES.get(ctx.cfg.strategy.name)(ctx)
