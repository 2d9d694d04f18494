"""The `flag` strategy with real Flower Messages: exact on agreement, robust to a minority of
huge/random updates, drops unusable replies itself, and validates its parameters up front."""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from pollen.config import PollenConfig
from pollen.errors import ConfigError
from pollen.protocol.grid import LocalGrid
from pollen.strategies import StrategyContext, build_strategy
from pollen.strategies.flag.strategy import FlagAggregator
from tests.attacks.flower_msgs import (
    SHAPES,
    flat,
    global_record,
    make_round,
    reply_content,
    state_from_flat,
)


def _flag(n: int, **params) -> FlagAggregator:
    cfg = PollenConfig.load(None, {"federation.clients": n, "strategy.name": "flag"})
    cfg.strategy.params = params
    strategy = build_strategy(StrategyContext(cfg=cfg, tensor_names=list(SHAPES)))
    assert isinstance(strategy, FlagAggregator)
    return strategy


def _one_round(strategy, glob: ArrayRecord, client_fn, n: int) -> tuple[ArrayRecord | None, list]:
    """configure_train -> LocalGrid (real Messages both ways) -> aggregate_train."""
    random.seed(0)
    grid = LocalGrid(client_fn, n, seed=1)
    msgs = list(strategy.configure_train(1, glob, ConfigRecord(), grid))
    assert len(msgs) == n and all(m.metadata.message_type == "train" for m in msgs)
    replies = list(grid.send_and_receive(msgs))
    arrays, _ = strategy.aggregate_train(1, replies)
    return arrays, replies


def test_agreeing_updates_give_exactly_that_update():
    glob, n = global_record(), 6
    g = np.random.default_rng(1).normal(size=flat(glob).size).astype(np.float32)
    strategy = _flag(n)
    arrays, _ = _one_round(strategy, glob, lambda msg, pid: reply_content(
        state_from_flat(flat(msg.content["arrays"]) + g), pid=pid), n)
    np.testing.assert_allclose(flat(arrays) - flat(glob), g, rtol=1e-4, atol=1e-5)
    assert list(arrays.keys()) == list(SHAPES) and arrays["layer.weight"].shape == (4, 6)


def test_a_minority_of_huge_random_updates_is_ignored():
    glob, n, d = global_record(), 10, flat(global_record()).size
    rng = np.random.default_rng(2)
    g = rng.normal(size=d)
    g /= np.linalg.norm(g)
    honest = {i: g + 0.2 * rng.normal(size=d) / np.sqrt(d) for i in range(7)}
    evil = {i: 1e3 * rng.normal(size=d) for i in range(7, 10)}
    deltas = {**honest, **evil}

    def client(msg: Message, pid: int) -> RecordDict:
        return reply_content(state_from_flat(flat(msg.content["arrays"]) + deltas[pid]), pid=pid)

    arrays, _ = _one_round(_flag(n), glob, client, n)
    step = flat(arrays) - flat(glob)
    mean = np.mean(list(deltas.values()), axis=0)
    cos = float(step @ g / np.linalg.norm(step))
    assert cos > 0.95
    assert np.linalg.norm(step - g) < 0.3
    assert np.linalg.norm(mean - g) > 100  # plain averaging is wrecked
    assert np.linalg.norm(step) < 2.0  # the attackers' norms never enter the step


