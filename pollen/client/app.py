"""The Flower ClientApp: hand each training message to the configured method's trainer."""

from __future__ import annotations

import time

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from pollen.protocol.contracts import LOAD_SECONDS, TRAIN_SECONDS
from pollen.protocol.records import config_from_context, partition_of
from pollen.registry import build_seconds, trim_heap
from pollen.strategies import method_for

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    t0, built0 = time.perf_counter(), build_seconds()
    cfg = config_from_context(context)
    pid, n_parts = partition_of(context)
    content = method_for(cfg).train(msg, context, cfg, pid, n_parts)
    # What the call cost, split into loading (model, data: first call of a process) and the rest,
    # so the server can say how much of a run's wall time was training (ledger `train_s`, `load_s`).
    load = build_seconds() - built0
    content["metrics"][LOAD_SECONDS] = load
    content["metrics"][TRAIN_SECONDS] = max(0.0, time.perf_counter() - t0 - load)
    trim_heap()  # the activations are freed: give their pages back while this actor waits
    return Message(content=content, reply_to=msg)
