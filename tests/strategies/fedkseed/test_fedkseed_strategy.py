"""The FedKSeed Flower strategy over real Messages: weighting, bad replies, per-node deltas, Pro."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from flwr.app import ConfigRecord, Error, Message, MessageType, MetricRecord, RecordDict

from pollen.compression._proto.pollen.v1 import fedkseed_pb2 as pb
from pollen.config import PollenConfig
from pollen.strategies import StrategyContext, build_strategy, method_for
from pollen.strategies.fedkseed.state import SeedAccumulator, apply_downlink
from pollen.strategies.fedkseed.strategy import REPLY_KEY, FedKSeed
from pollen.strategies.fedkseed.wire import decode_downlink, decode_probabilities, encode_pairs
from tests.strategies.helpers import TIMING

K, STEPS = 64, 4


class FakeGrid:
    """What configure_train needs from a Grid: the connected node ids."""

    def __init__(self, nodes: list[int]) -> None:
        self.nodes = nodes

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)


def strategy(**kw) -> FedKSeed:
    acc = SeedAccumulator(K, master_seed=3, lr=1e-3, pro=kw.pop("pro", False),
                          equal_weight=kw.pop("equal_weight", False))
    return FedKSeed(acc, local_steps=STEPS, min_available_nodes=1, **kw)


def reply(node: int, pairs_blob: bytes | None, n=10, version=0, loss: float = 1.0,
          drop_metrics: bool = False) -> Message:
    ins = Message(content=RecordDict({}), dst_node_id=node, message_type=MessageType.TRAIN)
    content = RecordDict({})
    if pairs_blob is not None:
        content[REPLY_KEY] = ConfigRecord({"pairs": pairs_blob})
    if not drop_metrics:
        content["metrics"] = MetricRecord({**TIMING, "num-examples": n, "model-version": version,
                                           "train_loss": loss})
    return Message(content=content, reply_to=ins)


def raw_pairs(idx: list[int], val: list[float]) -> bytes:
    """Hand-made wire bytes (bypassing the encoder's own checks)."""
    return pb.SeedPairs(format_version=1, k=K, indices=np.array(idx, "<u2").tobytes(),
                        values=np.array(val, "<f4").tobytes()).SerializeToString()


def test_registered_as_one_method_with_pro_name():
    cfg = PollenConfig.load(None, {"strategy.name": "fedkseed"})
    assert method_for(cfg).name == "fedkseed"
    s = build_strategy(StrategyContext(cfg=cfg, tensor_names=[]))
    assert isinstance(s, FedKSeed) and not s.acc.pro and s.acc.k == cfg.fedkseed.k
    assert s.min_available_nodes == cfg.federation.clients
    cfg = PollenConfig.load(None, {"strategy.name": "fedkseed-pro"})
    assert method_for(cfg).name == "fedkseed"
    assert build_strategy(StrategyContext(cfg=cfg, tensor_names=[])).acc.pro
    cfg = PollenConfig.load(None, {"strategy.name": "fedkseed", "fedkseed.pro": True})
    assert build_strategy(StrategyContext(cfg=cfg, tensor_names=[])).acc.pro


def test_aggregate_weighted_by_sample_counts_and_equal_weight():
    replies = [reply(1, encode_pairs([(1, 0.5), (2, -1.0)], K), n=10, loss=2.0),
               reply(2, encode_pairs([(1, 1.0), (5, 2.0), (5, 2.0)], K), n=30, loss=4.0)]
    s = strategy()
    arrays, metrics = s.aggregate_train(1, replies)
    expect = np.zeros(K)
    expect[[1, 2]] += np.array([0.5, -1.0]) * 10 / 40
    expect[[1, 5]] += np.array([1.0, 4.0]) * 30 / 40
    assert np.allclose(s.acc.A, expect, atol=1e-7) and s.acc.version == 1
    assert int(arrays["version"].numpy()[0]) == 1 and np.allclose(arrays["A"].numpy(), expect)
    assert metrics["num-examples"] == 40 and metrics["clients"] == 2 and metrics["pairs"] == 5
    assert math.isclose(metrics["train_loss"], (2.0 * 10 + 4.0 * 30) / 40)
    assert s.synced == {1: 0, 2: 0}
    eq = strategy(equal_weight=True)
    eq.aggregate_train(1, replies)
    assert math.isclose(eq.acc.A[1], (0.5 + 1.0) / 2, rel_tol=1e-6)


def test_invalid_replies_dropped_round_completes(caplog):
    good = [reply(1, encode_pairs([(1, 0.5)], K), n=10), reply(2, encode_pairs([(3, 1.0)], K), n=30)]
    ins = Message(content=RecordDict({}), dst_node_id=99, message_type=MessageType.TRAIN)
    bad = {
        10: reply(10, raw_pairs([1, 2], [0.5])),  # 2 indices, 1 value
        18: reply(18, b"\xff" * 5),  # not a message at all
        11: reply(11, raw_pairs([K], [1.0])),  # seed index >= K
        12: reply(12, raw_pairs([3], [float("nan")])),
        13: reply(13, encode_pairs([(0, 1.0)] * (STEPS + 1), K)),  # more pairs than local steps
        14: reply(14, encode_pairs([(0, 1.0)], K), version=5),  # a version the server never had
        15: reply(15, encode_pairs([(0, 1.0)], K), drop_metrics=True),
        16: reply(16, encode_pairs([(0, 1.0)], K), n=0),
        17: reply(17, None),  # no pairs record
        99: Message(error=Error(code=0, reason="client crashed"), reply_to=ins),
    }
    s = strategy()
    with caplog.at_level(logging.WARNING, logger="flwr.pollen.fedkseed"):
        arrays, metrics = s.aggregate_train(1, [good[0], *bad.values(), good[1]])
    assert arrays is not None and metrics["clients"] == 2 and metrics["num-examples"] == 40
    expect = np.zeros(K)
    expect[1], expect[3] = 0.5 * 10 / 40, 1.0 * 30 / 40
    assert np.allclose(s.acc.A, expect, atol=1e-7)
    assert set(s.dropped) == set(bad) - {99} and s.failed == {99: "client crashed"}
    for node, why in [(10, "1 values for 2 indices"), (18, "SeedPairs"), (11, ">= K"),
                      (12, "non-finite"), (13, "over its limit"), (14, "model-version"), (15, "metrics"), (16, "num-examples"),
                      (17, "pairs")]:
        assert why in s.dropped[node], (node, s.dropped[node])
        assert f"node {node}:" in caplog.text
    assert "node 99 replied with an error: client crashed" in caplog.text
    # A round where nothing valid arrived leaves the model (and version) as they were.
    arrays, metrics = s.aggregate_train(2, [bad[10], bad[99]])
    assert arrays is None and metrics is None and s.acc.version == 1


def test_configure_train_one_message_per_node_with_what_it_lacks():
    """Each node gets the smallest downlink from the version it last reported; applying it to the
    accumulator the node holds gives the server's A bit for bit."""
    s = strategy()
    held: dict[int, tuple[np.ndarray, int]] = {}
    rounds = {1: [1, 2], 2: [1, 3], 3: [1, 2, 3, 4], 4: [2]}
    for r, nodes in rounds.items():
        msgs = list(s.configure_train(r, s.initial_arrays(), ConfigRecord({"extra": 7}), FakeGrid(nodes)))
        assert sorted(m.metadata.dst_node_id for m in msgs) == nodes
        for m in msgs:
            node, conf = m.metadata.dst_node_id, m.content["config"]
            base = s.synced.get(node, 0)
            assert conf["server-round"] == r and conf["extra"] == 7 and "probs" not in conf
            down = decode_downlink(conf["downlink"], K)
            assert down.version == s.acc.version and down.base_version in (base, 0)
            a, v = held.get(node, (np.zeros(K, np.float32), 0))
            got = apply_downlink(a, v, down)
            assert got is not None and got.dtype == np.float32 and np.array_equal(got, s.acc.A)
            held[node] = (got, down.version)
        if r == 3:  # node 2 skipped round 2 (it is sent more than node 1); node 4 is new
            by_node = {m.metadata.dst_node_id: m.content["config"]["downlink"] for m in msgs}
            assert len(by_node[2]) > len(by_node[1])
            assert decode_downlink(by_node[4], K).base_version == 0
        s.aggregate_train(r, [reply(n, encode_pairs([(n + r, 0.1 * r), (2 * n + r, -0.3)], K),
                                    version=s.acc.version) for n in nodes])
    # A node whose state is older than the message's base cannot apply a log or set.
    (msg,) = s.configure_train(5, s.initial_arrays(), ConfigRecord(), FakeGrid([1]))
    down = decode_downlink(msg.content["config"]["downlink"], K)
    assert down.kind in ("set", "log") and down.base_version == 2 == s.synced[1]
    assert apply_downlink(np.zeros(K, np.float32), 0, down) is None
    assert apply_downlink(np.zeros(K, np.float32), 1, down) is None


def test_sampling_fraction_and_pro_probabilities_sent():
    s = strategy(pro=True, fraction_train=0.5, min_train_nodes=1)
    s.aggregate_train(1, [reply(1, encode_pairs([(4, 50.0), (9, 0.1)], K))])
    msgs = list(s.configure_train(2, s.initial_arrays(), ConfigRecord(), FakeGrid([1, 2, 3, 4])))
    assert len(msgs) == 2 and len({m.metadata.dst_node_id for m in msgs}) == 2
    # Sampling is seeded by (seed, round): the same round picks the same nodes, rounds differ.
    picks = [s._sample(FakeGrid([4, 3, 2, 1]), r) for r in range(2, 12)]
    assert picks[0] == [m.metadata.dst_node_id for m in msgs] == s._sample(FakeGrid([1, 2, 3, 4]), 2)
    assert len({tuple(p) for p in picks}) > 1
    p = decode_probabilities(msgs[0].content["config"]["probs"], K)
    assert np.allclose(p, s.acc.probabilities(), atol=1e-7) and p.argmax() == 4


@pytest.mark.parametrize("steps", [200])
def test_uplink_pairs_at_200_steps_fit_2kb(steps):
    rng = np.random.default_rng(0)
    pairs = list(zip(rng.integers(0, 1024, steps).tolist(), rng.normal(size=steps).tolist(), strict=True))
    msg = reply(1, encode_pairs(pairs, 1024), n=300)
    from pollen.protocol.records import payload_bytes

    assert payload_bytes(msg.content) <= 2048
