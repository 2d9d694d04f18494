"""A Grid that runs the client handler in this process: strategies and server runners run unchanged.

For benchmarks and tests that must exercise the real Flower strategy objects, messages and client
handlers without paying for SuperLink/Ray processes. Each node gets a Flower `Context` like a
simulation SuperNode's (`partition-id`, `num-partitions`, the run config). A handler exception becomes
an error reply, as Flower does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from flwr.app import Context, Error, Message, RecordDict
from flwr.serverapp import Grid

Handler = Callable[[Message, Context], Message]


def ensure_task_identity() -> None:
    """Outside a ServerApp process Flower has no task identity; messages cannot be built without one."""
    from flwr.supercore.task_identity import TaskIdentity

    try:
        TaskIdentity.run_id  # noqa: B018
    except RuntimeError:
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1


class InProcessGrid(Grid):
    """Nodes 1..n (partition ids 0..n-1) answered by `handler(message, context)`, one after another."""

    def __init__(self, n_nodes: int, handler: Handler, run_config: dict[str, str] | None = None) -> None:
        ensure_task_identity()
        self.handler = handler
        self.contexts = {
            pid + 1: Context(run_id=1, node_id=pid + 1,
                             node_config={"partition-id": pid, "num-partitions": n_nodes},
                             state=RecordDict(), run_config=dict(run_config or {}))
            for pid in range(n_nodes)}

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> Iterable[Message]:
        replies = []
        for msg in messages:
            ctx = self.contexts[msg.metadata.dst_node_id]
            try:
                replies.append(self.handler(msg, ctx))
            except Exception as e:  # noqa: BLE001 - Flower turns ClientApp exceptions into error replies
                replies.append(Message(Error(code=0, reason=f"{type(e).__name__}: {e}"), reply_to=msg))
        return replies

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def set_run(self, run) -> None:  # type: ignore[no-untyped-def]
        self._run = run

    @property
    def run(self):  # type: ignore[override]
        return getattr(self, "_run", None)

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:  # type: ignore[override]
        return Message(content=content, message_type=message_type, dst_node_id=dst_node_id,
                       group_id=group_id, ttl=ttl)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError("InProcessGrid answers synchronously; use send_and_receive")

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError("InProcessGrid answers synchronously; use send_and_receive")
