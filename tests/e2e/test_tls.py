"""TLS + node authentication through `pollen certs/server/client`: a registered node trains,
an unregistered node and a node trusting the wrong CA are refused with a clear error. The server and
the good clients are given `--certs certs`, relative to their working directory."""

import json
import subprocess
import sys

import pytest

from pollen.deploy.client import REFUSED_EXIT
from pollen.deploy.launch import free_port, wait_for_port
from tests.e2e.tiny import tiny_config

pytestmark = pytest.mark.slow


def _pollen(*args, log=None, **kw):
    return subprocess.Popen([sys.executable, "-m", "pollen.cli", *args], stdout=log or subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def test_tls_run_with_node_auth_and_refusals(tmp_path):
    certs, other = tmp_path / "certs", tmp_path / "other"
    for d in (certs, other):
        assert _pollen("certs", "--out", str(d), "--nodes", "2").wait(60) == 0
    cfg = tiny_config(tmp_path, rounds=1, clients=2)
    port = free_port()
    server_log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed in finally
    # Relative --certs, as the README writes it: the SuperLink and `flwr` run in other directories.
    server = _pollen("server", "--config", str(cfg), "--certs", "certs", "--port", str(port),
                     log=server_log, cwd=tmp_path)
    procs = [server]
    try:
        wait_for_port("127.0.0.1", port, 300)
        addr = f"127.0.0.1:{port}"
        # A node whose key the server never registered: refused (Flower's exit code 305).
        rogue = _pollen("client", "--server", addr, "--certs", str(certs), "--node-key",
                        str(other / "node-0.key"), "--partition-id", "0", "--num-partitions", "2")
        # A node that trusts another CA: the TLS handshake fails, refused the same way.
        wrong_ca = _pollen("client", "--server", addr, "--certs", str(other), "--partition-id", "1",
                           "--num-partitions", "2")
        procs += [rogue, wrong_ca]
        for p in (rogue, wrong_ca):
            out, _ = p.communicate(timeout=120)
            assert p.returncode == REFUSED_EXIT, out[-2000:]
            assert "server refused this node" in out and "305" in out
        good = [_pollen("client", "--server", addr, "--certs", "certs", "--partition-id", str(i),
                        "--num-partitions", "2", "--max-wait", "5", log=subprocess.DEVNULL,
                        cwd=tmp_path)
                for i in range(2)]
        procs += good
        assert server.wait(timeout=600) == 0, (tmp_path / "server.log").read_text()[-3000:]
        assert [p.wait(timeout=60) for p in good] == [0, 0]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        server_log.close()
    rounds = json.loads((tmp_path / "out" / "metrics.json").read_text())["rounds"]
    assert rounds[-1]["round"] == 1 and rounds[-1]["clients"] == 2
    assert rounds[-1]["sampled"] == rounds[-1]["aggregated"] == 2
