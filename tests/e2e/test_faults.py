"""A client killed with SIGKILL in the middle of round 1 does not stall the run: the round
aggregates the replies that came, later rounds sample only the live clients, the run finishes."""

import pytest

from pollen.deploy.launch import free_port, wait_for_port
from tests.e2e.pollen_procs import client, kill9, read_json, server, tail, wait_for
from tests.e2e.tiny import tiny_config

pytestmark = pytest.mark.slow


def test_client_killed_mid_round_is_dropped_and_the_run_finishes(tmp_path):
    cfg = tiny_config(tmp_path, rounds=2, clients=3, round_timeout=120)
    port = free_port()
    logs = {n: tmp_path / f"{n}.log" for n in ("server", "c0", "c1", "c2")}
    srv = server(cfg, port, logs["server"])
    clients = []
    try:
        wait_for_port("127.0.0.1", port, 120)
        clients = [client(port, i, 3, logs[f"c{i}"]) for i in range(3)]
        victim = clients[2]
        # The victim got its round-1 train message: kill it before it can reply.
        wait_for(lambda: "Receiving: train message" in tail(logs["c2"], 100_000), 240,
                 "client 2 to receive its round-1 message", [srv, *clients])
        progress = read_json(tmp_path / "out" / "progress.json")
        assert progress["round"] == 1 and progress["phase"] == "train"
        kill9(victim)
        assert srv.wait(timeout=300) == 0, tail(logs["server"])
        codes = [c.wait(timeout=60) for c in clients[:2]]
        assert codes == [0, 0], [tail(logs[f"c{i}"], 1500) for i in range(2)]
    finally:
        for p in [srv, *clients]:
            if p.poll() is None:
                kill9(p)
    rounds = read_json(tmp_path / "out" / "metrics.json")["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert [r["clients"] for r in rounds[1:]] == [2, 2]
    assert (tmp_path / "out" / "adapter").is_dir()
