"""`pollen server`: a Flower SuperLink on the network plus the Pollen run submitted to it.

Only the Fleet API (gRPC-rere, what SuperNodes speak) listens on `--host/--port`. The Control API
(run submission, node registration, list, logs, stop) and the ServerAppIo API listen on loopback
(`--control-port`, default port + 1): an outsider holding `ca.crt` cannot reach them.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from pollen.config import PollenConfig
from pollen.deploy.certs import load_bundle
from pollen.deploy.commands import host_port, is_loopback
from pollen.deploy.federation import LinkOptions, run_federation
from pollen.errors import ConfigError, DeploymentError


def serve(cfg: PollenConfig, console: Console, *, host: str, port: int, insecure: bool,
          certs: str | None, node_auth: bool = True, health_address: str | None = None,
          resume: bool = False, control_port: int | None = None,
          control_host: str = "127.0.0.1") -> list[dict]:
    """TLS by default, with Flower node authentication for the node keys made by `pollen certs`."""
    if certs is not None:  # Flower's processes and `flwr` run in other working directories
        certs = str(Path(certs).absolute())
    if not is_loopback(control_host):
        raise ConfigError(f"--control-host {control_host} is not a loopback address; the Control API "
                          "(run submission, node registration) never leaves this host")
    control_port = port + 1 if control_port is None else control_port
    if not 0 < control_port < 65536 or control_port == port:
        raise ConfigError(f"--control-port must be a free port other than --port {port}, "
                          f"got {control_port}")
    if insecure and certs is not None:
        raise ConfigError("--insecure conflicts with --certs; pass one or the other")
    if insecure and not is_loopback(host):
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

    def announce(bound: int, control: int) -> None:
        mode = "insecure" if insecure else ("TLS + node auth" if pubs else "TLS")
        console.print(f"SuperLink Fleet API (gRPC) listening on {host_port(host, bound)} ({mode}); "
                      f"Control API on {host_port(control_host, control)} (this host only). "
                      f"Waiting for {cfg.federation.clients} clients: pollen client --server "
                      f"HOST:{bound} --partition-id I --num-partitions {cfg.federation.clients}"
                      + ("" if insecure else f" --certs {certs}"))

    link = LinkOptions(simulation=False, host=host, port=port, control_host=control_host,
                       control_port=control_port,
                       certs=None if bundle is None else Path(certs),  # type: ignore[arg-type]
                       node_pubs=pubs, health_address=health_address, on_listening=announce,
                       resume=resume)
    rounds = run_federation(cfg, console, link)
    if not rounds:
        raise DeploymentError("the run produced no rounds")
    return rounds
