"""Aggregation must not depend on the order in which clients' replies arrive."""

import numpy as np
from flwr.app import Message, MetricRecord, RecordDict

from pollen.protocol.identity import IDENTITY_KEY, identity_record
from pollen.protocol.records import from_arrays, to_arrays
from pollen.server.ledger import Ledger
from pollen.server.metered_grid import MeteredGrid
from tests.server.test_decode import ScriptedGrid
from tests.strategies import helpers  # noqa: F401  (sets Flower's task identity)
from tests.strategies.helpers import TIMING

SHAPE = (64, 8)


class ShuffledGrid(ScriptedGrid):
    """Replies carry each node's array, in an order chosen by the test (arrival order)."""

    def __init__(self, arrays, partitions, order):
        super().__init__(arrays)
        self.partitions, self.order = partitions, order

    def send_and_receive(self, messages, *, timeout=None):
        by_node = {m.metadata.dst_node_id: m for m in messages}
        return [Message(content=RecordDict({
                    "arrays": to_arrays({"w": self.payloads[n]}),
                    "metrics": MetricRecord({**TIMING, "num-examples": 7, "train_loss": 1.0, "seen": 7}),
                    IDENTITY_KEY: identity_record(self.partitions[n])}), reply_to=by_node[n])
                for n in self.order]


def _round(tmp_path, order):
    rng = np.random.default_rng(0)
    nodes = [11, 42, 7, 93, 5]
    # Values spanning many magnitudes, so a float32 sum's result depends on the order of its terms.
    arrays = {n: (rng.normal(size=SHAPE) * 10.0 ** rng.integers(-6, 6, size=SHAPE)).astype(np.float32)
              for n in nodes}
    partitions = {n: i for i, n in enumerate([93, 5, 42, 11, 7])}
    grid = MeteredGrid(ShuffledGrid(arrays, partitions, order), Ledger(tmp_path, 1))
    sent = to_arrays({"w": np.zeros(SHAPE, np.float32)})
    msgs = [Message(content=RecordDict({"arrays": sent}), dst_node_id=n,
                    message_type="train") for n in nodes]
    replies = list(grid.send_and_receive(msgs))
    total = np.zeros(SHAPE, np.float32)
    for r in replies:  # the running float32 sum a FedAvg makes, in the order it is given
        total += from_arrays(r.content["arrays"])["w"]
    return [r.metadata.src_node_id for r in replies], total


def test_replies_come_in_partition_order_whatever_the_arrival_order(tmp_path):
    ids_a, sum_a = _round(tmp_path / "a", [11, 42, 7, 93, 5])
    ids_b, sum_b = _round(tmp_path / "b", [5, 93, 7, 11, 42])
    assert ids_a == ids_b == [93, 5, 42, 11, 7]  # partitions 0..4
    assert np.array_equal(sum_a, sum_b)  # bitwise: same order, same float sum
