"""`pollen server --resume` for FedKSeed with real processes: kill -9 the server after round 1's
checkpoint, restart it on the same port; the clients reconnect (new node ids, empty node state: the
first message after the restart is the dense accumulator), every round is recorded exactly once,
and the final accumulator and model equal an uninterrupted run's (run side by side).
The in-process twin, fast and bit-exact, is tests/strategies/fedkseed/test_fedkseed_resume.py."""

import numpy as np
import pytest
from safetensors.numpy import load_file

from pollen.deploy.launch import free_port, wait_for_port
from tests.e2e.pollen_procs import client, kill9, read_json, server, tail, wait_for
from tests.e2e.tiny import tiny_config

pytestmark = pytest.mark.slow

ZO = """
[strategy]
name = "fedkseed-pro"
[fedkseed]
k = 64
local_steps = 3
lr = 0.002
params = "classifier"
"""


class Federation:
    def __init__(self, tmp_path, name):
        self.cfg = tiny_config(tmp_path, rounds=3, clients=3, name=name)
        self.cfg.write_text(self.cfg.read_text() + ZO)
        self.out = tmp_path / name / "out"
        self.port = free_port()
        self.logs = {n: tmp_path / f"{name}-{n}.log" for n in ("server", "c0", "c1", "c2")}
        self.server = server(self.cfg, self.port, self.logs["server"])
        self.clients = []

    def start_clients(self):
        wait_for_port("127.0.0.1", self.port, 120)
        self.clients = [client(self.port, i, 3, self.logs[f"c{i}"], max_wait=120) for i in range(3)]

    def procs(self):
        return [self.server, *self.clients]

    def kill_all(self):
        for p in self.procs():
            if p.poll() is None:
                kill9(p)


def test_fedkseed_resume_after_kill_matches_an_uninterrupted_run(tmp_path):
    straight, resumed = Federation(tmp_path, "straight"), Federation(tmp_path, "resumed")
    try:
        straight.start_clients()
        resumed.start_clients()
        ckpt = resumed.out / "checkpoint" / "state.json"
        wait_for(lambda: (read_json(ckpt) or {}).get("round", -1) >= 1, 600,
                 "round 1's checkpoint", resumed.procs())
        kill9(resumed.server)
        assert read_json(ckpt)["round"] == 1
        resumed.server = server(resumed.cfg, resumed.port, resumed.logs["server"], "--resume")
        for fed in (straight, resumed):
            assert fed.server.wait(timeout=600) == 0, tail(fed.logs["server"])
    finally:
        straight.kill_all()
        resumed.kill_all()
    rounds = read_json(resumed.out / "metrics.json")["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2, 3]
    assert all(r["clients"] == 3 and r["dropped"] == 0 for r in rounds[1:])
    a = load_file(str(straight.out / "model" / "fedkseed_state.safetensors"))
    b = load_file(str(resumed.out / "model" / "fedkseed_state.safetensors"))
    for k in a:  # replies are aggregated in partition order: the sums are the same bits
        assert np.array_equal(a[k], b[k]), k
    ref = read_json(straight.out / "metrics.json")["rounds"]
    assert [r["eval_loss"] for r in rounds] == [r["eval_loss"] for r in ref]
