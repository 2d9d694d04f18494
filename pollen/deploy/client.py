"""`pollen client`: one Flower SuperNode that runs Pollen's ClientApp on this machine's data.

The SuperNode speaks gRPC (Flower 1.39's grpc-rere Fleet API) to the server's public `--host/--port`;
it never needs, and cannot reach, the server's loopback Control API.

The SuperNode runs in Flower's `process` isolation: it starts no app itself, and Pollen's app gate
(`pollen.deploy.app_gate`) starts `flwr-clientapp` only for the trusted Pollen app.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from pollen.deploy.app_gate import REFUSED_APP_EXIT, AppGate, trusted_app_hash, write_secret
from pollen.deploy.commands import SUPERNODE_CONNECTION_ERROR, flower_exit_code, supernode_command
from pollen.deploy.launch import flower_env, free_port
from pollen.deploy.reaper import guarded
from pollen.errors import ConfigError

# Our process exit status when the server refused the node (exit statuses stop at 255).
REFUSED_EXIT = 3
# Flower's documented exit codes a user is most likely to meet.
EXIT_REASONS = {
    SUPERNODE_CONNECTION_ERROR: "the server refused this node: wrong CA, or its key is not registered "
                                "at the server (node authentication)",
}


def supernode_argv(*, server: str, partition_id: int, num_partitions: int, insecure: bool,
                   certs: str | None, node_key: str | None, max_wait: float | None,
                   health_address: str | None = None, port: int | None = None) -> list[str]:
    """TLS by default; the node key defaults to DIR/node-<partition>.key when `pollen certs` made it.
    `port` is the SuperNode's loopback Runtime API."""
    if not 0 <= partition_id < num_partitions:
        raise ConfigError(f"--partition-id must be in [0, {num_partitions}), got {partition_id}")
    if ":" not in server:
        raise ConfigError(f"--server must be HOST:PORT, got {server!r}")
    if not insecure and certs is None:
        raise ConfigError("clients use TLS by default: pass --certs DIR (with ca.crt), "
                          "or --insecure against a loopback server")
    key = Path(node_key) if node_key else None
    if key is None and certs is not None and (Path(certs) / f"node-{partition_id}.key").is_file():
        key = Path(certs) / f"node-{partition_id}.key"
    return supernode_command(superlink=server, partition_id=partition_id,
                             num_partitions=num_partitions, insecure=insecure,
                             certs=None if certs is None else Path(certs), node_key=key,
                             port=port or free_port(), health_address=health_address,
                             max_wait_time=max_wait)


def gate_flags(secret: Path) -> list[str]:
    """SuperNode flags for the app gate: launch no app itself (`process` isolation), and hand
    tasks out only to requests signed with `secret` (Flower's SuperExec authentication)."""
    return ["--isolation", "process", "--superexec-auth-secret-file", str(secret)]


def _reachable(server: str) -> bool:
    host, _, port = server.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
            return True
    except OSError:
        return False


def _watchdog(proc: subprocess.Popen, server: str, max_wait: float, poll: float = 1.0) -> None:
    """Stop the SuperNode once the server has been unreachable for `max_wait` seconds.

    Flower's SuperNode was seen (1.41) to log "Giving up reconnection" after --max-wait-time and
    keep running, so Pollen enforces the limit itself whatever the Flower version does.
    """
    down_since: float | None = None
    while proc.poll() is None:
        if _reachable(server):
            down_since = None
        else:
            down_since = down_since or time.monotonic()
            if time.monotonic() - down_since >= max_wait:
                _server_gone.set()
                _stopping.set()
                proc.terminate()
                return
        time.sleep(poll)


_refused = threading.Event()
# Set when the watchdog stopped the SuperNode because the server has been gone for --max-wait: the
# normal end of a federation (the server finished), so the client exits 0 whatever the SuperNode's
# status after being stopped.
_server_gone = threading.Event()
# The running SuperNode, so the app gate can stop it when it refuses an app.
_current: list[subprocess.Popen] = []
# Set when the SuperNode was stopped on purpose (a signal, or the server gone for --max-wait).
_stopping = threading.Event()
# A SuperNode that crashed is replaced at most this many times in a row (a crash loop stops).
MAX_REJOINS = 20
# The server registers node keys just after its port opens; a refusal this soon after the server
# first answered may only mean "not registered yet", so it is retried until then.
REFUSAL_GRACE_S = 45.0


# Flower 1.39's SuperNode, once a restarted server no longer knows its node id, shuts its Runtime
# API down ("Finished server process") and then hangs in its exit path ("Heartbeat sender is not
# running") instead of exiting, so the client would never rejoin. Seen in tests/e2e/test_resume.py.
SHUTDOWN_MARK = "Finished server process"
# How long a SuperNode that announced its shutdown may take to exit before it is stopped.
EXIT_GRACE_S = 15.0


def _relay(proc: subprocess.Popen) -> None:
    """Pass the SuperNode's log through, noting Flower's refusal code when it appears."""
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line, end="", flush=True)
        if flower_exit_code(line) == SUPERNODE_CONNECTION_ERROR:
            _refused.set()
        if SHUTDOWN_MARK in line:
            threading.Thread(target=_reap_if_hung, args=(proc,), daemon=True).start()


