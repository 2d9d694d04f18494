"""The client's app gate: this machine runs Pollen's app and nothing else (issue 10).

Why: without it, a SuperNode runs whatever app its server sends, so a compromised or impersonated
server gets code execution on every client. Flower's own defence (`--trusted-entities`, signed
FABs) needs a SuperLink that issues app licences, which an open-source deployment does not have.

How: `pollen client` starts the SuperNode with `--isolation process`. Such a SuperNode starts no
app itself: it only queues one task per received message (with the run's `fab_hash`, the SHA-256
of the FAB bytes, which the SuperNode recomputes when it stores the FAB) on its loopback Runtime
API. This gate takes those tasks with Flower's own Runtime API client, in place of Flower's
`flower-superexec`, and

* starts `flwr-clientapp` for a ClientApp task of the trusted hash (the task token goes through a
  0600 file, never argv where `ps` shows it);
* for anything else prints one line, "refusing app <hash>: not the trusted Pollen app <hash>", and
  stops the client with exit status 4 (`REFUSED_APP_EXIT`): the server that sent it is not the
  one this client agreed to serve, so the node leaves rather than stay at its disposal.

The trusted hash is that of the installed Pollen's bundle (`pollen.deploy.app_bundle.bundle_hash`);
`--trusted-app-hash` or POLLEN_TRUSTED_APP_HASH pin another (e.g. the server's `pollen app-hash`).
The Runtime API's task-acquisition calls are HMAC-authenticated with a per-client random secret
(`--superexec-auth-secret-file`), so other local processes cannot take tasks (and tokens) first.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pollen.deploy.app_bundle import TRUSTED_HASH_ENV, bundle_hash, validate_app_hash
from pollen.errors import PollenError

# `pollen client` exit status when the server sent an app this client does not trust.
REFUSED_APP_EXIT = 4
CLIENT_APP_TASK = "flwr-clientapp"  # flwr.supercore.constant.TaskType.CLIENT_APP
# The Runtime API methods Flower signs with the SuperExec secret (flwr.supercore.superexec).
_AUTH_METHODS = frozenset({"/flwr.proto.Runtime/AcquireTask",
                           "/flwr.proto.Runtime/PullPendingTasks",
                           "/flwr.proto.Runtime/ClaimTask"})


def trusted_app_hash(flag: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The hash this client runs: the flag, else the environment, else this Pollen's bundle."""
    env = os.environ if env is None else env
    if flag is not None:
        return validate_app_hash(flag, "--trusted-app-hash")
    pinned = env.get(TRUSTED_HASH_ENV, "")
    if pinned.strip():
        return validate_app_hash(pinned, TRUSTED_HASH_ENV)
    return bundle_hash()


@dataclass(frozen=True)
class Verdict:
    run: bool
    line: str


def decide(task_type: str, fab_hash: str, trusted: str) -> Verdict:
    """Run only a ClientApp task whose FAB is byte-for-byte the trusted app."""
    shown = fab_hash or "<none>"
    if task_type != CLIENT_APP_TASK:
        return Verdict(False, f"refusing app {shown}: a {task_type or 'untyped'} task, but this "
                              f"client runs only the trusted Pollen app {trusted}")
    if fab_hash != trusted:
        return Verdict(False, f"refusing app {shown}: not the trusted Pollen app {trusted}")
    return Verdict(True, f"running the trusted app {trusted[:12]}")


def write_secret(directory: Path, name: str = "superexec.secret") -> Path:
    """A fresh random secret in a 0600 file, shared by the SuperNode and the gate only."""
    return _write_private(directory / name, secrets.token_bytes(32))


