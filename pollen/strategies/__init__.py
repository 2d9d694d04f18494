"""Federated methods, one folder each, found by name: `method_for(cfg)` and `build_strategy(ctx)`.

Importing this package registers every built-in method (each folder's `__init__` has one
`register_method(...)` line). A new method is one folder plus one name in the import below.
"""

from pollen.strategies.method import Method, ServerSide, TrainResult
from pollen.strategies.registry import (
    METHODS,
    STRATEGIES,
    StrategyContext,
    build_strategy,
    method_for,
    method_of,
    register_method,
)

# The built-in methods register themselves on import (order: what `pollen --help` lists first).
from pollen.strategies import fedpeft, baselines, flag, fedkseed, frl  # noqa: F401  isort: skip

__all__ = ["METHODS", "STRATEGIES", "Method", "ServerSide", "StrategyContext", "TrainResult",
           "build_strategy", "method_for", "method_of", "register_method"]
