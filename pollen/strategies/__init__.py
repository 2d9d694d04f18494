"""Server-side aggregation strategies (Flower strategies), found by name in one registry."""

from pollen.strategies.registry import STRATEGIES, StrategyContext, build_strategy

__all__ = ["STRATEGIES", "StrategyContext", "build_strategy"]
