"""Register SuperNode public keys with a running SuperLink, the way Flower 1.39 supports it.

Flower 1.39 has no SuperLink flag that lists allowed keys (`--auth-list-public-keys` makes
`flower-superlink` exit): with `--enable-supernode-auth` a node may connect only after
`flwr supernode register KEY.pub CONNECTION` stored its key in the SuperLink's state through the
Control API, which Pollen binds to loopback (so registration only happens on the server host; the
Fleet API's own RegisterNode is refused under node authentication). We drive that documented CLI (not Flower's internal HTTP client) with a connection
entry written into a private `$FLWR_HOME/config.toml`. Registrations live in the SuperLink's state:
in memory by default, so they must be repeated after every SuperLink restart unless it runs with
`--database FILE`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

from pollen.errors import DeploymentError

CONNECTION = "pollen-deploy"
# Substrings of `flwr ... --format json` error messages.
_UNREACHABLE = "Connection to the SuperLink is unavailable"
_ALREADY = "Public key already in use"


@dataclass(frozen=True)
class RegisteredNode:
    """One registration: `node_id` is None when the key was registered before (id not reported)."""

    pub_key: Path
    node_id: int | None
    already_registered: bool


def flwr_executable(name: str = "flwr") -> str:
    """Flower's console script from this interpreter's environment first, else from PATH."""
    local = Path(sys.executable).parent / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise DeploymentError(f"`{name}` not found; install Flower (pip install 'flwr[simulation]==1.39.0')")
    return found


def flower_env(flwr_home: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for Flower processes: private FLWR_HOME, no telemetry/update checks, and this
    interpreter's bin/ first on PATH (the SuperLink/SuperNode spawn `flower-superexec` by name).

    Flower's internal toggle that adds a gRPC Control API on 0.0.0.0:9093 is removed: the Control
    API must exist only on the loopback HTTP port."""
    env = dict(os.environ if base is None else base)
    env.pop("FLWR_INTERNAL_GRPC_CONTROL_API", None)
    env["FLWR_HOME"] = str(Path(flwr_home).resolve())
    env.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    env.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    return env


def write_connection(flwr_home: Path, address: str, *, root_cert: Path | None, insecure: bool,
                     name: str = CONNECTION, make_default: bool = True) -> Path:
    """Add/replace `[superlink.NAME]` in $FLWR_HOME/config.toml, keeping other entries."""
    if insecure and root_cert is not None:
        raise DeploymentError("insecure=True conflicts with a root certificate; pass one or the other")
    if root_cert is not None and not Path(root_cert).is_file():
        raise DeploymentError(f"root certificate {root_cert} does not exist")
    flwr_home = Path(flwr_home)
    flwr_home.mkdir(parents=True, exist_ok=True)
    path = flwr_home / "config.toml"
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise DeploymentError(f"{path} is not valid TOML ({err}); fix or delete it") from err
    links = data.setdefault("superlink", {})
    entry: dict[str, Any] = {"address": address}
    if insecure:
        entry["insecure"] = True
    elif root_cert is not None:
        entry["root-certificates"] = str(Path(root_cert).resolve())
    links[name] = entry
    if make_default:
        links["default"] = name
    path.write_text(tomli_w.dumps(data))
    return path


def _check_pub_key(path: Path) -> None:
    """Fail before any network call, with the file named (Flower's own message is generic)."""
    if not path.is_file():
        raise DeploymentError(f"node public key {path} does not exist")
    try:
        key = load_ssh_public_key(path.read_bytes())
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise DeploymentError(f"{path} is not an OpenSSH public key ({err}); "
                              "use the node-I.pub files from `pollen certs`") from err
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise DeploymentError(f"{path} is not an EC key; Flower node auth needs NIST EC (P-384)")


def _flwr_json(args: list[str], flwr_home: Path, timeout: float) -> dict[str, Any]:
    cmd = [flwr_executable(), *args, "--format", "json"]
    try:
        # cwd=flwr_home: `flwr` migrates a pyproject.toml it finds in cwd; keep it off user projects.
        proc = subprocess.run(cmd, env=flower_env(flwr_home), cwd=flwr_home, capture_output=True,
                              text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as err:
        raise DeploymentError(f"`{' '.join(cmd)}` did not answer within {timeout:.0f} s") from err
    try:  # JSON mode exits 0 on failure; the verdict is in "success"
        start = proc.stdout.index("{")
        return json.loads(proc.stdout[start:])
    except ValueError as err:
        detail = (proc.stderr or proc.stdout).strip()[-600:]
        raise DeploymentError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}): {detail}") from err


def _register_one(pub: Path, connection: str, flwr_home: Path, deadline: float) -> RegisteredNode:
    while True:
        out = _flwr_json(["supernode", "register", str(pub), connection], flwr_home,
                         timeout=max(5.0, deadline - time.monotonic()))
        if out.get("success"):
            return RegisteredNode(pub, int(out["node-id"]), already_registered=False)
        msg = str(out.get("error-message", out))
        if _ALREADY in msg:
            return RegisteredNode(pub, None, already_registered=True)
        if _UNREACHABLE in msg and time.monotonic() < deadline:
            time.sleep(0.5)  # SuperLink still starting
            continue
        raise DeploymentError(f"registering {pub.name} with the SuperLink failed: {msg.strip()}")


def register_nodes(superlink_control_address: str, pub_keys: Iterable[Path], *, flwr_home: Path,
                   root_cert: Path | None, insecure: bool, connection: str = CONNECTION,
                   timeout: float = 180.0, workers: int = 4) -> list[RegisteredNode]:
    """Register each OpenSSH EC public key with the SuperLink at `superlink_control_address`.

    The Control API is the SuperLink's loopback HTTP `--host:--port`. Idempotent: a key that is
    already registered is reported, not an error. Waits up to `timeout` s for the SuperLink to
    come up. Registrations run a few at a time since each `flwr` call costs ~1 s of start-up.
    """
    keys = [Path(p).absolute() for p in pub_keys]  # `flwr` runs with cwd=flwr_home
    for k in keys:
        _check_pub_key(k)
    if len({k.read_bytes().split()[1] for k in keys}) != len(keys):
        raise DeploymentError("the same public key is listed twice; every node needs its own key")
    write_connection(flwr_home, superlink_control_address, root_cert=root_cert, insecure=insecure,
                     name=connection)
    if not keys:
        return []
    deadline = time.monotonic() + timeout
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(keys)))) as pool:
        futures = [pool.submit(_register_one, k, connection, Path(flwr_home), deadline) for k in keys]
        return [f.result() for f in futures]


def list_nodes(flwr_home: Path, *, connection: str = CONNECTION,
               timeout: float = 30.0) -> list[dict[str, Any]]:
    """The SuperLink's node table (`flwr supernode list`): dicts with node-id, status, ...

    status is "registered" until the SuperNode connects, then "online" (later "offline").
    """
    out = _flwr_json(["supernode", "list", connection], Path(flwr_home), timeout)
    if not out.get("success"):
        raise DeploymentError(f"listing SuperNodes failed: {str(out.get('error-message', out)).strip()}")
    return list(out.get("nodes", []))
