"""A Grid that counts the payload bytes of every message it sends and receives, then screens replies."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from flwr.app import Message
from flwr.serverapp import Grid

from pollen.protocol.delegating_grid import DelegatingGrid
from pollen.protocol.identity import reply_partition
from pollen.protocol.records import payload_bytes
from pollen.server.decode import decode_replies
from pollen.server.inbound import ReplyScreen, is_train
from pollen.server.ledger import Ledger


class DownlinkLayer(Protocol):
    """What MeteredGrid needs of a method's down-link (pollen/strategies/fedpeft/downlink.py)."""

    def outbound(self, messages: list[Message]) -> None: ...
    def restore(self) -> None: ...
    def inbound(self, replies: list[Message]) -> tuple[list[Message], list[str]]: ...


class MeteredGrid(DelegatingGrid):
    """Delegates to Flower's Grid; strategies stay unaware that traffic is being counted."""

    def __init__(self, inner: Grid, ledger: Ledger, *, max_payload_bytes: int = 256 << 20,
                 codec: str = "", screen: ReplyScreen | None = None,
                 downlink: DownlinkLayer | None = None) -> None:
        super().__init__(inner)
        # The method's down-link compression (ServerSide.downlink): it rewrites train messages just
        # before they leave, so `bytes_down` counts what really goes out.
        self._downlink = downlink
        self._ledger = ledger
        self._max_payload_bytes = max_payload_bytes
        self._codec = codec  # the run's compression.codec: the only one whose payloads decode
        # The run's method contract and num-examples ceiling (ReplyScreen.for_run); the PEFT
        # method's contract when none is given.
        if screen is None:
            from pollen.strategies.fedpeft.wire import PEFT

            screen = ReplyScreen(PEFT)
        self.screen = screen

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> Iterable[Message]:
        messages = list(messages)
        if self._downlink is not None:
            self._downlink.outbound(messages)
        down = sum(payload_bytes(m.content) for m in messages)
        try:
            replies = list(self._inner.send_and_receive(messages, timeout=timeout))
        finally:
            if self._downlink is not None:
                self._downlink.restore()
        # Bytes as they crossed the wire, before decoding.
        up = sum(payload_bytes(m.content) for m in replies if not m.has_error())
        self._ledger.traffic(down=down, up=up)
        self._account(messages, replies)
        refused: list[str] = []
        if self._downlink is not None:
            replies, refused = self._downlink.inbound(replies)
        # Compressed payloads are decoded and validated, then every reply is screened against the
        # method's contract (pollen.server.inbound); strategies only ever see conforming replies.
        decoded, dropped = decode_replies(messages, replies, max_bytes=self._max_payload_bytes,
                                          codec=self._codec)
        screened = self.screen.screen(messages, decoded)
        self._ledger.dropped(len(refused) + len(dropped) + len(decoded) - len(screened))
        return sorted(screened, key=arrival_independent_order)

    def _account(self, messages: list[Message], replies: list[Message]) -> None:
        """What became of this round's train instructions: replied, failed, or never answered."""
        train = [m for m in messages if is_train(m)]
        if not train:
            return
        nodes = {m.metadata.dst_node_id for m in train}
        answers = [r for r in replies if r.metadata.src_node_id in nodes]
        errors = sum(1 for r in answers if r.has_error())
        self._ledger.exchange(sampled=len(train), replied=len(answers) - errors, errors=errors,
                              timed_out=max(0, len(train) - len(answers)))


def arrival_independent_order(reply: Message) -> tuple[bool, int, int]:
    """Sort key: declared partition id, then node id (Flower's node ids are random per run).

    Replies arrive in whatever order clients finish, and float sums depend on order: two identical
    runs drifted apart by up to 1.4e-4 per LoRA weight after 3 rounds once AdamW amplified the last
    bits. Aggregating in partition order makes a run reproducible, and a resumed run equal to an
    uninterrupted one. The id only orders replies; it grants nothing.
    """
    pid = reply_partition(reply)
    return (pid is None, pid if pid is not None else 0, int(reply.metadata.src_node_id))
