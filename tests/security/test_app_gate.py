"""Clients run only Pollen (issue 10): the fixed app bundle, the trusted-hash pin and the app gate.

Fast tests check the bundle's bytes (reproducible, equal to what `flwr run` submits), the pin's
validation and the gate's decision. The slow tests use real processes on loopback with TLS and
node authentication: a server that sends a foreign app is refused by `pollen client` with one line
and exit status 4 (the foreign ClientApp never runs), a pinned hash lets exactly that app run, and
a genuine `pollen server` run completes through the gate.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from pollen.cli import main
from pollen.deploy import app_bundle
from pollen.deploy.app_bundle import (
    CLIENT_COMPONENT,
    SERVER_COMPONENT,
    TRUSTED_HASH_ENV,
    build_bundle,
    bundle_files,
    bundle_hash,
    validate_app_hash,
    write_bundle,
    write_run_config,
)
from pollen.deploy.app_gate import REFUSED_APP_EXIT, AppGate, decide, trusted_app_hash, write_secret
from pollen.deploy.client import gate_flags
from pollen.errors import ConfigError
from pollen.protocol.records import CONFIG_KEY, OUT_KEY, RESUME_KEY

OTHER = "ab" * 32


# ---- the bundle --------------------------------------------------------------------------------

def test_bundle_is_reproducible_and_is_what_flwr_run_submits(tmp_path: Path) -> None:
    from flwr.cli.build import build_fab_from_disk

    first = build_bundle()
    build_bundle.cache_clear()
    assert build_bundle() == first  # rebuilt from scratch: same bytes
    assert bundle_hash() == hashlib.sha256(first).hexdigest()
    # `flwr run DIR` builds the FAB from the directory Pollen writes: the same bytes, the same hash.
    for attempt in range(2):
        app = write_bundle(tmp_path / "app")
        assert hashlib.sha256(build_fab_from_disk(app)).hexdigest() == bundle_hash(), attempt
    with zipfile.ZipFile(io.BytesIO(first)) as fab:
        assert fab.namelist() == ["pyproject.toml", ".info/CONTENT"]
        assert {info.date_time for info in fab.infolist()} == {(2024, 10, 1, 0, 0, 0)}
        pyproject = fab.read("pyproject.toml").decode()
    assert f'serverapp = "{SERVER_COMPONENT}"' in pyproject
    assert f'clientapp = "{CLIENT_COMPONENT}"' in pyproject


def test_bundle_identity_follows_the_pollen_version() -> None:
    assert bundle_hash("0.1.0") != bundle_hash("9.9.9")
    assert b'version = "9.9.9"' in bundle_files("9.9.9")["pyproject.toml"]


def test_write_bundle_leaves_nothing_else_in_the_fab(tmp_path: Path) -> None:
    app = tmp_path / "app"
    (app / "pollen" / "client").mkdir(parents=True)
    (app / "pollen" / "client" / "app.py").write_text("raise SystemExit('shadowed')\n")
    write_bundle(app)
    assert sorted(p.name for p in app.rglob("*")) == ["pyproject.toml"]


def test_run_values_travel_in_the_run_config_and_reach_the_app(tmp_path: Path) -> None:
    """Flower keeps only override keys the FAB declares: the bundle declares all three."""
    from flwr.common.config import fuse_dicts, get_fab_config, parse_config_args

    path = write_run_config(tmp_path / ".flwr-run-config.toml", config_json='{"run": {"rounds": 2}}',
                            out=tmp_path / "out", resume=True)
    overrides = parse_config_args([str(path)])  # how `flwr run --run-config FILE` reads it
    defaults = get_fab_config(build_bundle())["tool"]["flwr"]["app"]["config"]
    fused = fuse_dicts(defaults, overrides)
    assert fused == {CONFIG_KEY: '{"run": {"rounds": 2}}', OUT_KEY: str((tmp_path / "out").resolve()),
                     RESUME_KEY: True}


def test_launcher_writes_the_fixed_bundle_and_the_run_config(tmp_path: Path) -> None:
    from pollen.config import PollenConfig
    from pollen.deploy.launch import run_config_path, write_app

    cfg = PollenConfig.load(None, {})
    app = write_app(cfg, tmp_path, resume=False)
    assert (app / "pyproject.toml").read_bytes() == bundle_files()["pyproject.toml"]
    values = tomllib.loads(run_config_path(tmp_path).read_text())
    assert values == {CONFIG_KEY: cfg.to_json(), OUT_KEY: str(tmp_path.resolve()), RESUME_KEY: False}


# ---- the pin -----------------------------------------------------------------------------------

def test_pin_validation() -> None:
    assert validate_app_hash(f"  {OTHER.upper()}\n") == OTHER
    for bad in ("", "abc", OTHER + "0", "g" * 64, OTHER[:-1] + " "):
        with pytest.raises(ConfigError) as err:
            validate_app_hash(bad)
        assert "\n" not in str(err.value) and "--trusted-app-hash" in str(err.value)


def test_trusted_hash_comes_from_flag_then_environment_then_this_pollen() -> None:
    assert trusted_app_hash(None, {}) == bundle_hash()
    assert trusted_app_hash(None, {TRUSTED_HASH_ENV: "  "}) == bundle_hash()  # blank = unset
    assert trusted_app_hash(None, {TRUSTED_HASH_ENV: OTHER}) == OTHER
    assert trusted_app_hash("cd" * 32, {TRUSTED_HASH_ENV: OTHER}) == "cd" * 32
    with pytest.raises(ConfigError, match=TRUSTED_HASH_ENV):
        trusted_app_hash(None, {TRUSTED_HASH_ENV: "not-a-hash"})


def test_cli_prints_the_hash_and_refuses_a_malformed_pin(capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["app-hash"]) == 0
    assert capsys.readouterr().out == bundle_hash() + "\n"
    monkeypatch.delenv(TRUSTED_HASH_ENV, raising=False)
    code = main(["client", "--server", "127.0.0.1:1", "--partition-id", "0", "--num-partitions", "1",
                 "--insecure", "--trusted-app-hash", "deadbeef"])
    out = capsys.readouterr().out
    assert code == 2 and out.count("\n") == 1 and "--trusted-app-hash must be a SHA-256" in out
    monkeypatch.setenv(TRUSTED_HASH_ENV, "deadbeef")
    assert main(["client", "--server", "127.0.0.1:1", "--partition-id", "0",
                 "--num-partitions", "1", "--insecure"]) == 2
    assert TRUSTED_HASH_ENV in capsys.readouterr().out


# ---- the gate ----------------------------------------------------------------------------------

def test_gate_runs_only_a_client_app_of_the_trusted_hash() -> None:
    trusted = bundle_hash()
    assert decide("flwr-clientapp", trusted, trusted).run
    foreign = decide("flwr-clientapp", OTHER, trusted)
    assert not foreign.run
    assert foreign.line == f"refusing app {OTHER}: not the trusted Pollen app {trusted}"
    assert not decide("flwr-clientapp", "", trusted).run
    for kind in ("flwr-agentapp", "flwr-connector", "flwr-model", ""):  # even with the right hash
        verdict = decide(kind, trusted, trusted)
        assert not verdict.run and verdict.line.startswith(f"refusing app {trusted}: ")


def test_gate_refusal_launches_nothing_and_stops_the_client(tmp_path: Path) -> None:
    lines: list[str] = []
    stops: list[str] = []
    gate = AppGate("127.0.0.1:1", bundle_hash(), workdir=tmp_path, env=dict(os.environ),
                   on_refuse=stops.append, log=lines.append)
    task = SimpleNamespace(type="flwr-clientapp", fab_hash=OTHER, task_id=7)
    assert gate._handle(task, "f" * 64) is False
    assert gate.launched == 0 and list(tmp_path.iterdir()) == []  # no token file was written
    line = f"refusing app {OTHER}: not the trusted Pollen app {bundle_hash()}"
    assert lines == [f"error: {line}"] and stops == [line] and gate.refused == line


def test_secret_is_private_and_supernode_hands_tasks_to_the_gate(tmp_path: Path) -> None:
    secret = write_secret(tmp_path)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and len(secret.read_bytes()) == 32
    flags = gate_flags(secret)
    assert flags[:2] == ["--isolation", "process"]
    assert flags[2:] == ["--superexec-auth-secret-file", str(secret)]


# ---- real processes: TLS + node authentication on loopback -------------------------------------

FOREIGN_PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "foreign-app"
version = "1.0.0"
description = "not Pollen"
dependencies = []
license = "Apache-2.0"

[tool.flwr.app]
publisher = "mallory"

[tool.flwr.app.components]
serverapp = "foreign.server_side:app"
clientapp = "foreign.client_side:app"

[tool.flwr.app.config]
marker = ""
"""
FOREIGN_SERVER = """\
import time
from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    nodes, deadline = [], time.monotonic() + 240
    while not nodes and time.monotonic() < deadline:
        nodes = list(grid.get_node_ids())
        time.sleep(0.5)
    msgs = [Message(RecordDict(), dst_node_id=n, message_type="train") for n in nodes]
    list(grid.send_and_receive(msgs, timeout=240))
"""
FOREIGN_CLIENT = """\
from pathlib import Path
from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    Path(str(context.run_config["marker"])).write_text("foreign code ran on the client")
    return Message(RecordDict(), reply_to=msg)
"""


