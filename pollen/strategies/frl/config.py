"""FRL's configuration: the typed `[frl]` section and `[strategy.params]`.

`FRLSection` is declared in pollen/config.py because the run config, one layer below the methods,
composes it; it is re-exported here so the method's folder shows everything it reads.
"""

from __future__ import annotations

from dataclasses import dataclass

from pollen.config import FRLSection

__all__ = ["FRLParams", "FRLSection"]


@dataclass(frozen=True)
class FRLParams:
    weighted: bool = False  # weigh each client's ranking vote by its example count (the paper: equal votes)
