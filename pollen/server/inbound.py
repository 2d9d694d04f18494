"""The screening layer: every client reply is checked against its method's contract before any
strategy sees it.

Flower's strategies trust their inputs. One reply with an extra metric key, a second MetricRecord,
an extra ArrayRecord, no metrics or no `num-examples` makes Flower raise
`InconsistentMessageReplies`, which nothing catches, so the server exits; one NaN turns FedAvg's
mean (and a Median with it) into NaN; one client claiming 2^63−1 examples takes 100 % of the
weight. Every strategy, Pollen's and Flower's baselines alike, gets the same protection by
screening here, once, on the server's inbound path (`MeteredGrid`, after decoding compressed
updates). A dropped reply gets one log line naming the node and the offending field; the round
goes on with the rest.

What a reply must be (see `ReplyContract` in pollen/protocol/contracts.py; each method declares
its own next to its wire format, `Method.reply_contract`):
- an answer to a message this round actually sent: same node, same message id (when the transport
  assigns ids), the same message type, and only one reply per node;
- exactly the contract's records, each of the declared kind: ArrayRecords with the tensor names,
  shapes and dtypes of the sent message's record, every value finite; ConfigRecords with exactly the
  declared keys and value types; the MetricRecord with the required keys (optional ones allowed),
  each a finite number of the declared type;
- `num-examples` a positive integer. Bounded influence: a claim above the run's ceiling
  (`federation.max_client_examples`; in simulation the largest partition) is clipped to it, logged
  once per node, so no claimed count can overflow the total or take the model.
Error replies pass (strategies log and skip them) if they answer a sent message.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord

from pollen.protocol.contracts import (
    CONFIG_TYPES,
    COUNT,
    INT,
    Arrays,
    Configs,
    Contracts,
    RecordSpec,
)

LOG = logging.getLogger("pollen.server")
WEIGHT_KEY = "num-examples"
DEFAULT_CEILING = 1_000_000



class ReplyProblem(Exception):
    """Why one reply is refused: `field` names the offending record/key."""

    def __init__(self, field: str, why: str) -> None:
        super().__init__(f"{field}: {why}")
        self.field = field


def base_type(message_type: str) -> str:
    """Flower message types are "train"/"evaluate"/"query", optionally with ".<custom>"."""
    return message_type.split(".", 1)[0]


def is_train(msg: Message) -> bool:
    return base_type(msg.metadata.message_type) == "train"


@dataclass
class Drop:
    """A reply that did not reach the strategy."""

    node: int
    field: str
    reason: str


class ReplyScreen:
    """Screens a round's replies against `contracts`; keeps the drops for the ledger and tests."""

    def __init__(self, contracts: Contracts, *, ceiling: int = DEFAULT_CEILING,
                 log: logging.Logger = LOG) -> None:
        if not isinstance(ceiling, int) or ceiling < 1:
            raise ValueError(f"num-examples ceiling must be an int >= 1, got {ceiling!r}")
        self.contracts = contracts
        self.ceiling = ceiling
        self.log = log
        self.drops: list[Drop] = []  # every drop of the run, in order
        self.clipped: dict[int, int | float] = {}  # node -> first claim above the ceiling

    @classmethod
    def for_run(cls, cfg: Any) -> ReplyScreen:
        """The screen of a run: its method's contract and the configured ceiling."""
        from pollen.strategies import method_for

        return cls(method_for(cfg).reply_contract(cfg),
                   ceiling=int(cfg.federation.max_client_examples))

    def screen(self, sent: Sequence[Message], replies: Sequence[Message]) -> list[Message]:
        """The replies a strategy may see, in their original order; the rest are logged and dropped."""
        by_node = {int(m.metadata.dst_node_id): m for m in sent}
        count = Counter(int(r.metadata.src_node_id) for r in replies)
        kept: list[Message] = []
        for reply in replies:
            node = int(reply.metadata.src_node_id)
            try:
                if count[node] > 1:
                    raise ReplyProblem("reply", f"{count[node]} replies from one node in one round; "
                                                "all of them are refused")
                self._check(reply, by_node.get(node))
            except ReplyProblem as p:
                self.drops.append(Drop(node, p.field, str(p)))
                self.log.warning("dropping reply from node %d: %s (the round continues without it)",
                                 node, p)
                continue
            kept.append(reply)
        return kept

    # -- checks --------------------------------------------------------------------------------
    def _check(self, reply: Message, sent: Message | None) -> None:
        meta = reply.metadata
        if sent is None:
            raise ReplyProblem("reply_to", "no message was sent to this node in this round")
        if sent.metadata.message_id and meta.reply_to_message_id != sent.metadata.message_id:
            raise ReplyProblem("reply_to", f"answers message {meta.reply_to_message_id!r}, not the "
                                           "one this node was sent")
        if meta.message_type != sent.metadata.message_type:
            raise ReplyProblem("message_type", f"{meta.message_type!r}, but the node was sent "
                                               f"{sent.metadata.message_type!r}")
        if reply.has_error():
            return
        if not reply.has_content():
            raise ReplyProblem("content", "the reply has neither content nor an error")
        contract = self.contracts.get(base_type(meta.message_type))
        if contract is None:
            raise ReplyProblem("message_type", f"this method expects no "
                                               f"{meta.message_type!r} replies")
        content = reply.content
        names = set(content.keys())
        extra = sorted(names - set(contract.records))
        if extra:
            raise ReplyProblem(extra[0], "record not in the contract"
                               + (f" (also {', '.join(map(repr, extra[1:]))})" if extra[1:] else ""))
        missing = sorted(set(contract.records) - names - contract.optional)
        if missing:
            raise ReplyProblem(missing[0], "required record missing")
        sent_content = sent.content if sent.has_content() else None
        for name, spec in contract.records.items():
            if name in names:
                self._check_record(reply, name, spec, sent_content)

    def _check_record(self, reply: Message, name: str, spec: RecordSpec, sent: Any) -> None:
        record = reply.content[name]
        if isinstance(spec, Arrays):
            if not isinstance(record, ArrayRecord):
                raise ReplyProblem(name, f"must be an ArrayRecord, got {type(record).__name__}")
            like = sent.array_records.get(spec.like) if sent is not None else None
            if like is None:
                raise ReplyProblem(name, f"the sent message has no ArrayRecord {spec.like!r} to "
                                         "compare with")
            _check_arrays(name, record, like)
        elif isinstance(spec, Configs):
            if not isinstance(record, ConfigRecord):
                raise ReplyProblem(name, f"must be a ConfigRecord, got {type(record).__name__}")
            _check_keys(name, record, spec.keys, spec.optional)
            for key, value in record.items():
                kind = spec.keys.get(key) or spec.optional[key]
                if not isinstance(value, CONFIG_TYPES[kind]) or isinstance(value, bool):
                    raise ReplyProblem(f"{name}.{key}", f"must be {kind}, got {type(value).__name__}")
        else:
            if not isinstance(record, MetricRecord):
                raise ReplyProblem(name, f"must be a MetricRecord, got {type(record).__name__}")
            _check_keys(name, record, spec.required, spec.optional)
            for key, value in record.items():
                kind = spec.required.get(key) or spec.optional[key]
                _check_metric(f"{name}.{key}", value, kind)
                if kind == COUNT and value > self.ceiling:
                    self._clip(reply, record, key, value)

    def _clip(self, reply: Message, record: MetricRecord, key: str, value: int) -> None:
        node = int(reply.metadata.src_node_id)
        if node not in self.clipped:
            self.clipped[node] = value
            self.log.warning("node %d claims %s = %d, above the ceiling %d; counted as %d (logged "
                             "once per node)", node, key, value, self.ceiling, self.ceiling)
        record[key] = self.ceiling


