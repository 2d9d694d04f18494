"""`pollen server --resume` for FRL: kill -9 the server after round 1's checkpoint, restart it; every round
is recorded once and the final global ranking (frl/state.safetensors) equals an uninterrupted run's.

Both federations run side by side to save wall time. conv4-supermask on 64 Fashion-MNIST images per
client: the vote is exact (int64 Borda sums), so the rankings must match bit for bit."""

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from pollen.data.fashion_mnist import is_available
from pollen.deploy.launch import free_port, wait_for_port
from tests.e2e.pollen_procs import client, kill9, read_json, server, tail, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not is_available(),
                       reason="Fashion-MNIST absent: sudo apt-get install dataset-fashion-mnist"),
]

CONFIG = """
[run]
rounds = 3
round_timeout = 600
out = "{out}"
[strategy]
name = "frl"
[model]
name = "conv4-supermask"
[data]
name = "fashion-mnist"
max_client_examples = 64
[federation]
clients = 3
[frl]
batch_size = 32
"""


class Federation:
    """One `pollen server` and three `pollen client`s, each its own process group."""

    def __init__(self, tmp_path: Path, name: str) -> None:
        self.cfg = tmp_path / f"{name}.toml"
        self.out = tmp_path / name / "out"
        self.cfg.write_text(CONFIG.format(out=self.out))
        self.port = free_port()
        self.logs = {n: tmp_path / f"{name}-{n}.log" for n in ("server", "c0", "c1", "c2")}
        self.server = server(self.cfg, self.port, self.logs["server"])
        self.clients: list = []

    def start_clients(self) -> None:
        wait_for_port("127.0.0.1", self.port, 120)
        self.clients = [client(self.port, i, 3, self.logs[f"c{i}"], max_wait=120) for i in range(3)]

    def procs(self) -> list:
        return [self.server, *self.clients]

    def kill_all(self) -> None:
        for p in self.procs():
            if p.poll() is None:
                kill9(p)


def test_frl_resume_after_kill_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    straight, resumed = Federation(tmp_path, "straight"), Federation(tmp_path, "resumed")
    try:
        straight.start_clients()
        resumed.start_clients()
        ckpt = resumed.out / "checkpoint" / "state.json"
        wait_for(lambda: (read_json(ckpt) or {}).get("round", -1) >= 1, 600,
                 "round 1's checkpoint", resumed.procs())
        kill9(resumed.server)
        state = read_json(ckpt)
        assert state["round"] == 1 and state["strategy_tensors"]  # the ranking is in the checkpoint
        resumed.server = server(resumed.cfg, resumed.port, resumed.logs["server"], "--resume")
        for fed in (straight, resumed):
            assert fed.server.wait(timeout=600) == 0, tail(fed.logs["server"])
    finally:
        straight.kill_all()
        resumed.kill_all()
    rounds = read_json(resumed.out / "metrics.json")["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2, 3]
    assert all(r["clients"] == 3 for r in rounds[1:])
    a = load_file(str(straight.out / "frl" / "state.safetensors"))
    b = load_file(str(resumed.out / "frl" / "state.safetensors"))
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(b[k], a[k], err_msg=k)
    # A wrong round (lr, client seeds) or a lost ranking changes the vote, hence the held-out metrics.
    ref = read_json(straight.out / "metrics.json")["rounds"]
    np.testing.assert_allclose([r["eval_loss"] for r in rounds], [r["eval_loss"] for r in ref], rtol=1e-6)
    assert [r["eval_accuracy"] for r in rounds] == [r["eval_accuracy"] for r in ref]
