"""Flower command lines and the node-auth helpers that need no running process."""

from __future__ import annotations

import shlex
import tomllib
from pathlib import Path

import pytest

from pollen.deploy.certs import generate_certs
from pollen.deploy.commands import flower_exit_code, superlink_command, supernode_command
from pollen.deploy.node_auth import register_nodes, write_connection
from pollen.errors import DeploymentError


@pytest.fixture()
def certs(tmp_path: Path):
    return generate_certs(tmp_path / "certs", ["127.0.0.1"], 2)


def _flag(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_superlink_tls_auth_flags(certs) -> None:
    cmd = superlink_command(host="0.0.0.0", port=9092, certs=certs.dir, database=Path("/data/s.db"),
                            health_address="0.0.0.0:9098")
    assert cmd[0].endswith("flower-superlink")
    assert _flag(cmd, "--ssl-ca-certfile") == str(certs.ca_cert)
    assert _flag(cmd, "--ssl-certfile") == str(certs.server_cert)
    assert _flag(cmd, "--ssl-keyfile") == str(certs.server_key)
    assert "--enable-supernode-auth" in cmd and "--insecure" not in cmd
    assert "--disable-runtime-dependency-installation" in cmd
    assert _flag(cmd, "--database") == "/data/s.db"
    # Fleet API (gRPC-rere) on the public address; Control/ServerAppIo HTTP on loopback, port + 1.
    assert _flag(cmd, "--fleet-api-type") == "grpc-rere"
    assert _flag(cmd, "--fleet-api-address") == "0.0.0.0:9092"
    assert _flag(cmd, "--host") == "127.0.0.1" and _flag(cmd, "--port") == "9093"


def test_superlink_control_api_never_leaves_loopback(certs) -> None:
    for public in ("0.0.0.0", "::", "10.0.0.5", "server.example.org"):
        with pytest.raises(DeploymentError, match="must stay on loopback"):
            superlink_command(certs=certs.dir, control_host=public)
    with pytest.raises(DeploymentError, match="must differ"):
        superlink_command(certs=certs.dir, port=9092, control_port=9092)
    v6 = superlink_command(host="::", port=9092, control_host="::1", control_port=7000,
                           certs=certs.dir)
    assert _flag(v6, "--fleet-api-address") == "[::]:9092"
    assert _flag(v6, "--host") == "::1" and _flag(v6, "--port") == "7000"
    sim = superlink_command(port=5555, insecure=True, node_auth=False, simulation=True)
    assert "--fleet-api-address" not in sim and "--simulation" in sim
    assert _flag(sim, "--host") == "127.0.0.1" and _flag(sim, "--port") == "5555"


def test_superlink_refuses_inconsistent_security(certs, tmp_path: Path) -> None:
    with pytest.raises(DeploymentError, match="needs TLS"):
        superlink_command(insecure=True)
    with pytest.raises(DeploymentError, match="conflicts"):
        superlink_command(insecure=True, certs=certs.dir, node_auth=False)
    with pytest.raises(DeploymentError, match="--certs"):
        superlink_command()
    certs.server_key.unlink()
    with pytest.raises(DeploymentError, match=r"missing server\.key"):
        superlink_command(certs=certs.dir)
    plain = superlink_command(insecure=True, node_auth=False)
    assert "--insecure" in plain and "--ssl-certfile" not in plain


def test_supernode_flags(certs) -> None:
    cmd = supernode_command(superlink="srv:9092", partition_id=1, num_partitions=3, certs=certs.dir,
                            node_key=certs.node_keys[1], port=9195, max_retries=2,
                            extra_node_config={"data-dir": "/data"})
    assert _flag(cmd, "--root-certificates") == str(certs.ca_cert)
    assert _flag(cmd, "--auth-supernode-private-key") == str(certs.node_keys[1])
    assert _flag(cmd, "--superlink") == "srv:9092" and _flag(cmd, "--max-retries") == "2"
    assert "--grpc-rere" in cmd and _flag(cmd, "--host") == "127.0.0.1"
    assert shlex.split(_flag(cmd, "--node-config")) == [
        "partition-id=1", "num-partitions=3", "data-dir=/data"]
    with pytest.raises(DeploymentError, match="partition-id"):
        supernode_command(superlink="s:1", partition_id=3, num_partitions=3, insecure=True)
    with pytest.raises(DeploymentError, match="node auth needs TLS"):
        supernode_command(superlink="s:1", partition_id=0, num_partitions=1, insecure=True,
                          node_key=certs.node_keys[0])
    with pytest.raises(DeploymentError, match="does not exist"):
        supernode_command(superlink="s:1", partition_id=0, num_partitions=1, certs=certs.dir,
                          node_key=certs.dir / "node-9.key")


def test_flower_exit_code_reads_the_last_code() -> None:
    assert flower_exit_code("INFO ok\nERROR: Exit Code: 302\n...\nERROR: Exit Code: 305\n") == 305
    assert flower_exit_code("INFO all good\n") is None


def test_write_connection_merges_entries(tmp_path: Path, certs) -> None:
    home = tmp_path / "home"
    write_connection(home, "127.0.0.1:9092", root_cert=certs.ca_cert, insecure=False, name="a")
    write_connection(home, "10.0.0.1:9092", root_cert=None, insecure=True, name="b",
                     make_default=False)
    data = tomllib.loads((home / "config.toml").read_text())["superlink"]
    assert data["default"] == "a"
    assert data["a"] == {"address": "127.0.0.1:9092", "root-certificates": str(certs.ca_cert.resolve())}
    assert data["b"] == {"address": "10.0.0.1:9092", "insecure": True}
    with pytest.raises(DeploymentError, match="conflicts"):
        write_connection(home, "x:1", root_cert=certs.ca_cert, insecure=True)


def test_register_rejects_bad_keys_before_any_network_call(tmp_path: Path, certs) -> None:
    kw = {"flwr_home": tmp_path / "h", "root_cert": certs.ca_cert, "insecure": False}
    with pytest.raises(DeploymentError, match="not an OpenSSH public key"):
        register_nodes("127.0.0.1:1", [certs.node_keys[0]], **kw)  # private key given by mistake
    with pytest.raises(DeploymentError, match="listed twice"):
        register_nodes("127.0.0.1:1", [certs.node_pubs[0]] * 2, **kw)
    with pytest.raises(DeploymentError, match="does not exist"):
        register_nodes("127.0.0.1:1", [certs.dir / "node-7.pub"], **kw)
    assert register_nodes("127.0.0.1:1", [], **kw) == []


@pytest.mark.parametrize(("flags", "message"), [
    (["--control-host", "0.0.0.0"], "not a loopback address"),
    (["--control-host", "10.0.0.5"], "not a loopback address"),
    (["--port", "9092", "--control-port", "9092"], "--control-port must be"),
])
def test_server_refuses_a_public_or_clashing_control_api(tmp_path: Path, capsys, flags, message) -> None:
    """One clear line and a non-zero exit, before any process starts or any file is written."""
    from pollen.cli import main

    out = tmp_path / "run"
    code = main(["server", "--insecure", "--out", str(out), *flags])
    text = capsys.readouterr().out.strip()
    assert code != 0 and message in text and "Traceback" not in text
    assert len(text.splitlines()) <= 2  # rich may wrap the one line
    assert not out.exists()
