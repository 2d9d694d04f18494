"""`pollen server --resume` for FRL: kill -9 the server after round 1's checkpoint, restart it; every round
is recorded once and the final global ranking (frl/state.safetensors) equals an uninterrupted run's.

Both federations run side by side to save wall time. conv4-supermask on 64 Fashion-MNIST images per
client: the vote is exact (int64 Borda sums), so the rankings must match bit for bit."""

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from pollen.data.fashion_mnist import is_available
from tests.e2e.pollen_procs import Federation, read_json, straight_and_resumed

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


def _federation(tmp_path: Path, name: str) -> Federation:
    cfg, out = tmp_path / f"{name}.toml", tmp_path / name / "out"
    cfg.write_text(CONFIG.format(out=out))
    return Federation(cfg, out, tmp_path, name)


def _ranking_checkpointed(state: dict) -> None:
    assert state["strategy_tensors"]  # the ranking is in the checkpoint


def test_frl_resume_after_kill_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    straight, resumed = _federation(tmp_path, "straight"), _federation(tmp_path, "resumed")
    rounds = straight_and_resumed(straight, resumed, at_kill=_ranking_checkpointed)
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
