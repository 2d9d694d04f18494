"""In-process Flower Grids for tests and benchmarks: `LocalGrid` and `InProcessGrid`.

`LocalGrid` delivers messages to client functions `(message, partition id) -> content`; `InProcessGrid`
runs a ClientApp-style handler `(message, Context) -> Message` with a simulation SuperNode's Context
(`partition-id`, `num-partitions`, the run config), so the real client handlers run unchanged.

For benchmarks and tests that must run the real server-side pieces (a strategy's `start`,
`configure_train`/`aggregate_train`, MeteredGrid's screening, the AttackGrid) many times, where
Flower's simulation engine (one process per client, seconds per round) would be far too slow.
Messages are real `flwr.app.Message`s: ids are assigned on push as Flower's grids do, and replies are
built with `Message(content, reply_to=msg)`, so `src_node_id`, `reply_to_message_id` and
`has_error()` behave as in a deployment. A client function that raises produces an error reply,
as Flower's ClientApp runtime does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from uuid import uuid4

import numpy as np
from flwr.app import Context, Error, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

# (instruction message, partition id) -> reply content
ClientFn = Callable[[Message, int], RecordDict]
# (instruction message, the node's Flower Context) -> reply message, as a ClientApp's handler
Handler = Callable[[Message, Context], Message]


def ensure_task_identity(run_id: int = 1) -> None:
    """Flower's Message constructor reads the process's task identity (set by Flower's runtimes)."""
    try:
        TaskIdentity.run_id  # noqa: B018 - probing a property that raises when unset
    except RuntimeError:
        TaskIdentity.task_id = 1
        TaskIdentity.run_id = run_id
        TaskIdentity.node_id = SUPERLINK_NODE_ID


class LocalGrid(Grid):
    """`n_clients` nodes with seeded random node ids; node i holds partition i."""

    def __init__(self, client_fn: ClientFn, n_clients: int, *, seed: int = 0) -> None:
        ensure_task_identity()
        rng = np.random.default_rng(seed)
        ids: list[int] = []
        while len(ids) < n_clients:  # random 62-bit ids like Flower's; a collision just redraws
            node = int(rng.integers(2, 1 << 62))
            if node not in ids:
                ids.append(node)
        self.partition_of = {node: pid for pid, node in enumerate(ids)}
        self.node_of = {pid: node for node, pid in self.partition_of.items()}
        self._client_fn = client_fn
        self._run = Run.create_empty(TaskIdentity.run_id)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> Iterable[Message]:
        messages = list(messages)
        self.push_messages(messages)
        replies = []
        for msg in messages:
            pid = self.partition_of[msg.metadata.dst_node_id]
            try:
                replies.append(Message(self._client_fn(msg, pid), reply_to=msg))
            except Exception as e:  # noqa: BLE001 - a failing client becomes an error reply
                err = Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=f"{type(e).__name__}: {e}")
                replies.append(Message(err, reply_to=msg))
        return replies

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.partition_of)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            if msg.metadata.dst_node_id not in self.partition_of:
                raise ValueError(f"no node {msg.metadata.dst_node_id} in this LocalGrid")
            msg.metadata.__dict__["_message_id"] = str(uuid4())
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError("LocalGrid answers synchronously: use send_and_receive")


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
