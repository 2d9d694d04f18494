"""Server side of compressed updates: validate and decode before any strategy sees them.

A reply carrying `update` bytes (pollen.v1) is decoded against the tensors this node was sent;
the strategy then receives the Flower-conventional `arrays` (global + Δ), so every strategy —
Pollen's or Flower's — works with every codec. A payload that fails validation is dropped with
a log line naming the node and the field; the round goes on with the others.

Only the run's own codec is decoded: a run without one refuses every `update` record (a client
must not make the server run a decoder the operator never enabled), and a payload whose stage
chain differs from the configured one is refused before it is decompressed.
"""

from __future__ import annotations

import logging

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict

from pollen.compression import Codec, decode_update
from pollen.compression.stage import Stage
from pollen.errors import PayloadError
from pollen.protocol.records import UPDATE_KEY, from_arrays, to_arrays

log = logging.getLogger("pollen.server")


def decode_replies(sent: list[Message], replies: list[Message], *, max_bytes: int,
                   codec: Codec | str | None) -> tuple[list[Message], list[str]]:
    """Returns the replies with decoded arrays, and one reason per dropped reply.

    `codec` is the run's configured codec (`compression.codec`; "" / "none" / None = no codec).
    """
    stages = Codec.parse(codec).stages if codec is not None else []
    sent_by_node = {m.metadata.dst_node_id: m for m in sent}
    kept: list[Message] = []
    dropped: list[str] = []
    for reply in replies:
        if reply.has_error() or UPDATE_KEY not in reply.content:
            kept.append(reply)
            continue
        node = reply.metadata.src_node_id
        try:
            kept.append(_decode_one(reply, sent_by_node.get(node), node, max_bytes, stages))
        except PayloadError as e:
            log.warning("dropped update from node %s: %s", node, e)
            dropped.append(f"node {node}: {e}")
    return kept, dropped


def _decode_one(reply: Message, sent: Message | None, node: int, max_bytes: int,
                stages: list[Stage]) -> Message:
    if not stages:
        raise PayloadError("this run uses no codec (compression.codec is empty); an 'update' "
                           "record is refused", client=node, field="update")
    if "arrays" in reply.content:
        raise PayloadError("the reply carries both an 'update' and 'arrays'", client=node,
                           field="arrays")
    if sent is None or "arrays" not in sent.content:
        raise PayloadError("reply to a message that carried no tensors", client=node, field="update")
    record = reply.content[UPDATE_KEY]
    blob = record.get("blob") if isinstance(record, ConfigRecord) else None
    if not isinstance(blob, bytes):
        raise PayloadError("missing or non-bytes 'blob'", client=node, field="update.blob")
    base = from_arrays(sent.content["arrays"])
    expected = {k: (tuple(v.shape), "float32") for k, v in base.items()}
    delta = decode_update(blob, expected=expected, max_bytes=max_bytes, client=node,
                          stages=stages)
    full = {k: (base[k].astype(np.float32) + delta[k]).astype(base[k].dtype) for k in base}
    content = RecordDict({k: v for k, v in reply.content.items() if k != UPDATE_KEY})
    content["arrays"] = to_arrays(full)
    reply.content = content
    return reply
