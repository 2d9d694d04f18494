"""What a reply says about its sender: the client's data partition.

Flower gives nodes random ids; only the node itself knows its `partition-id` (node_config). Replies
carry it in a small ConfigRecord so simulation tooling on the server (the AttackGrid, which plays
the configured attackers) can tell which partition a reply comes from. Flower's strategies ignore
ConfigRecords in train replies, so aggregation is unaffected.
"""

from __future__ import annotations

from flwr.app import ConfigRecord, Message

IDENTITY_KEY = "client"
PARTITION_KEY = "partition-id"


def identity_record(partition_id: int) -> ConfigRecord:
    return ConfigRecord({PARTITION_KEY: int(partition_id)})


def reply_partition(reply: Message) -> int | None:
    """The partition id a reply declares, or None when it declares none (or a malformed one)."""
    if reply.has_error() or not reply.has_content():
        return None
    record = reply.content.config_records.get(IDENTITY_KEY)
    if record is None:
        return None
    value = record.get(PARTITION_KEY)
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None
