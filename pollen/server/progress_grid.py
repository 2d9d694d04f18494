"""The innermost Grid layer: push a round's messages, pull replies as they come, and say so live.

Flower's `send_and_receive` is push, then pull until every reply is in or the timeout passes; it
reports nothing until the end, so a round looked like an empty bar for its whole length. This layer
does the same push/pull through the wrapped grid's own `push_messages` / `pull_messages` (nothing is
re-implemented below them) and writes each change to OUT/progress.json: how many clients were sent
work, how many answered, how many failed, and the deadline of the round timeout.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message
from flwr.serverapp import Grid

from pollen.protocol.delegating_grid import DelegatingGrid
from pollen.server.ledger import Ledger


class ProgressGrid(DelegatingGrid):
    def __init__(self, inner: Grid, ledger: Ledger, *, poll: float = 0.5) -> None:
        super().__init__(inner)
        self._ledger = ledger
        self._poll = poll

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> Iterable[Message]:
        messages = list(messages)
        if not type(self._inner).__module__.startswith("flwr."):
            # Not one of Flower's grids (a transport of its own, another wrapper): its
            # send_and_receive is the behaviour to keep; progress is then per round only.
            return self._inner.send_and_receive(messages, timeout=timeout)
        kind = messages[0].metadata.message_type.partition(".")[0] if messages else "train"
        pending = set(self.push_messages(messages))
        sent = len(pending)
        deadline = None if timeout is None else time.time() + timeout
        replies: list[Message] = []
        failed = 0
        self._ledger.live(kind=kind, sent=sent, done=0, failed=0, deadline=deadline)
        while True:
            new = list(self.pull_messages(pending))
            if new:
                replies.extend(new)
                failed += sum(1 for m in new if m.has_error())
                pending.difference_update(m.metadata.reply_to_message_id for m in new)
                self._ledger.live(kind=kind, sent=sent, done=len(replies) - failed, failed=failed,
                                  deadline=deadline)
            if not pending or (deadline is not None and time.time() >= deadline):
                return replies
            time.sleep(self._poll)
