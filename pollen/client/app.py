"""The Flower ClientApp: receive the global trainable state, train locally, send it back."""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from pollen.client.identity import IDENTITY_KEY, identity_record
from pollen.client.trainer import train_steps
from pollen.data.tokenize import batches
from pollen.flower_glue import config_from_context, from_arrays, partition_of, to_arrays
from pollen.models.peft_methods import load_trainable_state, trainable_state
from pollen.runtime import client_data, runtime

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    cfg = config_from_context(context)
    pid, n_parts = partition_of(context)
    server_round = int(msg.content["config"]["server-round"])
    torch.manual_seed(cfg.run.seed * 100_003 + server_round * 1009 + pid)
    rt = runtime(cfg)
    data = client_data(cfg, pid, n_parts)
    load_trainable_state(rt.model, from_arrays(msg.content["arrays"]))
    stream = batches(data, cfg.train.batch_size, rt.pad_id, steps=cfg.train.local_steps,
                     seed=cfg.run.seed * 7919 + server_round * 31 + pid)
    loss, seen = train_steps(rt.model, stream, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    reply = RecordDict({
        "arrays": to_arrays(trainable_state(rt.model)),
        # Weight by the client's data size (FedAvg's n_i), not by the examples of this round.
        "metrics": MetricRecord({"num-examples": len(data), "train_loss": loss, "seen": seen}),
        IDENTITY_KEY: identity_record(pid),  # lets simulation tooling map node id -> partition
    })
    return Message(content=reply, reply_to=msg)


__all__ = ["app", "ArrayRecord"]