def _write_private(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path


class AppGate:
    """Polls the SuperNode's Runtime API; launches trusted ClientApps, refuses the rest."""

    def __init__(self, runtime_address: str, trusted: str, *, workdir: Path,
                 env: dict[str, str], secret_file: Path | None = None,
                 on_refuse: Callable[[str], None] | None = None, poll_s: float = 0.5,
                 log: Callable[[str], None] | None = None) -> None:
        self.address, self.trusted = runtime_address, trusted
        self.workdir, self.env, self.poll_s = workdir, env, poll_s
        self.secret = None if secret_file is None else secret_file.read_bytes()
        self.on_refuse = on_refuse
        self.log = log or (lambda line: print(line, flush=True))
        self.refused: str | None = None
        self.launched = 0
        self._apps: list[tuple[subprocess.Popen, Path]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pollen-app-gate", daemon=True)

    def start(self) -> AppGate:
        self._thread.start()
        return self

    def stop(self, grace: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(grace)
        for proc, _ in self._apps:
            if proc.poll() is None:
                proc.terminate()
        for proc, _ in self._apps:
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._reap(force=True)

    def _client(self) -> object:
        from flwr.supercore.interceptors import (
            RuntimeVersionHttpInterceptor,
            SuperExecAuthHttpInterceptor,
        )
        from flwr.supercore.runtime import RuntimeHttpClient

        interceptors: list[object] = [RuntimeVersionHttpInterceptor(component_name="SuperExec")]
        if self.secret:
            interceptors.append(SuperExecAuthHttpInterceptor(master_secret=self.secret,
                                                             protected_methods=_AUTH_METHODS))
        return RuntimeHttpClient.from_server_address(server_address=self.address, insecure=True,
                                                     root_certificates=None,
                                                     interceptors=interceptors)  # type: ignore[arg-type]

    def _loop(self) -> None:
        from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=E0611

        client = self._client()
        # Ask for every task type: one the gate did not take would wait silently forever.
        request = AcquireTaskRequest(supported_task_types=["flwr-clientapp", "flwr-agentapp",
                                                           "flwr-connector", "flwr-model"])
        try:
            while not self._stop.is_set():
                self._reap()
                try:
                    res = client.AcquireTask(request)  # type: ignore[attr-defined]
                except Exception:  # noqa: BLE001 - the SuperNode is starting or restarting
                    self._stop.wait(1.0)
                    continue
                if res.HasField("task") and res.token:
                    if not self._handle(res.task, res.token):
                        return
                else:
                    self._stop.wait(self.poll_s)
        finally:
            client.close()  # type: ignore[attr-defined]

    def _handle(self, task: object, token: str) -> bool:
        """Launch or refuse one task; False once the client must stop."""
        fab_hash = str(getattr(task, "fab_hash", "") or "")
        verdict = decide(str(getattr(task, "type", "")), fab_hash, self.trusted)
        if not verdict.run:
            self.refused = verdict.line
            self.log(f"error: {verdict.line}")
            if self.on_refuse is not None:
                self.on_refuse(verdict.line)
            return False
        if self.launched == 0:
            self.log(f"pollen client: {verdict.line}")
        try:
            self._launch(token, int(getattr(task, "task_id", 0)))
        except (OSError, PollenError) as e:  # the task's token expires: Flower replies with an error
            self.log(f"error: could not start flwr-clientapp: {e}")
        return True

    def _launch(self, token: str, task_id: int) -> None:
        from pollen.deploy.launch import flwr_executable

        token_file = _write_private(self.workdir / f"task-{task_id}-{secrets.token_hex(4)}.token",
                                    token.encode())
        argv = [flwr_executable("flwr-clientapp"), "--runtime-api-address", self.address,
                "--token-file", str(token_file), "--insecure", "--parent-pid", str(os.getpid())]
        self._apps.append((subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL),
                           token_file))
        self.launched += 1

    def _reap(self, force: bool = False) -> None:
        """Forget finished ClientApps and delete their token files."""
        alive = []
        for proc, token_file in self._apps:
            if force or proc.poll() is not None:
                token_file.unlink(missing_ok=True)
            else:
                alive.append((proc, token_file))
        self._apps = alive

