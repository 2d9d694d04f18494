"""A Grid that forwards everything to another Grid; wrappers override `send_and_receive` only."""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import Message
from flwr.serverapp import Grid


class DelegatingGrid(Grid):
    """Base of Pollen's inbound layers (metering, decoding, simulated attackers)."""

    def __init__(self, inner: Grid) -> None:
        self._inner = inner

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> Iterable[Message]:
        return self._inner.send_and_receive(messages, timeout=timeout)

    def set_run(self, run) -> None:  # type: ignore[no-untyped-def]
        self._inner.set_run(run)

    @property
    def run(self):  # type: ignore[override]
        return self._inner.run

    def create_message(self, *args, **kwargs) -> Message:  # type: ignore[override]
        return self._inner.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return self._inner.get_node_ids()

    def get_nodes(self):  # type: ignore[no-untyped-def]
        return self._inner.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._inner.pull_messages(message_ids)
