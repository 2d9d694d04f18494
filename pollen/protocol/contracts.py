"""Reply contracts: the language in which a method states exactly what its honest clients send.

Both sides agree on it: each method declares its contract next to its wire format
(pollen/strategies/<method>/wire.py, `Method.reply_contract`), and the server's screening layer
(pollen/server/inbound.py) refuses any reply that does not match it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# Value kinds a contract can ask for.
COUNT = "count"    # int > 0 (not bool): a sample count, clipped to the run's ceiling
INT = "int"        # any int (not bool)
NUMBER = "number"  # finite int or float (not bool)
CONFIG_TYPES: dict[str, type | tuple[type, ...]] = {"bytes": bytes, "str": str, "int": int}
# Every train reply's metrics carry the client's seconds of work and of loading (the ClientApp adds
# them for every method); the ledger sums them per round.
TRAIN_SECONDS, LOAD_SECONDS = "train_s", "load_s"
CLIENT_TIMING: dict[str, str] = {TRAIN_SECONDS: NUMBER, LOAD_SECONDS: NUMBER}


@dataclass(frozen=True)
class Arrays:
    """An ArrayRecord laid out exactly like the sent message's record `like` (names, shapes, dtypes)."""

    like: str


@dataclass(frozen=True)
class Configs:
    """A ConfigRecord with exactly these keys ("bytes" | "str" | "int"); `optional` keys may be absent."""

    keys: Mapping[str, str]
    optional: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Metrics:
    """A MetricRecord with the `required` keys and any of the `optional` ones (kinds: COUNT/INT/NUMBER).

    Flower's baselines need every reply of a round to carry the same metric keys; their families
    declare no optional keys, so a reply that screens clean is always consistent with the others.
    """

    required: Mapping[str, str]
    optional: Mapping[str, str] = field(default_factory=dict)


RecordSpec = Arrays | Configs | Metrics


@dataclass(frozen=True)
class ReplyContract:
    """The records a reply to one message type must hold; `optional` names may be absent."""

    records: Mapping[str, RecordSpec]
    optional: frozenset[str] = frozenset()


Contracts = Mapping[str, ReplyContract]  # sent message type ("train", "evaluate") -> contract
