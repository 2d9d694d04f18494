"""The Flower ClientApp: hand each training message to the configured method's trainer."""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from pollen.protocol.records import config_from_context, partition_of
from pollen.strategies import method_for

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    cfg = config_from_context(context)
    pid, n_parts = partition_of(context)
    return Message(content=method_for(cfg).train(msg, context, cfg, pid, n_parts), reply_to=msg)