def test_bad_replies_are_dropped_by_the_strategy_itself(caplog):
    """Without the inbound screen (e.g. another Grid), flag still drops and logs each bad reply."""
    glob = global_record()
    g = np.full(flat(glob).size, 0.5)
    good = state_from_flat(flat(glob) + g)
    nan = dict(good, **{"layer.bias": np.array([np.nan, 0, 0, 0], np.float32)})
    wrong = dict(good, **{"layer.weight": np.zeros((2, 12), np.float32)})
    extra = dict(good, surprise=np.zeros(1, np.float32))
    states = [good, nan, good, wrong, extra, good]
    _, replies = make_round(glob, states)
    strategy = _flag(len(states))
    random.seed(0)
    strategy.configure_train(1, glob, ConfigRecord(), LocalGrid(lambda m, p: None, len(states)))
    with caplog.at_level(logging.WARNING, logger="pollen.server"):
        arrays, _ = strategy.aggregate_train(1, replies)
    np.testing.assert_allclose(flat(arrays) - flat(glob), g, rtol=1e-4)
    lines = [r.getMessage() for r in caplog.records if "dropping reply" in r.getMessage()]
    assert len(lines) == 3
    for idx, needle in [(1, "NaN"), (3, "shape"), (4, "surprise")]:
        node = replies[idx].metadata.src_node_id
        assert any(f"node {node}" in line and needle in line for line in lines), (idx, lines)
    assert strategy.last is not None and strategy.last.aggregate.shape[0] == flat(glob).size


def test_an_update_that_overflows_local_minus_global_is_dropped(caplog):
    glob = ArrayRecord({k: v for k, v in global_record().items()})
    vec = flat(glob)
    vec[0] = -3e38
    glob = ArrayRecord({k: Array(v) for k, v in state_from_flat(vec).items()})
    up = vec + 1.0
    huge = up.copy()
    huge[0] = 3e38  # finite on the wire, but 3e38 − (−3e38) overflows float32
    _, replies = make_round(glob, [state_from_flat(up), state_from_flat(huge), state_from_flat(up)])
    strategy = _flag(3)
    random.seed(0)
    strategy.configure_train(1, glob, ConfigRecord(), LocalGrid(lambda m, p: None, 3))
    with caplog.at_level(logging.WARNING, logger="pollen.server"):
        arrays, _ = strategy.aggregate_train(1, replies)
    assert np.isfinite(flat(arrays)).all()
    assert any(f"node {replies[1].metadata.src_node_id}" in r.getMessage() and "1 Inf" in r.getMessage()
               for r in caplog.records)


def test_m_larger_than_the_sampled_clients_is_a_config_error():
    with pytest.raises(ConfigError, match="m = 6.*only 5 clients"):
        _flag(5, m=6)
    cfg = PollenConfig.load(None, {"federation.clients": 10, "federation.fraction": 0.3,
                                   "strategy.name": "flag"})
    cfg.strategy.params = {"m": 4}
    with pytest.raises(ConfigError, match="only 3 clients"):
        build_strategy(StrategyContext(cfg=cfg, tensor_names=[]))
    with pytest.raises(ConfigError, match="no parameter 'rank'"):
        _flag(5, rank=2)
    with pytest.raises(ConfigError, match="scale"):
        _flag(5, scale="huge")
    assert _flag(5, m=5, lam=2, scale="reference", server_lr=0.5).m == 5
    with pytest.raises(ConfigError, match="combine"):
        _flag(5, combine="sum")
    with pytest.raises(ConfigError, match="dedup_tol"):
        _flag(5, dedup_tol=1.5)
    paper = _flag(5, combine="unit", dedup_tol=0)  # an int from TOML is accepted as a float
    assert (paper.combine, paper.dedup_tol) == ("unit", 0.0)
    assert (_flag(5).combine, _flag(5).dedup_tol) == ("unit", 0.01)


def test_bulyan_needs_4f_plus_3_clients_and_krum_is_registered():
    cfg = PollenConfig.load(None, {"federation.clients": 10, "strategy.name": "bulyan"})
    cfg.strategy.params = {"num_malicious_nodes": 2}
    with pytest.raises(ConfigError, match="at least 4·f\\+3 = 11.*10 are sampled"):
        build_strategy(StrategyContext(cfg=cfg, tensor_names=[]))
    cfg.federation.clients = 11
    assert type(build_strategy(StrategyContext(cfg=cfg, tensor_names=[]))).__name__ == "Bulyan"
    cfg.strategy.name = "krum"
    assert type(build_strategy(StrategyContext(cfg=cfg, tensor_names=[]))).__name__ == "Krum"
