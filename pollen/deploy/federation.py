"""Run one federation end to end: check, write the Flower app, start the SuperLink, submit, follow.

Shared by `pollen simulate` (simulation SuperLink) and `pollen server` (deployment SuperLink).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from pollen.compression import Codec
from pollen.config import PollenConfig
from pollen.deploy.launch import flower_env, start_superlink, submit_run, write_app
from pollen.deploy.node_auth import register_nodes, write_connection
from pollen.deploy.progress import follow, summary
from pollen.deploy.timing import breakdown, process_started
from pollen.errors import ConfigError
from pollen.io_utils import atomic_write_json, check_writable_dir
from pollen.registry import release_process_caches
from pollen.server.ledger import record_failure
from pollen.server.tracking import check_trackers


def preflight(cfg: PollenConfig) -> None:
    """Fail fast, before any process starts: names, codec, data split, model (and warm its cache)."""
    from pollen.strategies import method_for

    method = method_for(cfg)  # unknown strategy names fail here, listing the choices
    Codec.parse(cfg.compression.codec)
    Codec.parse(cfg.compression.codec_down)
    if cfg.compression.codec_down.strip().lower() not in ("", "none") and not getattr(
            method.server, "supports_codec_down", False):
        raise ConfigError(f"compression.codec_down: the {method.name!r} method has no compressed "
                          "down-link (only the PEFT family does); leave it empty")
    check_trackers(cfg)  # a selected MLflow / W&B that is not installed fails now, not after loading
    try:
        method.preflight(cfg)
    finally:  # the CLI only supervises from here on: no resident copy of the model
        release_process_caches()


def with_partition_ceiling(cfg: PollenConfig) -> PollenConfig:
    """In simulation the server knows every partition, so no honest reply claims more examples
    than the largest one: that becomes the `num-examples` ceiling (if lower than the configured one).
    The run config carries it to the server like every other key."""
    from pollen.strategies import method_for

    largest = max(method_for(cfg).partition_sizes(cfg), default=0)
    if not 1 <= largest < cfg.federation.max_client_examples:
        return cfg
    capped = PollenConfig.from_json(cfg.to_json())
    capped.federation.max_client_examples = largest
    return capped


def prepare_out(cfg: PollenConfig, resume: bool = False) -> Path:
    """A fresh run clears the previous run's files; a resumed one keeps them and its checkpoint."""
    from pollen.server.checkpoint import CHECKPOINT_DIR, load_checkpoint
    from pollen.strategies import method_for

    out = Path(cfg.run.out).resolve()
    if resume:
        if not method_for(cfg).resumable:
            raise ConfigError(f"--resume: strategy {cfg.strategy.name!r} cannot resume yet")
        load_checkpoint(out, cfg)  # fail now, before any process starts
        return out
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("metrics.json", "progress.json", "curves.png", "timing.json"):
        (out / stale).unlink(missing_ok=True)
    # A previous run's results must not pass for this run's (a failed run leaves none).
    for stale_dir in ("logs", CHECKPOINT_DIR, "rounds", "tensorboard", "adapter", "model"):
        shutil.rmtree(out / stale_dir, ignore_errors=True)
    cfg.save(out / "config.toml")
    return out


@dataclass
class LinkOptions:
    """How to start the SuperLink and reach it."""

    simulation: bool
    # A line printed once the preflight passed (the simulation's actor plan).
    announce: str | None = None
    # The Fleet API (gRPC-rere): the only address that faces the network.
    host: str = "127.0.0.1"
    port: int | None = None
    # The Control/ServerAppIo HTTP API: loopback only (default port + 1).
    control_host: str = "127.0.0.1"
    control_port: int | None = None
    # Directory from `pollen certs` (ca.crt, server.pem, server.key); None = insecure (loopback).
    certs: Path | None = None
    # Public keys of the nodes allowed in (Flower node authentication; needs TLS).
    node_pubs: list[Path] = field(default_factory=list)
    health_address: str | None = None
    federation_config: dict[str, object] = field(default_factory=dict)
    # Called once the SuperLink listens (Fleet port, Control port), before the run is submitted.
    on_listening: Callable[[int, int], None] | None = None
    # Restart from OUT/checkpoint (`pollen server --resume`).
    resume: bool = False


def run_federation(cfg: PollenConfig, console: Console, link: LinkOptions) -> list[dict[str, Any]]:
    started = process_started()  # the wall time counts from `pollen …`, imports included
    check_writable_dir(Path(cfg.run.out).resolve())  # before minutes of checks and loading
    with console.status("checking config, data and model…"):
        preflight(cfg)
    checked = time.time() - started
    if link.announce:  # once the run is known to be valid: a failed check stays one line
        console.print(link.announce, style="dim", markup=False, highlight=False)
    if link.simulation:
        cfg = with_partition_ceiling(cfg)
    out = prepare_out(cfg, resume=link.resume)
    app = write_app(cfg, out, resume=link.resume)
    home = out / ".flwr-home"
    env = flower_env(home)
    auth = bool(link.node_pubs)
    superlink = start_superlink(out, env, simulation=link.simulation, host=link.host,
                                port=link.port, control_host=link.control_host,
                                control_port=link.control_port, certs=link.certs, node_auth=auth,
                                health_address=link.health_address)
    run = None
    try:
        # Registration and `flwr run` go to the loopback Control API, on this host only.
        address = superlink.control_address
        root = None if link.certs is None else link.certs / "ca.crt"
        if auth:
            register_nodes(address, link.node_pubs, flwr_home=home, root_cert=root, insecure=False,
                           connection="pollen")
        write_connection(home, address, root_cert=root, insecure=link.certs is None, name="pollen")
        if link.on_listening is not None:
            link.on_listening(superlink.fleet_port or superlink.control_port, superlink.control_port)
        run = submit_run(app, out, env, "pollen", link.federation_config)
        rounds = follow(out, cfg.run.rounds, run, [superlink.proc], console)
    except KeyboardInterrupt:
        record_failure(out, "interrupted")  # progress.json never stays at "train"
        raise
    finally:
        if run is not None:
            run.stop()
        superlink.proc.stop()
    wall = time.time() - started
    timing = breakdown(rounds, wall=wall, preflight=checked, cli_started=started,
                       server_started=_server_started(out))
    atomic_write_json(out / "timing.json", timing.to_json())
    summary(rounds, out, console, wall, timing=timing.line())
    return rounds


def _server_started(out: Path) -> float | None:
    """metrics.json's "started" (the ServerApp's ledger), if the file says so with a number."""
    try:
        started = json.loads((out / "metrics.json").read_text()).get("started")
    except (OSError, ValueError, AttributeError):
        return None
    return float(started) if isinstance(started, (int, float)) and not isinstance(started, bool) else None
