"""`pollen server`: a Flower SuperLink on the network plus the Pollen run submitted to it."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from rich.console import Console

from pollen.config import PollenConfig
from pollen.errors import ConfigError, DeploymentError
from pollen.federation import LinkOptions, run_federation
from pollen.server.certs import load_bundle


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(cfg: PollenConfig, console: Console, *, host: str, port: int, insecure: bool,
          certs: str | None, node_auth: bool = True, health_address: str | None = None,
          resume: bool = False) -> list[dict]:
    """TLS by default, with Flower node authentication for the node keys made by `pollen certs`."""
    if certs is not None:  # Flower's processes and `flwr` run in other working directories
        certs = str(Path(certs).absolute())
    if insecure and certs is not None:
        raise ConfigError("--insecure conflicts with --certs; pass one or the other")
    if insecure and not _is_loopback(host):
        raise ConfigError(f"--insecure is allowed on loopback only (got --host {host}); "
                          "use --certs DIR from `pollen certs` for TLS")
    if not insecure and certs is None:
        raise ConfigError("the server runs with TLS by default: pass --certs DIR (from `pollen certs`), "
                          "or --insecure on loopback")
    bundle = None if insecure else load_bundle(Path(certs), role="server")  # type: ignore[arg-type]
    pubs = list(bundle.node_pubs) if bundle is not None and node_auth else []
    if bundle is not None and node_auth and len(pubs) < cfg.federation.clients:
        raise ConfigError(f"{certs} holds {len(pubs)} node keys but federation.clients = "
                          f"{cfg.federation.clients}; re-run `pollen certs --nodes "
                          f"{cfg.federation.clients}` or pass --no-node-auth")

    def announce(bound: int) -> None:
        mode = "insecure" if insecure else ("TLS + node auth" if pubs else "TLS")
        console.print(f"SuperLink listening on {host}:{bound} ({mode}); waiting for "
                      f"{cfg.federation.clients} clients: pollen client --server HOST:{bound} "
                      f"--partition-id I --num-partitions {cfg.federation.clients}"
                      + ("" if insecure else f" --certs {certs}"))

    link = LinkOptions(simulation=False, host=host, port=port,
                       certs=None if bundle is None else Path(certs),  # type: ignore[arg-type]
                       node_pubs=pubs, health_address=health_address, on_listening=announce,
                       resume=resume)
    rounds = run_federation(cfg, console, link)
    if not rounds:
        raise DeploymentError("the run produced no rounds")
    return rounds