def _reap_if_hung(proc: subprocess.Popen, grace: float = EXIT_GRACE_S) -> None:
    """Stop a SuperNode that said it shut down but is still alive after `grace` seconds."""
    try:
        proc.wait(timeout=grace)
        return
    except subprocess.TimeoutExpired:
        pass
    print(f"pollen client: the SuperNode shut down but did not exit within {grace:.0f} s; "
          "stopping it", flush=True)
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()


def _wait_reachable(server: str, max_wait: float | None, poll: float = 1.0) -> bool:
    deadline = None if max_wait is None else time.monotonic() + max_wait
    while not _stopping.is_set():
        if _reachable(server):
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(poll)
    return False


def _supernode(argv: list[str], env: dict[str, str], server: str, max_wait: float | None) -> int:
    # Under the reaper guard, so anything the SuperNode starts ends with this client (the gate's
    # flwr-clientapp processes watch this process through --parent-pid).
    proc = subprocess.Popen(guarded(argv), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    _current[:] = [proc]
    if _stopping.is_set():  # the gate refused an app while the previous SuperNode was stopping
        proc.terminate()
    threading.Thread(target=_relay, args=(proc,), daemon=True).start()

    def forward(signum: int, _frame: object) -> None:
        _stopping.set()
        proc.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    if max_wait is not None:
        threading.Thread(target=_watchdog, args=(proc, server, max_wait), daemon=True).start()
    return proc.wait()


def _stop_for_refusal(_line: str) -> None:
    """The app gate refused an app: this client stops (exit status REFUSED_APP_EXIT)."""
    _stopping.set()
    for proc in _current:
        if proc.poll() is None:
            proc.terminate()


def run_client(*, server: str, partition_id: int, num_partitions: int, insecure: bool,
               certs: str | None, node_key: str | None, max_wait: float | None,
               health_address: str | None = None, trusted_app_hash_pin: str | None = None) -> int:
    """Run a SuperNode and the app gate; when the SuperNode quits on its own, start a fresh one
    once the server answers again.

    A SuperNode only ends by itself when something broke: a restarted server no longer knows its
    node id, and Flower's SuperNode then stops after its heartbeat is refused.
    The ways this client is meant to end (a signal, the server gone for --max-wait, an app refused
    by the gate) set `_stopping`.
    """
    # Bad arguments (and a malformed hash pin) are refused before anything starts or waits.
    trusted = trusted_app_hash(trusted_app_hash_pin)
    port = free_port()
    argv = supernode_argv(server=server, partition_id=partition_id,
                          num_partitions=num_partitions, insecure=insecure, certs=certs,
                          node_key=node_key, max_wait=max_wait, health_address=health_address,
                          port=port)
    work = Path(tempfile.mkdtemp(prefix="pollen-client-"))  # 0700: the secret and task tokens
    try:
        secret = write_secret(work)
        (work / "flwr-home").mkdir()
        env = flower_env(work / "flwr-home")
        _refused.clear()
        _stopping.clear()
        _server_gone.clear()
        _current.clear()
        gate = AppGate(f"127.0.0.1:{port}", trusted, workdir=work, env=env, secret_file=secret,
                       on_refuse=_stop_for_refusal)
        try:
            code = _rejoin_loop(argv + gate_flags(secret), env, server, max_wait, gate)
        finally:
            gate.stop()
        return REFUSED_APP_EXIT if gate.refused is not None else code
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _rejoin_loop(argv: list[str], env: dict[str, str], server: str, max_wait: float | None,
                 gate: AppGate) -> int:
    # A server still loading its model has no SuperLink yet; Flower's SuperNode would give up
    # after ~20 s with the same code 305 as a refusal. Start it once the server's port answers.
    if not _reachable(server):
        print(f"pollen client: waiting for the server at {server}", flush=True)
        if not _wait_reachable(server, max_wait):
            print(f"error: no server answered at {server} within {max_wait:.0f} s", flush=True)
            return 1
    first_answer = time.monotonic()
    gate.start()
    code = 1
    for attempt in range(MAX_REJOINS + 1):
        code = _supernode(argv, env, server, max_wait)
        # Flower exits with status 1 for every error; its own code is only printed in the log.
        if (code != 0 and _refused.is_set() and not _stopping.is_set() and attempt < MAX_REJOINS
                and time.monotonic() - first_answer < REFUSAL_GRACE_S):
            print("pollen client: refused; the server may still be registering node keys, retrying",
                  flush=True)
            _refused.clear()
            time.sleep(3)
            continue
        if gate.refused is not None:
            return REFUSED_APP_EXIT
        if code != 0 and _refused.is_set():
            flower_code = SUPERNODE_CONNECTION_ERROR
            print(f"error: {EXIT_REASONS[flower_code]} (Flower exit code {flower_code})")
            return REFUSED_EXIT
        if _server_gone.is_set():
            print(f"pollen client: the server has been gone for {max_wait:.0f} s; exiting", flush=True)
            return 0
        if _stopping.is_set() or attempt == MAX_REJOINS:
            return code
        print(f"pollen client: the SuperNode exited with status {code}; rejoining once the server "
              "answers", flush=True)
        if not _wait_reachable(server, max_wait):
            return code
    return code
