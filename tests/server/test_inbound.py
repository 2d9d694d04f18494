"""screen_replies: NaN/Inf, wrong shapes, unexpected tensors and bad sample counts never reach a
strategy; the round completes with the remaining clients, for Flower's strategies and for flag."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

from pollen.config import PollenConfig
from pollen.protocol.grid import LocalGrid
from pollen.server.inbound import screen_replies
from pollen.server.ledger import Ledger
from pollen.server.metered_grid import MeteredGrid
from pollen.strategies import StrategyContext, build_strategy
from tests.attacks.flower_msgs import (
    SHAPES,
    flat,
    global_record,
    make_round,
    reply_content,
    state_from_flat,
)
from tests.strategies.helpers import TIMING


def _good(glob: ArrayRecord, i: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(10 + i)
    return state_from_flat(flat(glob) + 0.1 + 0.01 * rng.normal(size=flat(glob).size))


def _broken(glob: ArrayRecord) -> dict[str, RecordDict]:
    g = {k: glob[k].numpy().copy() for k in SHAPES}
    nan = dict(g, **{"layer.bias": np.array([0, np.nan, 0, 0], np.float32)})
    inf = dict(g, **{"layer.weight": np.full((4, 6), np.inf, np.float32)})
    shape = dict(g, **{"layer.weight": np.zeros((6, 4), np.float32)})
    extra = dict(g, backdoor=np.zeros(3, np.float32))
    missing = {"layer.weight": g["layer.weight"]}
    text = dict(g, **{"layer.bias": np.array(["a", "b", "c", "d"])})
    weight = reply_content(g, n=10)
    weight["metrics"] = MetricRecord({**TIMING, "num-examples": float("nan"), "train_loss": 1.0, "seen": 10})
    return {"NaN": reply_content(nan), "Inf": reply_content(inf), "shape": reply_content(shape),
            "unexpected": reply_content(extra), "missing": reply_content(missing),
            "dtype": reply_content(text), "num-examples": weight}


def test_screen_drops_each_kind_of_bad_reply_with_a_reason(caplog):
    glob = global_record()
    bad = _broken(glob)
    states = [_good(glob, 0), *bad.values(), _good(glob, 1)]
    sent, replies = make_round(glob, states)
    with caplog.at_level(logging.WARNING, logger="pollen.server"):
        kept = screen_replies(sent, replies)
    assert kept == [replies[0], replies[-1]]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == len(bad)
    for line, (what, msg) in zip(lines, zip(bad, replies[1:-1])):
        assert f"node {msg.metadata.src_node_id}" in line
        assert what.lower() in line.lower() or what == "shape" and "shape" in line
    assert "1 NaN" in lines[0] and "24 Inf" in lines[1] and "backdoor" in lines[3]


def test_screen_keeps_error_replies_and_drops_replies_nobody_asked_for():
    glob = global_record()
    sent, replies = make_round(glob, [_good(glob, 0), _good(glob, 1)])
    _, stranger = make_round(glob, [_good(glob, 2)], node_base=999)
    from flwr.app import Error

    err = Message(Error(code=2, reason="client crashed"), reply_to=sent[1])
    kept = screen_replies(sent, [replies[0], err, stranger[0]])
    assert kept == [replies[0], err]


def _client(bad: dict[int, RecordDict]):
    glob_cache = {}

    def fn(msg: Message, pid: int) -> RecordDict:
        glob = msg.content["arrays"]
        glob_cache["g"] = glob
        if pid in bad:
            return bad[pid]
        if pid == 5:
            raise RuntimeError("out of memory")
        return reply_content(_good(glob, pid), pid=pid)

    return fn


@pytest.mark.parametrize("name", ["fedavg", "median", "trimmedmean", "multikrum", "krum", "bulyan",
                                  "flag"])
def test_round_completes_with_the_valid_clients(name, tmp_path: Path, caplog):
    glob = global_record()
    bad = _broken(glob)
    bad_by_pid = {1: bad["NaN"], 2: bad["Inf"], 3: bad["shape"], 4: bad["unexpected"]}
    n = 10
    cfg = PollenConfig.load(None, {"federation.clients": n, "strategy.name": name})
    strategy = build_strategy(StrategyContext(cfg=cfg, tensor_names=list(SHAPES)))
    grid = MeteredGrid(LocalGrid(_client(bad_by_pid), n, seed=3), Ledger(tmp_path, 1))
    random.seed(0)
    with caplog.at_level(logging.WARNING, logger="pollen.server"):
        result = strategy.start(grid=grid, initial_arrays=glob, num_rounds=1, timeout=5)
    new = flat(result.arrays)
    assert np.isfinite(new).all() and new.shape == flat(glob).shape
    good = np.stack([flat(ArrayRecord({k: Array(v) for k, v in _good(glob, i).items()}))
                     for i in range(n) if i not in bad_by_pid and i != 5])
    assert np.all(new >= good.min(0) - 1e-5) and np.all(new <= good.max(0) + 1e-5)
    drops = [r for r in caplog.records if "dropping reply" in r.getMessage()]
    assert len(drops) == len(bad_by_pid)
