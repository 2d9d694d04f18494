"""Compressed updates through the server's inbound path: decoded, validated, bad ones dropped."""

import json

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid

from pollen.compression import Codec
from pollen.config import PollenConfig
from pollen.protocol.records import to_arrays
from pollen.server.ledger import Ledger
from pollen.server.metered_grid import MeteredGrid
from pollen.strategies import StrategyContext, build_strategy
from tests.strategies import helpers  # noqa: F401  (sets Flower's task identity)
from tests.strategies.helpers import TIMING

SHAPES = {"a.lora_A.default.weight": (4, 32), "a.lora_B.default.weight": (16, 4)}
CODEC = Codec.parse("topz:0.25 > kmeans:8 > zstd")


class ScriptedGrid(Grid):
    """Answers each node's message with a scripted update payload."""

    def __init__(self, payloads):
        self.payloads = payloads

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for m in messages:
            blob = self.payloads[m.metadata.dst_node_id]
            content = RecordDict({"update": ConfigRecord({"blob": blob, "codec": CODEC.spec}),
                                  "metrics": MetricRecord({**TIMING, "num-examples": 10, "train_loss": 1.0, "seen": 10})})
            replies.append(Message(content=content, reply_to=m))
        return replies

    def set_run(self, run): ...
    run = None
    def create_message(self, *a, **k): ...
    def get_node_ids(self): return list(self.payloads)
    def push_messages(self, messages): ...
    def pull_messages(self, ids): ...


def _global(rng):
    return {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}


def test_bad_payloads_are_dropped_and_the_round_completes(tmp_path, caplog):
    rng = np.random.default_rng(0)
    g = _global(rng)
    good = {k: rng.normal(size=s).astype(np.float32) * 0.01 for k, s in SHAPES.items()}
    blob = CODEC.encode(good)
    wrong_shape = CODEC.encode({k: np.zeros((s[0] + 1, s[1]), np.float32) for k, s in SHAPES.items()})
    missing = CODEC.encode({"a.lora_A.default.weight": good["a.lora_A.default.weight"]})
    payloads = {1: blob, 2: blob[: len(blob) // 2], 3: b"\x00garbage" * 10, 4: wrong_shape,
                5: missing, 6: blob + b"\x00" * 5000}
    ledger = Ledger(tmp_path, 1)
    grid = MeteredGrid(ScriptedGrid(payloads), ledger, max_payload_bytes=len(blob) + 1024,
                       codec=CODEC.spec)
    msgs = [Message(content=RecordDict({"arrays": to_arrays(g)}), dst_node_id=n,
                    message_type=MessageType.TRAIN) for n in payloads]
    with caplog.at_level("WARNING", logger="pollen.server"):
        replies = list(grid.send_and_receive(msgs))
    assert [r.metadata.src_node_id for r in replies] == [1]
    dropped_nodes = {int(rec.getMessage().split()[4].rstrip(":")) for rec in caplog.records}
    assert dropped_nodes == {2, 3, 4, 5, 6}
    # The survivor decodes to global + the codec's reconstruction of its update.
    _, recon = CODEC.encode_with_reconstruction(good)
    for k in SHAPES:
        np.testing.assert_allclose(replies[0].content["arrays"][k].numpy(), g[k] + recon[k], atol=1e-6)
    cfg = PollenConfig.load(None, {"federation.clients": "6"})
    arrays, _ = build_strategy(StrategyContext(cfg, list(SHAPES))).aggregate_train(1, replies)
    assert arrays is not None
    row = ledger.close_round(1, {"eval_loss": 1.0})
    assert row["dropped"] == 5 and row["bytes_up"] > 0
    assert json.loads((tmp_path / "metrics.json").read_text())["rounds"][0]["dropped"] == 5


def test_nan_updates_never_leave_the_client():
    with pytest.raises(Exception, match="(?i)nan|finite"):
        CODEC.encode({"x": np.array([1.0, np.nan], np.float32)})
