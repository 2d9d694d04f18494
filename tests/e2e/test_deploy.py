"""Real processes: one `pollen server` and three `pollen client`s on loopback, two rounds."""

import json
import subprocess
import sys

import pytest

from pollen.deploy.launch import free_port, wait_for_port
from tests.e2e.tiny import tiny_config

pytestmark = pytest.mark.slow


def _pollen(*args: str, log) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pollen.cli", *args], stdout=log,
                            stderr=subprocess.STDOUT)


def test_server_and_three_clients_run_two_rounds_and_exit_cleanly(tmp_path):
    cfg = tiny_config(tmp_path, rounds=2, clients=3)
    port = free_port()
    logs = [open(tmp_path / f"{name}.log", "wb") for name in ("server", "c0", "c1", "c2")]  # noqa: SIM115
    server = _pollen("server", "--config", str(cfg), "--insecure", "--port", str(port), log=logs[0])
    clients = []
    try:
        wait_for_port("127.0.0.1", port, 300)  # clients' --max-wait also bounds their start-up wait
        clients = [_pollen("client", "--server", f"127.0.0.1:{port}", "--partition-id", str(i),
                           "--num-partitions", "3", "--insecure", "--max-wait", "5", log=logs[i + 1])
                   for i in range(3)]
        assert server.wait(timeout=600) == 0, (tmp_path / "server.log").read_text()[-3000:]
        codes = [c.wait(timeout=60) for c in clients]
        assert codes == [0, 0, 0], [(tmp_path / f"c{i}.log").read_text()[-1500:] for i in range(3)]
    finally:
        for p in [server, *clients]:
            if p.poll() is None:
                p.kill()
        for f in logs:
            f.close()
    rounds = json.loads((tmp_path / "out" / "metrics.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert all(r["clients"] == 3 and r["bytes_up"] > 0 for r in rounds[1:])
    assert rounds[2]["eval_loss"] < rounds[0]["eval_loss"]
