"""Real flower-superlink/flower-supernode processes on 127.0.0.1: TLS with `pollen certs` output and
SuperNode authentication with keys registered through `register_nodes`."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from flower_procs import Proc, free_port, port_open, run_to_exit, start, wait_for

from pollen.deploy.certs import CertBundle, generate_certs
from pollen.deploy.commands import (
    SUPERNODE_CONNECTION_ERROR,
    flower_exit_code,
    superlink_command,
    supernode_command,
)
from pollen.deploy.health import check, main
from pollen.deploy.node_auth import list_nodes, register_nodes
from pollen.errors import DeploymentError

pytestmark = pytest.mark.slow

if shutil.which("flower-superlink") is None and not Path(
        __import__("sys").executable).with_name("flower-superlink").exists():
    pytest.skip("Flower's flower-superlink is not installed", allow_module_level=True)


@dataclass
class Link:
    proc: Proc
    port: int  # Fleet API (gRPC-rere), what SuperNodes dial
    control: int  # Control API (HTTP, loopback), what `flwr` uses
    health: int
    home: Path
    certs: CertBundle
    other_ca: Path


@pytest.fixture(scope="module")
def link(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Link]:
    """One TLS SuperLink with node auth; 2 node keys made, only node-0 gets registered."""
    root = tmp_path_factory.mktemp("link")
    home = root / "flwr_home"
    home.mkdir()
    certs = generate_certs(root / "certs", ["127.0.0.1", "localhost"], 2)
    other = generate_certs(root / "other", ["127.0.0.1"], 0)  # a CA nobody trusts
    port, control, health = free_port(), free_port(), free_port()
    proc = start(superlink_command(host="127.0.0.1", port=port, control_port=control,
                                   certs=certs.dir, node_auth=True,
                                   health_address=f"127.0.0.1:{health}"),
                 root / "superlink.log", home)
    try:
        wait_for(lambda: port_open(port) and port_open(control), 40, "the SuperLink ports", proc)
        yield Link(proc, port, control, health, home, certs, other.ca_cert)
    finally:
        proc.stop()


def _node(link: Link, *, superlink: str | None = None, certs: Path, node_key: Path | None = None,
          max_retries: int | None = None) -> list[str]:
    return supernode_command(superlink=superlink or f"127.0.0.1:{link.port}", partition_id=0,
                             num_partitions=2, port=free_port(), certs=certs, node_key=node_key,
                             max_retries=max_retries)


def test_registered_node_connects_over_tls(link: Link, tmp_path: Path) -> None:
    first = register_nodes(f"127.0.0.1:{link.control}", [link.certs.node_pubs[0]],
                           flwr_home=link.home, root_cert=link.certs.ca_cert, insecure=False,
                           timeout=40)
    assert len(first) == 1 and first[0].node_id is not None and not first[0].already_registered
    again = register_nodes(f"127.0.0.1:{link.control}", [link.certs.node_pubs[0]],
                           flwr_home=link.home,
                           root_cert=link.certs.ca_cert, insecure=False, timeout=40)
    assert again[0].already_registered  # idempotent for restarts of `pollen server`

    nodes = list_nodes(link.home)
    assert [n["status"] for n in nodes] == ["registered"]
    # Dial by DNS name: exercises the DNSName SAN (registration above used the IP SAN).
    cmd = _node(link, superlink=f"localhost:{link.port}", certs=link.certs.dir,
                node_key=link.certs.node_keys[0])
    node = start(cmd, tmp_path / "node0.log", link.home)
    try:
        def online() -> bool:
            return any(n["status"] == "online" for n in list_nodes(link.home))
        wait_for(online, 40, "node-0 to show as online", node)
        # The SuperNode was given the id created at registration (the key is its identity).
        wait_for(lambda: f"SuperNode ID: {first[0].node_id}" in node.text(), 10, "node id", node)
        assert nodes[0]["node-id"] == str(first[0].node_id)
        assert node.alive()
    finally:
        node.stop()


def test_healthcheck_sees_superlink_serving(link: Link) -> None:
    wait_for(lambda: check(f"127.0.0.1:{link.health}"), 20, "health SERVING", link.proc)
    assert main([f"127.0.0.1:{link.health}"]) == 0
    assert main([f"127.0.0.1:{free_port()}"]) == 1  # nothing listening: unhealthy, not a crash


def test_wrong_ca_is_refused(link: Link, tmp_path: Path) -> None:
    other_dir = link.other_ca.parent
    cmd = _node(link, certs=other_dir, node_key=link.certs.node_keys[0],
                max_retries=1)
    rc, log = run_to_exit(cmd, tmp_path / "badca.log", link.home, timeout=40)
    assert rc == 1, log[-2000:]
    assert flower_exit_code(log) == SUPERNODE_CONNECTION_ERROR
    assert "CERTIFICATE_VERIFY_FAILED" in log


def test_unregistered_node_is_refused(link: Link, tmp_path: Path) -> None:
    cmd = _node(link, certs=link.certs.dir, node_key=link.certs.node_keys[1],
                max_retries=1)
    rc, log = run_to_exit(cmd, tmp_path / "node1.log", link.home, timeout=40)
    assert rc == 1, log[-2000:]
    assert flower_exit_code(log) == SUPERNODE_CONNECTION_ERROR
    assert "Failed to activate SuperNode" in log


def test_node_without_key_cannot_self_register(link: Link, tmp_path: Path) -> None:
    cmd = _node(link, certs=link.certs.dir, max_retries=1)
    rc, log = run_to_exit(cmd, tmp_path / "anon.log", link.home, timeout=40)
    assert rc == 1 and flower_exit_code(log) == SUPERNODE_CONNECTION_ERROR
    assert "must be registered" in log


def test_register_waits_then_reports_unreachable_superlink(tmp_path: Path) -> None:
    certs = generate_certs(tmp_path / "c", ["127.0.0.1"], 1)
    with pytest.raises(DeploymentError, match="unavailable"):
        register_nodes(f"127.0.0.1:{free_port()}", certs.node_pubs, flwr_home=tmp_path / "h",
                       root_cert=certs.ca_cert, insecure=False, timeout=1.0)
