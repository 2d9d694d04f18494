"""`pollen server --resume` for FedKSeed with real processes: kill -9 the server after round 1's
checkpoint, restart it on the same port; the clients reconnect (new node ids, empty node state: the
first message after the restart is the dense accumulator), every round is recorded exactly once,
and the final accumulator and model equal an uninterrupted run's (run side by side).
The in-process twin, fast and bit-exact, is tests/strategies/fedkseed/test_fedkseed_resume.py."""

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.e2e.pollen_procs import Federation, read_json, straight_and_resumed
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


def _federation(tmp_path, name):
    cfg = tiny_config(tmp_path, rounds=3, clients=3, name=name)
    cfg.write_text(cfg.read_text() + ZO)
    return Federation(cfg, tmp_path / name / "out", tmp_path, name)


def test_fedkseed_resume_after_kill_matches_an_uninterrupted_run(tmp_path):
    straight, resumed = _federation(tmp_path, "straight"), _federation(tmp_path, "resumed")
    rounds = straight_and_resumed(straight, resumed)
    assert all(r["clients"] == 3 and r["dropped"] == 0 for r in rounds[1:])
    a = load_file(str(straight.out / "model" / "fedkseed_state.safetensors"))
    b = load_file(str(resumed.out / "model" / "fedkseed_state.safetensors"))
    for k in a:  # replies are aggregated in partition order: the sums are the same bits
        assert np.array_equal(a[k], b[k]), k
    ref = read_json(straight.out / "metrics.json")["rounds"]
    assert [r["eval_loss"] for r in rounds] == [r["eval_loss"] for r in ref]
