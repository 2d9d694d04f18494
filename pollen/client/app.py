"""The Flower ClientApp: dispatch each training message to the method family's trainer."""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from pollen.families import family_of, resolve
from pollen.protocol.records import config_from_context, partition_of

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    cfg = config_from_context(context)
    pid, n_parts = partition_of(context)
    handler = resolve(family_of(cfg).client_train)
    return Message(content=handler(msg, context, cfg, pid, n_parts), reply_to=msg)
