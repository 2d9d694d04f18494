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
    """The method whose strategies include `strategy` (unknown names list the choices).

    A user's own strategy (`module:factory`) aggregates PEFT updates: its clients train as
    FedPEFT's do, and screening, metering and the ledger apply as to every built-in strategy.
    """
    if is_custom(strategy):
        custom_factory(strategy)  # a missing module or attribute fails here, before any process
        return METHODS.get(_METHOD_OF["fedavg"])
    STRATEGIES.get(strategy)
    return METHODS.get(_METHOD_OF[strategy])


def is_custom(name: str) -> bool:
    return ":" in name


def custom_factory(name: str) -> Factory:
    """`module:attr` -> a factory calling attr (a Flower Strategy class or a function returning one).

    attr receives Pollen's sampling settings it accepts (fraction_train, min_train_nodes, ...) and
    every `[strategy.params]` entry as keyword arguments. The module is the operator's own code, run
    only by the server (clients never import it).
    """
    import importlib
    import inspect

    module, _, attr = name.partition(":")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except ImportError as e:
        raise ConfigError(f"strategy {name!r}: cannot import module {module!r} ({e}); is it installed "
                          "or on PYTHONPATH?") from None
    except AttributeError:
        raise ConfigError(f"strategy {name!r}: module {module!r} has no {attr!r}") from None
    if not callable(obj):
        raise ConfigError(f"strategy {name!r}: {attr!r} is not a class or function")

    def factory(ctx: StrategyContext) -> Strategy:
        sampling = sampling_kwargs(ctx.cfg)
        try:
            params = inspect.signature(obj).parameters
            takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
            kwargs = {k: v for k, v in sampling.items() if takes_all or k in params}
        except (TypeError, ValueError):  # no signature (a builtin): pass nothing extra
            kwargs = {}
        try:
            strategy = obj(**kwargs, **ctx.cfg.strategy.params)
        except TypeError as e:
            raise ConfigError(f"strategy {name!r}: {' '.join(str(e).split())} "
                              "(set its arguments in [strategy.params])") from None
        if not isinstance(strategy, Strategy):
            raise ConfigError(f"strategy {name!r} returned {type(strategy).__name__}, not a Flower "
                              "flwr.serverapp.strategy.Strategy")
        return strategy

    return factory


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
    name = ctx.cfg.strategy.name
    return (custom_factory(name) if is_custom(name) else STRATEGIES.get(name))(ctx)
