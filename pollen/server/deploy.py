"""`pollen server`: a Flower SuperLink on the network plus the Pollen run submitted to it."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from rich.console import Console

from pollen.config import PollenConfig
from pollen.errors import ConfigError, DeploymentError
from pollen.federation import LinkOptions, run_federation


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tls_files(certs: str | Path) -> tuple[Path, Path, Path]:
    d = Path(certs)
    files = (d / "ca.crt", d / "server.pem", d / "server.key")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ConfigError(f"TLS files missing: {', '.join(missing)}; create them with "
                          f"`pollen certs --out {d}`")
    return files


def serve(cfg: PollenConfig, console: Console, *, host: str, port: int, insecure: bool,
          certs: str | None) -> list[dict]:
    if insecure and not _is_loopback(host):
        raise ConfigError(f"--insecure is allowed on loopback only (got --host {host}); "
                          "use --certs DIR from `pollen certs` for TLS")
    if not insecure and certs is None:
        raise ConfigError("the server runs with TLS by default: pass --certs DIR (from `pollen certs`), "
                          "or --insecure on loopback")
    tls = None if insecure else tls_files(certs)  # type: ignore[arg-type]

    def announce(bound: int) -> None:
        console.print(f"SuperLink listening on {host}:{bound} ({'insecure' if insecure else 'TLS'}); "
                      f"waiting for {cfg.federation.clients} clients: "
                      f"pollen client --server HOST:{bound} --partition-id I "
                      f"--num-partitions {cfg.federation.clients}")

    rounds = run_federation(cfg, console, LinkOptions(simulation=False, host=host, port=port, tls=tls,
                                                      on_listening=announce))
    if not rounds:
        raise DeploymentError("the run produced no rounds")
    return rounds
