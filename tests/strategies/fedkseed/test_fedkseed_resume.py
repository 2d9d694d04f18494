"""`--resume` for FedKSeed(-Pro): the server dies right after round 1's checkpoint (nothing after it
runs), a new server resumes from OUT/checkpoint with fresh client processes and fresh node state (as
after a real restart), and the final accumulator, Pro statistics, saved model and every round's
eval_loss equal those of an uninterrupted run, bit for bit.

In process, through the real round runner (pollen.server.app.run_server), client handler and
checkpoint files; tests/e2e/test_resume.py does the same with kill -9 and real processes for FedPEFT.
"""

from __future__ import annotations

import json
from pathlib import Path
from uuid import uuid4

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

import pollen.client.app as client_app
from pollen.config import PollenConfig
from pollen.protocol.grid import InProcessGrid
from pollen.protocol.records import CONFIG_KEY
from pollen.server.app import run_server
from pollen.server.checkpoint import load_checkpoint
from pollen.strategies.fedkseed.runtime import _process_model


class Killed(BaseException):
    """Stands in for kill -9: not an Exception, so nothing on the way up handles it."""


class Grid(InProcessGrid):
    """Three in-process nodes with Flower-style message ids; `die_at`: the train round whose
    messages never leave (the server is killed first)."""

    def __init__(self, cfg: PollenConfig, die_at: int | None = None) -> None:
        super().__init__(cfg.federation.clients, lambda m, c: client_app.train(m, c),
                         {CONFIG_KEY: cfg.to_json()})
        self.die_at, self.train_rounds = die_at, 0

    def send_and_receive(self, messages, *, timeout=None):  # type: ignore[no-untyped-def]
        messages = list(messages)
        if messages and messages[0].metadata.message_type == "train":
            self.train_rounds += 1
            if self.train_rounds == self.die_at:
                raise Killed
        for m in messages:
            m.metadata.__dict__["_message_id"] = uuid4().hex
        return super().send_and_receive(messages, timeout=timeout)


def _cfg(model: Path, data: Path, out: Path) -> PollenConfig:
    return PollenConfig.load(None, {
        "run.rounds": 3, "run.out": str(out), "model.name": str(model), "model.max_length": 24,
        "data.name": str(data), "data.eval_size": 4, "data.partition": "iid",
        "federation.clients": 3, "strategy.name": "fedkseed-pro", "fedkseed.k": 64,
        "fedkseed.local_steps": 3, "fedkseed.params": r"layers\.1\.|norm", "fedkseed.lr": 2e-3})


def _fresh_processes() -> None:
    _process_model.cache_clear()


def test_killed_after_round_1_checkpoint_resumes_to_the_uninterrupted_result(
        tiny_model_dir: Path, tiny_data: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    a_out, b_out = tmp_path / "straight", tmp_path / "resumed"
    cfg_a, cfg_b = _cfg(tiny_model_dir, tiny_data, a_out), _cfg(tiny_model_dir, tiny_data, b_out)
    _fresh_processes()
    run_server(Grid(cfg_a), cfg_a, a_out)

    _fresh_processes()
    with pytest.raises(Killed):
        run_server(Grid(cfg_b, die_at=2), cfg_b, b_out)
    ck = load_checkpoint(b_out, cfg_b)
    assert ck.round == 1 and ck.strategy_state is not None
    assert int(ck.strategy_state["acc/count"].sum()) > 64  # Pro statistics are in the checkpoint
    assert not (b_out / "model").exists()
    _fresh_processes()  # a new server; the clients restart too and hold nothing
    run_server(Grid(cfg_b), cfg_b, b_out, resume=True)

    rows_a = json.loads((a_out / "metrics.json").read_text())["rounds"]
    rows_b = json.loads((b_out / "metrics.json").read_text())["rounds"]
    assert [r["round"] for r in rows_b] == [0, 1, 2, 3]
    assert all(r["clients"] == 3 and r["dropped"] == 0 for r in rows_b[1:])
    assert [r["eval_loss"] for r in rows_b] == [r["eval_loss"] for r in rows_a]
    sa = load_file(str(a_out / "model" / "fedkseed_state.safetensors"))
    sb = load_file(str(b_out / "model" / "fedkseed_state.safetensors"))
    assert sorted(sa) == sorted(sb)
    for k in sa:  # A, Pro |g| sums and counts, the per-round log: all bit-identical
        assert np.array_equal(sa[k], sb[k]), k
    assert np.count_nonzero(sa["A"]) > 0
    ma = load_file(str(a_out / "model" / "model.safetensors"))
    mb = load_file(str(b_out / "model" / "model.safetensors"))
    for k in ma:
        assert np.array_equal(ma[k], mb[k]), k
    manifest = json.loads((b_out / "model" / "pollen_fedkseed.json").read_text())
    assert manifest["version"] == 3 and manifest["method"] == "fedkseed-pro"


def test_resume_refuses_a_checkpoint_of_another_k(tiny_model_dir: Path, tiny_data: Path,
                                                 tmp_path: Path) -> None:
    from pollen.errors import ConfigError
    from pollen.strategies import StrategyContext, build_strategy

    cfg = _cfg(tiny_model_dir, tiny_data, tmp_path)
    s = build_strategy(StrategyContext(cfg=cfg, tensor_names=[]))
    other = PollenConfig.load(None, {"strategy.name": "fedkseed-pro", "fedkseed.k": 32})
    t = build_strategy(StrategyContext(cfg=other, tensor_names=[]))
    with pytest.raises(ConfigError, match="k=64"):
        t.load_state_dict(s.state_dict())