def _foreign_app(root: Path) -> Path:
    (root / "foreign").mkdir(parents=True)
    (root / "pyproject.toml").write_text(FOREIGN_PYPROJECT)
    (root / "foreign" / "__init__.py").write_text("")
    (root / "foreign" / "server_side.py").write_text(FOREIGN_SERVER)
    (root / "foreign" / "client_side.py").write_text(FOREIGN_CLIENT)
    return root


def _pollen(*args: str, log: Path) -> subprocess.Popen:
    with open(log, "ab") as fh:
        return subprocess.Popen([sys.executable, "-m", "pollen.cli", *args], stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _stop(*procs: subprocess.Popen) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


@pytest.mark.slow
def test_foreign_app_is_refused_and_a_pinned_app_runs(tmp_path: Path) -> None:
    """A server (TLS, node auth) that submits a foreign FAB: the client refuses it in one line and
    exits 4, and the foreign ClientApp never runs. Pinned to that FAB's hash, it does run."""
    from flwr.cli.build import build_fab_from_disk

    from pollen.deploy.certs import generate_certs
    from pollen.deploy.launch import flower_env, start_superlink, submit_run
    from pollen.deploy.node_auth import register_nodes, write_connection

    certs = generate_certs(tmp_path / "certs", ["127.0.0.1", "localhost"], 1)
    app = _foreign_app(tmp_path / "foreign-app")
    foreign_hash = hashlib.sha256(build_fab_from_disk(app)).hexdigest()
    out, home = tmp_path / "server", tmp_path / "server" / "flwr-home"
    home.mkdir(parents=True)
    env = flower_env(home)
    link = start_superlink(out, env, simulation=False, certs=certs.dir, node_auth=True)
    procs: list[subprocess.Popen] = []
    try:
        control = link.control_address
        register_nodes(control, certs.node_pubs, flwr_home=home, root_cert=certs.ca_cert,
                       insecure=False, connection="pollen")
        write_connection(home, control, root_cert=certs.ca_cert, insecure=False, name="pollen")
        client_args = ("client", "--server", f"127.0.0.1:{link.fleet_port}", "--certs",
                       str(certs.dir), "--partition-id", "0", "--num-partitions", "1")
        for case, pin in (("refused", ()), ("pinned", ("--trusted-app-hash", foreign_hash))):
            marker = tmp_path / f"{case}.marker"
            run_config = tmp_path / f"{case}.toml"
            run_config.write_text(f'marker = "{marker}"\n')
            run = submit_run(app, out / case, env, "pollen", run_config=run_config)
            log = tmp_path / f"client-{case}.log"
            client = _pollen(*client_args, *pin, log=log)
            procs += [client]
            if case == "refused":
                assert client.wait(240) == REFUSED_APP_EXIT, log.read_text()[-3000:]
                text = log.read_text()
                line = f"refusing app {foreign_hash}: not the trusted Pollen app {bundle_hash()}"
                assert text.count(line) == 1, text[-3000:]
                assert not marker.exists()  # the foreign ClientApp never started
                assert "Start `flwr-clientapp` process" not in text
            else:
                deadline = time.monotonic() + 240
                while not marker.exists() and client.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.5)
                assert marker.exists(), log.read_text()[-3000:]
                assert f"running the trusted app {foreign_hash[:12]}" in log.read_text()
                _stop(client)
            run.stop()
    finally:
        _stop(*procs)
        link.proc.stop()


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_genuine_pollen_run_passes_the_gate(tmp_path: Path) -> None:
    """`pollen server` (TLS, node auth) + one `pollen client` trusting its default: the run
    completes, and the client says it ran the trusted app."""
    from pollen.deploy.launch import free_port, wait_for_port
    from tests.e2e.tiny import tiny_config

    certs = tmp_path / "certs"
    assert main(["certs", "--out", str(certs), "--nodes", "1"]) == 0
    cfg = tiny_config(tmp_path, rounds=1, clients=1)
    port = free_port()
    server = _pollen("server", "--config", str(cfg), "--certs", str(certs), "--port", str(port),
                     log=tmp_path / "server.log")
    client = None
    try:
        wait_for_port("127.0.0.1", port, 900)  # the server loads the model before it listens
        client = _pollen("client", "--server", f"127.0.0.1:{port}", "--certs", str(certs),
                         "--partition-id", "0", "--num-partitions", "1", "--max-wait", "10",
                         log=tmp_path / "client.log")
        assert server.wait(800) == 0, (tmp_path / "server.log").read_text()[-3000:]
        assert client.wait(120) == 0, (tmp_path / "client.log").read_text()[-3000:]
    finally:
        _stop(server, *([client] if client is not None else []))
    assert f"running the trusted app {bundle_hash()[:12]}" in (tmp_path / "client.log").read_text()
    assert (tmp_path / "out" / "metrics.json").is_file()
    assert app_bundle.APP_DIR in {p.name for p in (tmp_path / "out").iterdir()}
