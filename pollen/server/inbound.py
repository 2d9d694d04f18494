"""Screening of client replies before any strategy sees them.

Flower's strategies trust their inputs: one NaN update turns FedAvg's mean (and a Median with it)
into NaN, a wrongly shaped one crashes the aggregation, and a NaN sample count divides the round by
NaN. Every strategy gets the same protection by screening here, once, on the server's inbound path
(`MeteredGrid` calls `screen_replies` on every round's replies). A dropped reply gets one log line
naming the node and the reason; the round goes on with the rest.

Rules (train replies only; error replies pass through, strategies already log and skip them):
- the reply must answer a train message this round sent to that node;
- every ArrayRecord the reply shares (by key) with the sent message must hold exactly the sent
  tensor names, each with the sent shape; records only one side has are the strategy's protocol;
- every array must be a real numeric type with no NaN or Inf value;
- the sample count `num-examples`, when present, must be a finite number > 0.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
from flwr.app import Message

from pollen.protocol.flat import Layout

LOG = logging.getLogger("pollen.server")
WEIGHT_KEY = "num-examples"


def is_train(msg: Message) -> bool:
    """Flower message types are "train" or "train.<custom>"."""
    return msg.metadata.message_type.split(".", 1)[0] == "train"


def screen_replies(sent: Sequence[Message], replies: Sequence[Message],
                   log: logging.Logger = LOG) -> list[Message]:
    """The replies a strategy may aggregate, in their original order; the rest are logged and dropped."""
    by_node = {m.metadata.dst_node_id: m for m in sent}
    kept: list[Message] = []
    for reply in replies:
        reason = reply_problem(reply, by_node)
        if reason is None:
            kept.append(reply)
        else:
            log.warning("dropping reply from node %d: %s (the round continues without it)",
                        reply.metadata.src_node_id, reason)
    return kept


def reply_problem(reply: Message, sent_by_node: dict[int, Message]) -> str | None:
    """Why a reply must not be aggregated (None when it may be)."""
    if reply.has_error() or not is_train(reply):
        return None
    sent = sent_by_node.get(reply.metadata.src_node_id)
    if sent is None or not is_train(sent):
        return "no train message was sent to this node in this round"
    if not reply.has_content():
        return "the reply has neither content nor an error"
    content = reply.content
    sent_arrays = sent.content.array_records if sent.has_content() else {}
    for key, record in content.array_records.items():
        if key in sent_arrays:
            why = Layout.of(sent_arrays[key]).mismatch(record)
            if why is not None:
                return f"ArrayRecord {key!r}: {why}"
        for name, arr in record.items():
            why = _array_problem(arr)
            if why is not None:
                return f"tensor {name!r}: {why}"
    for record in content.metric_records.values():
        if WEIGHT_KEY in record:
            w = record[WEIGHT_KEY]
            if isinstance(w, list) or not math.isfinite(float(w)) or float(w) <= 0:
                return f"{WEIGHT_KEY!r} must be a finite number > 0, got {w!r}"
    return None


def _array_problem(arr: object) -> str | None:
    try:
        values = np.asarray(arr.numpy())  # type: ignore[attr-defined]
    except Exception as e:  # noqa: BLE001 - any decoding failure means the payload is unusable
        return f"cannot be decoded ({type(e).__name__}: {e})"
    kind = values.dtype.kind
    if kind not in "fiu":
        return f"dtype {values.dtype} is not a real number type"
    if kind == "f" and not bool(np.isfinite(values).all()):
        n_nan = int(np.isnan(values).sum())
        n_inf = int(np.isinf(values).sum())
        if n_nan or n_inf:
            return f"{n_nan} NaN and {n_inf} Inf values out of {values.size}"
    return None
