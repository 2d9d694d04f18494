"""FedKSeed clients: bring the model to the round's global version, run ZO steps, reply with pairs.

Who holds what, and why the client always reaches the exact global model w_V:
- the message (pollen.strategies.fedkseed.strategy): a pollen.v1 SeedDownlink taking the accumulator
  from b to V, where b is the version the server last heard this node report (0 if never): the
  per-round log, the entries changed since b, or A_V entirely, whichever is smallest;
- the node, in Flower's ``context.state`` (kept by Flower per node and run, across messages, in
  simulation and in deployment): its accumulator A_s (K float32) and s, bounded however long the run;
- the process: ONE cached model (pollen.strategies.fedkseed.runtime.process_model) and the A it was
  rebuilt from. In simulation a Ray actor serves many nodes one after another; the round's starting
  model is the same global model for all of them, so one copy serves every node.

On a message: (1) the node brings A_s to A_V with the message (state.apply_downlink: float32 adds of
the same deltas the server added, or A_V's values outright, so the bits equal the server's). If it
holds a version older than b (its state was lost) and the message is not dense, it cannot: it trains
nothing and reports version s; the server drops that reply and sends from s next time. (2) The
process model becomes w_V = rebuild(w_0, A_V) (skipped when the cache was rebuilt from the same A).
(3) zo_train with restore=True: local steps from w_V, then w_V is put back bit-exactly.
Every party builds w_V with the same call from the same A_V bits, so every party's w_V is
bit-identical, whichever rounds it skipped and whichever process serves it.
"""

from __future__ import annotations

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict

from pollen.config import PollenConfig
from pollen.data.tokenize import Encoded, batches
from pollen.errors import PayloadError
from pollen.protocol.seeding import batch_seed, torch_seed
from pollen.strategies.fedkseed.runtime import ZOModel, model_loss, process_model, zo_client_data
from pollen.strategies.fedkseed.state import Downlink, apply_downlink
from pollen.strategies.fedkseed.train import ZOResult, zo_train
from pollen.strategies.fedkseed.wire import (
    decode_downlink,
    decode_probabilities,
    encode_downlink,
    encode_pairs,
)

STATE_KEY = "fedkseed"  # context.state record: {"acc": SeedDownlink bytes (dense A_s), "version": s}
REPLY_KEY = "fedkseed"  # reply record: {"pairs": bytes}


def _int(rec: ConfigRecord, key: str) -> int:
    v = rec.get(key)
    if not isinstance(v, int) or v < 0:
        raise PayloadError(f"expected a non-negative int, got {v!r}", client="server", field=key)
    return v


def node_accumulator(context: Context, k: int) -> tuple[np.ndarray | None, int]:
    """The accumulator A_s this node holds and s ((None, 0) for a new node)."""
    rec = context.state.get(STATE_KEY)
    if not isinstance(rec, ConfigRecord) or not isinstance(rec.get("acc"), bytes):
        return None, 0
    held = decode_downlink(rec["acc"], k, client="node state")
    return held.values, held.version


def _store(context: Context, a: np.ndarray, version: int, k: int) -> None:
    context.state[STATE_KEY] = ConfigRecord({
        "acc": encode_downlink(Downlink("dense", 0, version, values=a), k), "version": version})


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
    server_round = _int(conf, "server-round")
    if not isinstance(conf.get("downlink"), bytes):
        raise PayloadError("no 'downlink' bytes in the message", client="server", field="downlink")
    down = decode_downlink(conf["downlink"], fk.k, max_version=cfg.run.rounds)
    held, held_version = node_accumulator(context, fk.k)
    data = zo_client_data(cfg, pid, n_parts)
    metrics = {"num-examples": len(data), "partition-id": pid}
    a = apply_downlink(held if held is not None else np.zeros(fk.k, np.float32), held_version, down)
    if a is None:  # the node lost its state: say where it is, get the changes from there next time
        return RecordDict({REPLY_KEY: ConfigRecord({"pairs": encode_pairs([], fk.k)}),
                           "metrics": MetricRecord({**metrics, "model-version": held_version})})
    _store(context, a, down.version, fk.k)

    zm = process_model(cfg)
    zm.load_accumulator(a, down.version)
    probs = decode_probabilities(conf["probs"], fk.k) if "probs" in conf else None
    res = local_train(zm, data, server_round, pid, probs)
    if res.losses:
        metrics["train_loss"] = float(np.mean(res.losses))
    metrics["skipped"] = res.skipped
    return RecordDict({REPLY_KEY: ConfigRecord({"pairs": encode_pairs(res.pairs, fk.k)}),
                       "metrics": MetricRecord({**metrics, "model-version": down.version})})
