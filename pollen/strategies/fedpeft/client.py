"""First-order PEFT clients: load the global adapter, train locally, reply with the adapter."""

from __future__ import annotations

import torch
from flwr.app import Context, Message, MetricRecord, RecordDict

from pollen.compression.update import compress_update, uses_codec
from pollen.config import PollenConfig
from pollen.data.tokenize import batches
from pollen.models.peft_methods import load_trainable_state, trainable_state
from pollen.models.train import train_steps
from pollen.protocol.identity import IDENTITY_KEY, identity_record
from pollen.protocol.records import UPDATE_KEY, from_arrays, to_arrays
from pollen.protocol.seeding import batch_seed, torch_seed
from pollen.strategies.fedpeft import downlink
from pollen.strategies.fedpeft.lora_exact import apply_residual, received_residual
from pollen.strategies.fedpeft.runtime import client_data, runtime


def train(msg: Message, context: Context, cfg: PollenConfig, pid: int, n_parts: int) -> RecordDict:
    server_round = int(msg.content["config"]["server-round"])
    torch.manual_seed(torch_seed(cfg.run.seed, server_round, pid))
    rt = runtime(cfg)
    data = client_data(cfg, pid, n_parts)
    report = None
    if downlink.DOWNLINK_KEY in msg.content:  # compressed down-link: this node keeps the state
        global_state, report = downlink.receive(
            msg.content, context, rt.initial_state, codec_down=cfg.compression.codec_down,
            max_bytes=cfg.compression.max_payload_bytes, history=cfg.compression.down_history)
    else:
        global_state = from_arrays(msg.content["arrays"])
    load_trainable_state(rt.model, global_state)
    # lora_aggregation = "exact": the residual since round 0 goes into the frozen weights ({}: none).
    apply_residual(rt.model, received_residual(msg.content))
    stream = batches(data, cfg.train.batch_size, rt.pad_id, steps=cfg.train.local_steps,
                     seed=batch_seed(cfg.run.seed, server_round, pid))
    loss, seen = train_steps(rt.model, stream, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    # Weight by the client's data size (FedAvg's n_i), not by the examples of this round.
    metrics = MetricRecord({"num-examples": len(data), "train_loss": loss, "seen": seen})
    local = trainable_state(rt.model)
    # The identity record lets simulation tooling (AttackGrid) map node id -> partition.
    if uses_codec(cfg):
        reply = RecordDict({UPDATE_KEY: compress_update(cfg, context, global_state, local),
                            "metrics": metrics, IDENTITY_KEY: identity_record(pid)})
    else:
        reply = RecordDict({"arrays": to_arrays(local), "metrics": metrics,
                            IDENTITY_KEY: identity_record(pid)})
    if report is not None:  # which version this update starts from (the server checks it)
        reply[downlink.DOWNLINK_KEY] = report
    return reply
