"""Real Flower messages for strategy tests: an instruction per node and the node's reply."""

from __future__ import annotations

import numpy as np
from flwr.app import Message, MessageType, MetricRecord, RecordDict

from pollen.protocol.records import to_arrays

# The timing metrics the ClientApp adds to every train reply (pollen/client/app.py).
TIMING = {"train_s": 1.0, "load_s": 0.0}


try:  # Outside a ServerApp process Flower has no task identity; give tests one.
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
except ImportError:  # older Flower builds messages without it
    pass


def reply(state: dict[str, np.ndarray], num_examples: int, node_id: int, **metrics: float) -> Message:
    ins = Message(content=RecordDict({}), dst_node_id=node_id, message_type=MessageType.TRAIN)
    content = RecordDict({
        "arrays": to_arrays(state),
        "metrics": MetricRecord({**TIMING, "num-examples": num_examples, **metrics}),
    })
    return Message(content=content, reply_to=ins)
