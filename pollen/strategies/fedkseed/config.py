"""FedKSeed's configuration: the typed `[fedkseed]` section and its (empty) `[strategy.params]`.

`FedKSeedSection` is declared in pollen/config.py because the run config, one layer below the methods,
composes it; it is re-exported here so the method's folder shows everything it reads.
"""

from __future__ import annotations

from dataclasses import dataclass

from pollen.config import FedKSeedSection

__all__ = ["FedKSeedParams", "FedKSeedSection"]


@dataclass(frozen=True)
class FedKSeedParams:
    """fedkseed and fedkseed-pro accept no `[strategy.params]`; use `[fedkseed]`."""
