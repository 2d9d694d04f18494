"""`pollen simulate`: a local federation on Flower's simulation engine (Ray backend)."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from pollen.config import PollenConfig
from pollen.deploy.federation import LinkOptions, run_federation


def _num(v: float) -> int | float:
    return int(v) if float(v).is_integer() else v


def simulate(cfg: PollenConfig, console: Console | None = None) -> list[dict[str, Any]]:
    return run_federation(cfg, console or Console(), LinkOptions(simulation=True, federation_config={
        "num-supernodes": cfg.federation.clients,
        "client-resources-num-cpus": _num(cfg.simulation.client_cpus),
    }))
