"""Helpers: real Flower Messages for strategy and Grid tests, without Flower's runtime processes."""

from __future__ import annotations

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)

from pollen.protocol.grid import ensure_task_identity
from pollen.protocol.identity import IDENTITY_KEY, identity_record
from tests.strategies.helpers import TIMING

SHAPES = {"layer.weight": (4, 6), "layer.bias": (4,)}


def global_record(seed: int = 0) -> ArrayRecord:
    rng = np.random.default_rng(seed)
    return ArrayRecord({k: Array(rng.normal(size=s).astype(np.float32)) for k, s in SHAPES.items()})


def flat(record: ArrayRecord) -> np.ndarray:
    return np.concatenate([record[k].numpy().reshape(-1) for k in SHAPES])


def state_from_flat(vec: np.ndarray) -> dict[str, np.ndarray]:
    out, pos = {}, 0
    for k, s in SHAPES.items():
        n = int(np.prod(s))
        out[k] = vec[pos : pos + n].reshape(s).astype(np.float32)
        pos += n
    return out


def reply_content(state: dict[str, np.ndarray], pid: int | None = None, n: int = 10) -> RecordDict:
    content = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in state.items()}),
                          "metrics": MetricRecord({**TIMING, "num-examples": n, "train_loss": 1.0, "seen": n})})
    if pid is not None:
        content[IDENTITY_KEY] = identity_record(pid)
    return content


def make_round(glob: ArrayRecord, states: list[dict[str, np.ndarray] | RecordDict],
               server_round: int = 1, node_base: int = 100) -> tuple[list[Message], list[Message]]:
    """Train messages to nodes node_base+i and their replies (a state dict -> partition i's reply)."""
    ensure_task_identity()
    sent, replies = [], []
    for i, st in enumerate(states):
        msg = Message(content=RecordDict({"arrays": glob,
                                          "config": ConfigRecord({"server-round": server_round})}),
                      dst_node_id=node_base + i, message_type=MessageType.TRAIN)
        sent.append(msg)
        content = st if isinstance(st, RecordDict) else reply_content(st, pid=i)
        replies.append(Message(content, reply_to=msg))
    return sent, replies
