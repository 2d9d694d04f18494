"""`pollen server`: a Flower SuperLink on the network plus the Pollen run submitted to it."""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path

from rich.console import Console

from pollen.config import PollenConfig
from pollen.errors import ConfigError, DeploymentError
from pollen.launch import flower_env, start_superlink, submit_run, write_app, write_connection
from pollen.progress import follow, summary
from pollen.simulations.runner import preflight, prepare_out


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
    t0 = time.monotonic()
    with console.status("checking config, data and model…"):
        preflight(cfg)
    out = prepare_out(cfg)
    app = write_app(cfg, out)
    home = out / ".flwr-home"
    env = flower_env(home)
    superlink, port = start_superlink(out, env, simulation=False, host=host, port=port, tls=tls)
    run = None
    try:
        write_connection(home, "pollen", f"127.0.0.1:{port}", insecure=insecure,
                         root_cert=None if tls is None else tls[0])
        console.print(f"SuperLink listening on {host}:{port} ({'insecure' if insecure else 'TLS'}); "
                      f"waiting for {cfg.federation.clients} clients: "
                      f"pollen client --server HOST:{port} --partition-id I "
                      f"--num-partitions {cfg.federation.clients}")
        run = submit_run(app, out, env, "pollen")
        rounds = follow(out, cfg.run.rounds, run, [superlink], console)
    finally:
        if run is not None:
            run.stop()
        superlink.stop()
    if not rounds:
        raise DeploymentError("the run produced no rounds")
    summary(rounds, out, console, time.monotonic() - t0)
    return rounds
