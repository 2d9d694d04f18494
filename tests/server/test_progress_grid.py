"""Per-client progress within a round: progress.json tells how many answered, failed, and the deadline."""

from __future__ import annotations

import json
import time

from flwr.app import ConfigRecord, Message, RecordDict

from pollen.deploy.progress import clients_progress
from pollen.protocol.grid import ensure_task_identity
from pollen.server.ledger import Ledger
from pollen.server.progress_grid import ProgressGrid


class FlowerLikeGrid:
    """push/pull like Flower's grids: replies become available one per pull; one node fails."""

    __module__ = "flwr.test_double"  # ProgressGrid polls only Flower's own grids

    def __init__(self, n: int, snapshots: list[dict], out) -> None:
        self.n, self.snapshots, self.out = n, snapshots, out
        self.pushed: list[Message] = []

    def push_messages(self, messages):
        self.pushed = list(messages)
        return [str(i) for i in range(len(self.pushed))]

    def pull_messages(self, ids):
        self.snapshots.append(json.loads((self.out / "progress.json").read_text()))
        ids = sorted(ids)
        if not ids:
            return []
        i = int(ids[0])
        msg = self.pushed[i]
        msg.metadata.__dict__["_message_id"] = str(i)
        if i == 1:
            reply = Message(_error(), reply_to=msg)
        else:
            reply = Message(RecordDict({"c": ConfigRecord({"ok": 1})}), reply_to=msg)
        return [reply]


def _error():
    from flwr.app import Error

    return Error(code=1, reason="client crashed")


def test_progress_counts_clients_as_they_answer(tmp_path):
    ensure_task_identity()
    snapshots: list[dict] = []
    ledger = Ledger(tmp_path, 2)
    ledger.phase(1, "train")
    inner = FlowerLikeGrid(3, snapshots, tmp_path)
    grid = ProgressGrid(inner, ledger, poll=0.0)
    msgs = [Message(RecordDict(), dst_node_id=i + 1, message_type="train") for i in range(3)]
    t0 = time.time()
    replies = list(grid.send_and_receive(msgs, timeout=60))
    assert len(replies) == 3 and sum(r.has_error() for r in replies) == 1
    live = [s["clients"] for s in snapshots]
    assert [(c["done"], c["failed"]) for c in live] == [(0, 0), (1, 0), (1, 1)]
    assert all(c["sent"] == 3 and c["kind"] == "train" for c in live)
    assert t0 + 59 <= live[0]["deadline"] <= time.time() + 60
    final = json.loads((tmp_path / "progress.json").read_text())
    assert final["round"] == 1 and final["phase"] == "train" and final["clients"]["done"] == 2
    line = clients_progress({"clients": {**live[1], "deadline": 1000.0}}, now=1000.0 - 572)
    assert line == " · 1/3 clients done · 9:32 to round timeout"
    assert clients_progress(final) == " · 2/3 clients done · 1 failed"  # all in: no countdown


def test_a_timeout_returns_what_arrived(tmp_path):
    ensure_task_identity()
    class Silent(FlowerLikeGrid):
        __module__ = "flwr.test_double"

        def pull_messages(self, ids):
            return []

    ledger = Ledger(tmp_path, 1)
    grid = ProgressGrid(Silent(2, [], tmp_path), ledger, poll=0.01)
    msgs = [Message(RecordDict(), dst_node_id=i + 1, message_type="train") for i in range(2)]
    assert list(grid.send_and_receive(msgs, timeout=0.05)) == []
    assert json.loads((tmp_path / "progress.json").read_text())["clients"]["done"] == 0


def test_other_grids_are_asked_as_a_whole(tmp_path):
    class Transport:  # e.g. a test transport or a wrapper with behaviour of its own
        def send_and_receive(self, messages, *, timeout=None):
            return ["whole"]

    assert list(ProgressGrid(Transport(), Ledger(tmp_path, 1)).send_and_receive([], timeout=1)) == ["whole"]
