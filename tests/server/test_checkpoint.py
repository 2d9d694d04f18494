"""Checkpoints round-trip tensors, ledger rows, RNG and strategy state; resumes shift rounds;
rounds after the first stop waiting for clients that died."""

import json
import random

import numpy as np
import pytest
import torch

from pollen.config import PollenConfig
from pollen.errors import ConfigError
from pollen.server.checkpoint import (
    load_checkpoint,
    restore_strategy,
    save_checkpoint,
    set_rng_state,
)
from pollen.server.ledger import Ledger
from pollen.server.runner import Evaluation, Rounds
from pollen.strategies import ServerSide


def _cfg(**over):
    return PollenConfig.load(None, {"run.rounds": 3, "federation.clients": 3, **over})


class Stateful:
    def __init__(self):
        self.state = {"momentum": torch.arange(4.0), "steps": 0}

    def state_dict(self):
        return dict(self.state)

    def load_state_dict(self, state):
        self.state = state


def test_round_trip_and_only_last_tensor_file_kept(tmp_path):
    cfg, strat = _cfg(), Stateful()
    rows = [{"round": 0, "eval_loss": 1.5}, {"round": 1, "eval_loss": 1.2}]
    for r in (0, 1):
        strat.state["steps"] = r
        arrays = {"a": np.full((2, 3), r, dtype=np.float32), "b": np.arange(5, dtype=np.float64)}
        save_checkpoint(tmp_path, cfg, r, arrays, rows[: r + 1], strat)
    files = sorted(p.name for p in (tmp_path / "checkpoint").iterdir())
    assert files == ["round-00001.safetensors", "state.json"]
    ck = load_checkpoint(tmp_path, cfg)
    assert ck.round == 1 and ck.rows == rows
    np.testing.assert_array_equal(ck.arrays["a"], np.ones((2, 3), np.float32))
    assert ck.arrays["b"].dtype == np.float64 and set(ck.arrays) == {"a", "b"}
    fresh = Stateful()
    restore_strategy(fresh, ck)
    assert fresh.state["steps"] == 1 and torch.equal(fresh.state["momentum"], torch.arange(4.0))


def test_rng_state_restores_every_generator(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    save_checkpoint(tmp_path, _cfg(), 0, {"a": np.zeros(1, np.float32)}, [])
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(load_checkpoint(tmp_path, _cfg()).rng)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_resume_refuses_missing_or_mismatched_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="no checkpoint"):
        load_checkpoint(tmp_path, _cfg())
    save_checkpoint(tmp_path, _cfg(), 2, {"a": np.zeros(1, np.float32)}, [])
    with pytest.raises(ConfigError, match="config differs"):
        load_checkpoint(tmp_path, _cfg(**{"train.lr": 0.5}))
    with pytest.raises(ConfigError, match="round 2"):
        load_checkpoint(tmp_path, _cfg(**{"run.rounds": 1}))
    assert load_checkpoint(tmp_path, _cfg(**{"run.rounds": 5})).round == 2  # more rounds is fine
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["strategy_state"] is None  # a strategy without state_dict() saves none


class Recorder:
    def __init__(self):
        self.seen = []
        self.min_available_nodes = self.min_train_nodes = 3

    def configure_train(self, server_round, arrays, config, grid):
        self.seen.append(("train", server_round, self.min_available_nodes, self.min_train_nodes))
        return []

    def aggregate_train(self, server_round, replies):
        self.seen.append(("agg", server_round))
        return None, None

    def configure_evaluate(self, server_round, arrays, config, grid):
        return []

    def aggregate_evaluate(self, server_round, replies):
        return None


class Grid:
    def __init__(self, n):
        self.n = n

    def get_node_ids(self):
        return list(range(self.n))


class Side(ServerSide):
    def evaluate(self, server_round, arrays):
        return {"eval_loss": float(server_round)}


def test_offset_rounds_and_dropout_tolerance(tmp_path):
    s, cfg = Recorder(), _cfg()
    rounds = Rounds(s, Side(cfg), Ledger(tmp_path, 5), cfg, offset=2, tolerate_dropouts=True)
    rounds.configure_train(1, None, None, Grid(3))  # round 3: the federation must assemble
    rounds.aggregate_train(1, [])
    rounds.configure_train(2, None, None, Grid(2))  # round 4: one client died; sample the live two
    assert s.seen == [("train", 3, 3, 3), ("agg", 3), ("train", 4, 1, 2)]
    quorum, cfg2 = Recorder(), _cfg(**{"federation.min_clients": 2})
    Rounds(quorum, Side(cfg2), Ledger(tmp_path, 5), cfg2, tolerate_dropouts=True).configure_train(
        2, None, None, Grid(1))
    assert quorum.seen == [("train", 2, 2, 2)]  # below the quorum: wait for it
    patient = Recorder()
    Rounds(patient, Side(cfg), Ledger(tmp_path, 5), cfg).configure_train(2, None, None, Grid(1))
    assert patient.seen == [("train", 2, 3, 3)]  # a method that does not tolerate dropouts waits
    empty_ok = _cfg(**{"run.allow_empty_rounds": True})
    ledger = Ledger(tmp_path, 5)
    fn = Evaluation(Side(empty_ok), ledger, empty_ok, tmp_path, s, offset=2)
    assert fn(0, None) is None and fn(1, None)["eval_loss"] == 3.0
    assert [r["round"] for r in ledger.rounds] == [3]
    # a checkpoint of round 0 is resumed with offset 0: round 0 is in the ledger already
    assert Evaluation(Side(empty_ok), ledger, empty_ok, tmp_path, s, resumed=True)(0, None) is None
