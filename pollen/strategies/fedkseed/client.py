"""FedKSeed clients: bring the model to the round's global version, run ZO steps, reply with pairs.

Who holds what, and why the client always reaches the exact global model w_V:
- the message (pollen.strategies.fedkseed.strategy): per-round deltas b -> V, where b is the version the
  server last heard this node report (0 for a node never heard from);
- the node, in Flower's ``context.state`` (kept by Flower per node and run, across messages, in
  simulation and in deployment): its log of every per-round delta 0 -> s it has received;
- the process: ONE cached model at some version c (pollen.strategies.fedkseed.runtime.process_model). In simulation a
  Ray actor serves many nodes one after another; the round's starting model is the same global
  model for all of them, so one copy at the newest version serves every node.

On a message: (1) if the node's log stops before b (s < b: its state was lost), it cannot rebuild
w_V: it trains nothing and reports version s; the server drops that reply and sends the deltas from
s next time. Otherwise it appends the message's deltas it lacks, so its log is 0 -> V. (2) The
process model jumps from c to V by replaying the log's sections c -> V; a model from another run or
ahead of V (impossible within a run) is reset to w_0 first. A fresh process (c = 0; in deployment
every message is a fresh process) therefore replays the whole log: that is FedKSeed's known cost of
pulling the model (up to K regenerations per round of history). (3) zo_train with restore=True:
local steps from w_V, then w_V is put back bit-exactly, so the cache stays a global model.
Per-round deltas are float32 and replayed in the same order everywhere, so every party's w_V is
bit-identical, whichever rounds it skipped.
"""

from __future__ import annotations

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict

from pollen.config import PollenConfig
from pollen.data.tokenize import Encoded, batches
from pollen.errors import PayloadError
from pollen.protocol.seeding import batch_seed, torch_seed
from pollen.strategies.fedkseed.runtime import ZOModel, model_loss, process_model, zo_client_data
from pollen.strategies.fedkseed.state import SeedDelta
from pollen.strategies.fedkseed.train import ZOResult, zo_train
from pollen.strategies.fedkseed.wire import (
    decode_deltas,
    decode_probabilities,
    encode_deltas,
    encode_pairs,
)

STATE_KEY = "fedkseed"  # context.state record: {"log": bytes, "version": int}
REPLY_KEY = "fedkseed"  # reply record: {"pairs": bytes}


def _int(rec: ConfigRecord, key: str) -> int:
    v = rec.get(key)
    if not isinstance(v, int) or v < 0:
        raise PayloadError(f"expected a non-negative int, got {v!r}", client="server", field=key)
    return v


def node_log(context: Context, k: int) -> list[SeedDelta]:
    """The per-round deltas 0 -> s this node has received (empty for a new node)."""
    rec = context.state.get(STATE_KEY)
    if not isinstance(rec, ConfigRecord) or not isinstance(rec.get("log"), bytes):
        return []
    log = decode_deltas(rec["log"], k, client="node state")
    if log and log[0].base_version != 0:
        return []
    return log


def _store_log(context: Context, log: list[SeedDelta], k: int) -> None:
    context.state[STATE_KEY] = ConfigRecord({"log": encode_deltas(log, k),
                                             "version": log[-1].version if log else 0})


def sync(zm: ZOModel, log: list[SeedDelta], version: int, run_id: int) -> None:
    """Bring the process model to `version` with the node's full log 0 -> version."""
    if zm.version > version or (zm.run_id not in (None, run_id) and zm.version > 0):
        zm.reset()
    zm.run_id = run_id
    zm.advance([d for d in log if d.version <= version])
    if zm.version != version:
        raise PayloadError(f"could not reach version {version} (model at {zm.version})",
                           client="server", field="deltas")


def local_train(zm: ZOModel, data: Encoded, server_round: int, pid: int, probs: np.ndarray | None,
                *, restore: bool = True) -> ZOResult:
    """This client's ZO steps of one round from zm's current weights (seeded by run, round, client)."""
    cfg, fk = zm.cfg, zm.cfg.fedkseed
    stream = batches(data, fk.batch_size, zm.pad_id, steps=fk.local_steps,
                     seed=batch_seed(cfg.run.seed, server_round, pid))
    return zo_train(zm.model, stream, model_loss, seeds=zm.seeds, steps=fk.local_steps, lr=fk.lr,
                    eps=fk.eps, generator_seed=torch_seed(cfg.run.seed, server_round, pid),
                    params=zm.params, param_names=zm.names, probs=probs, weight_decay=fk.weight_decay,
                    grad_clip=fk.grad_clip, rng=fk.rng, restore=restore)


def train(msg: Message, context: Context, cfg: PollenConfig, pid: int, n_parts: int) -> RecordDict:
    fk = cfg.fedkseed
    conf = msg.content["config"]
    server_round, version, base = (_int(conf, "server-round"), _int(conf, "version"),
                                   _int(conf, "base-version"))
    incoming = decode_deltas(conf["deltas"], fk.k) if isinstance(conf.get("deltas"), bytes) else None
    if incoming is None or (incoming and (incoming[0].base_version != base
                                          or incoming[-1].version != version)) or (
            not incoming and base != version):
        raise PayloadError(f"deltas must lead from base-version {base} to version {version}",
                           client="server", field="deltas")
    log = node_log(context, fk.k)
    held = log[-1].version if log else 0
    data = zo_client_data(cfg, pid, n_parts)
    metrics = {"num-examples": len(data), "partition-id": pid}
    if held < base:  # the node lost its log: say where it is, get the history from there next time
        return RecordDict({REPLY_KEY: ConfigRecord({"pairs": encode_pairs([], fk.k)}),
                           "metrics": MetricRecord({**metrics, "model-version": held})})
    log = [d for d in log if d.version <= version]
    log += [d for d in incoming if d.base_version >= (log[-1].version if log else 0)]
    _store_log(context, log, fk.k)

    zm = process_model(cfg)
    sync(zm, log, version, context.run_id)
    probs = decode_probabilities(conf["probs"], fk.k) if "probs" in conf else None
    res = local_train(zm, data, server_round, pid, probs)
    if res.losses:
        metrics["train_loss"] = float(np.mean(res.losses))
    metrics["skipped"] = res.skipped
    return RecordDict({REPLY_KEY: ConfigRecord({"pairs": encode_pairs(res.pairs, fk.k)}),
                       "metrics": MetricRecord({**metrics, "model-version": version})})