def _check_keys(name: str, record: Mapping[str, Any], required: Mapping[str, str],
                optional: Mapping[str, str]) -> None:
    keys = set(record.keys())
    extra = sorted(keys - set(required) - set(optional))
    if extra:
        raise ReplyProblem(f"{name}.{extra[0]}", "key not in the contract")
    missing = sorted(set(required) - keys)
    if missing:
        raise ReplyProblem(f"{name}.{missing[0]}", "required key missing")


def _check_metric(where: str, value: Any, kind: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ReplyProblem(where, f"must be a single number, got {type(value).__name__}")
    if kind in (COUNT, INT) and not isinstance(value, int):
        raise ReplyProblem(where, f"must be an integer, got {value!r}")
    if kind == COUNT and value <= 0:
        raise ReplyProblem(where, f"must be > 0, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ReplyProblem(where, f"must be finite, got {value!r}")


def _check_arrays(name: str, record: ArrayRecord, like: ArrayRecord) -> None:
    got, want = list(record.keys()), list(like.keys())
    if set(got) != set(want):
        extra, missing = sorted(set(got) - set(want)), sorted(set(want) - set(got))
        what = f"unexpected tensor {extra[0]!r}" if extra else f"missing tensor {missing[0]!r}"
        raise ReplyProblem(name, f"{what} ({len(extra)} unexpected, {len(missing)} missing)")
    for key in want:
        exp_shape = tuple(int(s) for s in like[key].shape)
        exp_dtype = np.dtype(like[key].dtype)
        arr = record[key]
        where = f"{name}[{key!r}]"
        try:
            values = np.asarray(arr.numpy())
        except Exception as e:  # noqa: BLE001 - any decoding failure means the payload is unusable
            raise ReplyProblem(where, f"cannot be decoded ({type(e).__name__})") from None
        if values.dtype != exp_dtype or str(arr.dtype) != str(exp_dtype):
            raise ReplyProblem(where, f"dtype {values.dtype}, expected {exp_dtype}")
        if values.shape != exp_shape or tuple(int(s) for s in arr.shape) != exp_shape:
            raise ReplyProblem(where, f"shape {values.shape}, expected {exp_shape}")
        if values.dtype.kind == "f" and not bool(np.isfinite(values).all()):
            n_nan, n_inf = int(np.isnan(values).sum()), int(np.isinf(values).sum())
            raise ReplyProblem(where, f"{n_nan} NaN and {n_inf} Inf values out of {values.size}")


def screen_replies(sent: Sequence[Message], replies: Sequence[Message],
                   log: logging.Logger = LOG, contracts: Contracts | None = None,
                   ceiling: int = DEFAULT_CEILING) -> list[Message]:
    """One-off screening (FedPEFT's contract unless given): the replies a strategy may see."""
    if contracts is None:
        from pollen.strategies.fedpeft.wire import PEFT

        contracts = PEFT
    return ReplyScreen(contracts, ceiling=ceiling, log=log).screen(sent, replies)
