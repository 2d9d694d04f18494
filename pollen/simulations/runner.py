"""`pollen simulate`: a local federation on Flower's simulation engine (Ray backend)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from pollen.config import PollenConfig
from pollen.errors import DataError
from pollen.launch import flower_env, start_superlink, submit_run, write_app, write_connection
from pollen.progress import follow, summary
from pollen.runtime import client_indices, runtime


def preflight(cfg: PollenConfig) -> None:
    """Fail fast, before any process starts: names, data split, model (and warm its cache)."""
    from pollen.simulations.attack_grid import check_attack
    from pollen.strategies import (  # noqa: F401  (importing them registers the built-ins)
        StrategyContext,
        baselines,
        build_strategy,
        fedpeft,
        flag,
    )
    from pollen.strategies.registry import STRATEGIES

    STRATEGIES.get(cfg.strategy.name)
    check_attack(cfg)  # unknown attack names / parameters fail here, before any process starts
    n = cfg.federation.clients
    for pid in range(n):
        if len(client_indices(cfg, pid, n)) == 0:
            raise DataError(f"client {pid} would get no data; use fewer clients")
    rt = runtime(cfg)
    # The strategy's factory validates [strategy.params] against the federation (e.g. flag's m).
    build_strategy(StrategyContext(cfg=cfg, tensor_names=list(rt.initial_state())))


def prepare_out(cfg: PollenConfig) -> Path:
    out = Path(cfg.run.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("metrics.json", "progress.json", "curves.png"):
        (out / stale).unlink(missing_ok=True)
    shutil.rmtree(out / "logs", ignore_errors=True)
    cfg.save(out / "config.toml")
    return out


def _num(v: float) -> int | float:
    return int(v) if float(v).is_integer() else v


def simulate(cfg: PollenConfig, console: Console | None = None) -> list[dict[str, Any]]:
    console = console or Console()
    t0 = time.monotonic()
    with console.status("checking config, data and model…"):
        preflight(cfg)
    out = prepare_out(cfg)
    app = write_app(cfg, out)
    home = out / ".flwr-home"
    env = flower_env(home)
    superlink, port = start_superlink(out, env, simulation=True)
    run = None
    try:
        write_connection(home, "pollen-sim", f"127.0.0.1:{port}", insecure=True)
        run = submit_run(app, out, env, "pollen-sim", {
            "num-supernodes": cfg.federation.clients,
            "client-resources-num-cpus": _num(cfg.simulation.client_cpus),
        })
        rounds = follow(out, cfg.run.rounds, run, [superlink], console)
    finally:
        if run is not None:
            run.stop()
        superlink.stop()
    summary(rounds, out, console, time.monotonic() - t0)
    return rounds
