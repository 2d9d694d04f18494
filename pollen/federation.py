"""Run one federation end to end: check, write the Flower app, start the SuperLink, submit, follow.

Shared by `pollen simulate` (simulation SuperLink) and `pollen server` (deployment SuperLink).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from pollen.compression import Codec
from pollen.config import PollenConfig
from pollen.launch import flower_env, start_superlink, submit_run, write_app, write_connection
from pollen.progress import follow, summary


def preflight(cfg: PollenConfig) -> None:
    """Fail fast, before any process starts: names, codec, data split, model (and warm its cache)."""
    from pollen.families import family_of, resolve
    from pollen.strategies.registry import STRATEGIES, load_builtins

    load_builtins()
    STRATEGIES.get(cfg.strategy.name)
    Codec.parse(cfg.compression.codec)
    resolve(family_of(cfg).preflight)(cfg)


def prepare_out(cfg: PollenConfig) -> Path:
    out = Path(cfg.run.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("metrics.json", "progress.json", "curves.png"):
        (out / stale).unlink(missing_ok=True)
    shutil.rmtree(out / "logs", ignore_errors=True)
    cfg.save(out / "config.toml")
    return out


@dataclass
class LinkOptions:
    """How to start the SuperLink and reach it."""

    simulation: bool
    host: str = "127.0.0.1"
    port: int | None = None
    tls: tuple[Path, Path, Path] | None = None  # (ca, cert, key)
    node_auth: bool = False
    federation_config: dict[str, object] = field(default_factory=dict)
    # Called once the SuperLink listens (port), before the run is submitted.
    on_listening: Callable[[int], None] | None = None


def run_federation(cfg: PollenConfig, console: Console, link: LinkOptions) -> list[dict[str, Any]]:
    t0 = time.monotonic()
    with console.status("checking config, data and model…"):
        preflight(cfg)
    out = prepare_out(cfg)
    app = write_app(cfg, out)
    home = out / ".flwr-home"
    env = flower_env(home)
    superlink, port = start_superlink(out, env, simulation=link.simulation, host=link.host,
                                      port=link.port, tls=link.tls, node_auth=link.node_auth)
    run = None
    try:
        write_connection(home, "pollen", f"127.0.0.1:{port}", insecure=link.tls is None,
                         root_cert=None if link.tls is None else link.tls[0])
        if link.on_listening is not None:
            link.on_listening(port)
        run = submit_run(app, out, env, "pollen", link.federation_config)
        rounds = follow(out, cfg.run.rounds, run, [superlink], console)
    finally:
        if run is not None:
            run.stop()
        superlink.stop()
    summary(rounds, out, console, time.monotonic() - t0)
    return rounds
