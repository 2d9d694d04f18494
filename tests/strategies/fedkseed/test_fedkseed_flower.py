"""FedKSeed through the Flower strategy AND the client handler, on a tiny full model + chatterbot."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict

from pollen.config import PollenConfig
from pollen.protocol.records import payload_bytes
from pollen.strategies import StrategyContext, build_strategy
from pollen.strategies.fedkseed import client as zo_client
from pollen.strategies.fedkseed.runtime import (
    _process_model,
    load_zo_model,
    process_model,
    zo_client_data,
)
from pollen.strategies.fedkseed.server import save_final
from pollen.strategies.fedkseed.state import SeedAccumulator
from pollen.strategies.fedkseed.strategy import FedKSeed
from pollen.strategies.fedkseed.wire import decode_downlink, decode_pairs

RUN_ID, NODES = 7, [101, 102, 103]


@pytest.fixture(autouse=True)
def _one_thread_fresh_process():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    _process_model.cache_clear()
    yield
    _process_model.cache_clear()
    torch.set_num_threads(old)


class FakeGrid:
    def __init__(self, nodes: list[int]) -> None:
        self.nodes = nodes

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)


def tiny_cfg(model_dir, data, **over) -> PollenConfig:
    keys = {"model.name": str(model_dir), "model.max_length": 24, "data.name": str(data),
            "data.eval_size": 4, "data.partition": "natural",
            "federation.clients": 3, "strategy.name": "fedkseed", "fedkseed.k": 64, "fedkseed.local_steps": 6,
            "fedkseed.lr": 2e-3, "fedkseed.eps": 1e-3, "fedkseed.params": ""}
    keys.update(over)
    return PollenConfig.load(None, keys)


def contexts() -> dict[int, Context]:
    return {n: Context(run_id=RUN_ID, node_id=n, node_config={"partition-id": i, "num-partitions": 3},
                       state=RecordDict(), run_config={}) for i, n in enumerate(NODES)}


def run_round(strategy: FedKSeed, r: int, nodes: list[int], ctxs: dict[int, Context],
              cfg: PollenConfig) -> tuple[list[Message], list[Message]]:
    """configure_train -> the real client handler per node -> replies (not yet aggregated)."""
    msgs = list(strategy.configure_train(r, strategy.initial_arrays(), ConfigRecord(), FakeGrid(nodes)))
    replies = []
    for m in msgs:
        ctx = ctxs[m.metadata.dst_node_id]
        content = zo_client.train(m, ctx, cfg, int(ctx.node_config["partition-id"]), 3)
        replies.append(Message(content=content, reply_to=m))
    return msgs, replies


def flat(params) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params])


def test_round_equals_weighted_fedavg_of_clients_local_models(tiny_model_dir, tiny_data):
    cfg = tiny_cfg(tiny_model_dir, tiny_data)
    strategy = build_strategy(StrategyContext(cfg=cfg, tensor_names=[]))
    msgs, replies = run_round(strategy, 1, NODES, contexts(), cfg)
    # Each client's local model, trained independently from w_0 with the same seeds, kept (no restore).
    local = copy.deepcopy(process_model(cfg))  # still w_0: the handler restores after training
    w0 = [p.detach().clone() for p in local.params]
    locals_, sizes = [], []
    for m, rep in zip(msgs, replies, strict=True):
        pid = NODES.index(m.metadata.dst_node_id)
        with torch.no_grad():
            for p, w in zip(local.params, w0, strict=True):
                p.copy_(w)
        data = zo_client_data(cfg, pid, 3)
        res = zo_client.local_train(local, data, 1, pid, None, restore=False)
        sent = decode_pairs(rep.content["fedkseed"]["pairs"], cfg.fedkseed.k, cfg.fedkseed.local_steps)
        assert sent == [(j, float(np.float32(g))) for j, g in res.pairs] and len(sent) == 6
        assert rep.content["metrics"]["num-examples"] == len(data)
        locals_.append(flat(local.params))
        sizes.append(len(data))
    assert len(set(sizes)) == 3  # unequal clients, so the weighting matters
    _, metrics = strategy.aggregate_train(1, replies)
    assert metrics["clients"] == 3 and strategy.acc.version == 1
    server = local
    with torch.no_grad():
        for p, w in zip(server.params, w0, strict=True):
            p.copy_(w)
    server.load_accumulator(strategy.acc.A, strategy.acc.version)
    w = np.array(sizes) / sum(sizes)
    fedavg = sum(float(wi) * loc for wi, loc in zip(w, locals_, strict=True))
    base = flat(w0)
    update = float((fedavg - base).norm())
    err = float((fedavg - flat(server.params)).norm())
    unweighted = float((fedavg - sum(locals_) / 3).norm())
    assert update > 1e-3 and err <= 1e-5 * update and unweighted > 100 * err
    # The handler left this process's cached model at the global w_0 (restore), version 0.
    assert torch.equal(flat(process_model(cfg).params), base)


def test_skipped_rounds_fresh_process_and_lost_state_catch_up_exactly(tiny_model_dir, tiny_data):
    cfg = tiny_cfg(tiny_model_dir, tiny_data,  # 5 rounds: clients refuse versions beyond run.rounds
                   **{"fedkseed.params": r"layers\.1\.|norm", "fedkseed.local_steps": 4, "run.rounds": 5})
    acc = SeedAccumulator(cfg.fedkseed.k, master_seed=cfg.run.seed, lr=cfg.fedkseed.lr)
    strategy = FedKSeed(acc, local_steps=4, min_available_nodes=1)
    ctxs = contexts()
    server = copy.deepcopy(process_model(cfg))  # w_0, moved along the server's log below
    w0 = flat(server.params)
    a, b, c = NODES
    for r, nodes in ((1, [a, b]), (2, [a, c])):
        _, replies = run_round(strategy, r, nodes, ctxs, cfg)
        strategy.aggregate_train(r, replies)
        assert not strategy.dropped
    old_process = process_model(cfg)  # served a, b, c; at version 1 (the start of round 2)
    assert old_process.version == 1
    _process_model.cache_clear()  # node b's next message lands in a fresh process (c = 0)
    msgs, replies = run_round(strategy, 3, [b], ctxs, cfg)
    down = decode_downlink(msgs[0].content["config"]["downlink"], cfg.fedkseed.k)
    assert down.version == 2 and down.base_version == 0  # b last trained from version 0
    fresh = process_model(cfg)
    assert fresh is not old_process and fresh.version == 2
    server.load_accumulator(acc.A, acc.version)
    old_process.load_accumulator(acc.A, acc.version)
    assert server.version == old_process.version == 2
    assert torch.equal(flat(fresh.params), flat(server.params))  # bit-identical catch-up
    assert torch.equal(flat(old_process.params), flat(server.params))
    assert not torch.equal(flat(server.params), w0)  # it did move
    strategy.aggregate_train(3, replies)
    assert not strategy.dropped and acc.version == 3
    # Node c loses its stored log while its message starts at version 1: it reports version 0,
    # its reply is dropped, and its next message brings the whole history.
    ctxs[c].state = RecordDict()
    _process_model.cache_clear()
    _, replies = run_round(strategy, 4, [a, c], ctxs, cfg)
    strategy.aggregate_train(4, replies)
    assert set(strategy.dropped) == {c} and "version 0" in strategy.dropped[c]
    assert strategy.synced[c] == 0 and acc.version == 4
    msgs, replies = run_round(strategy, 5, [c], ctxs, cfg)
    assert decode_downlink(msgs[0].content["config"]["downlink"], cfg.fedkseed.k).base_version == 0
    strategy.aggregate_train(5, replies)
    assert not strategy.dropped and acc.version == 5
    server.load_accumulator(acc.A, acc.version)
    p = process_model(cfg)
    p.load_accumulator(acc.A, acc.version)
    assert torch.equal(flat(p.params), flat(server.params))
    # Every node's stored accumulator is the server's, bit for bit, at the version it last trained.
    for n in NODES:
        held, v = zo_client.node_accumulator(ctxs[n], cfg.fedkseed.k)
        assert v == strategy.synced[n] and held is not None
        if v == acc.version:
            assert np.array_equal(held, acc.A)


def test_uplink_at_200_steps_and_pro_downlink(tiny_model_dir, tiny_data, tmp_path):
    cfg = tiny_cfg(tiny_model_dir, tiny_data, **{"strategy.name": "fedkseed-pro", "fedkseed.k": 1024,
                                      "fedkseed.local_steps": 200, "fedkseed.params": "norm",
                                      "model.max_length": 16})
    strategy = build_strategy(StrategyContext(cfg=cfg, tensor_names=[]))
    strategy.min_available_nodes = strategy.min_train_nodes = 1  # one node is enough here
    msgs, replies = run_round(strategy, 1, NODES[:1], contexts(), cfg)
    up = payload_bytes(replies[0].content)
    pairs = decode_pairs(replies[0].content["fedkseed"]["pairs"], 1024, 200)
    assert len(pairs) == 200 and up <= 2048, up
    assert 4096 < payload_bytes(msgs[0].content) < 4096 + 200  # Pro: K float32 probabilities
    strategy.aggregate_train(1, replies)
    assert not strategy.dropped and math.isfinite(replies[0].content["metrics"]["train_loss"])
    # The final save: full model (HF-loadable) + accumulator + manifest.
    server = process_model(cfg)
    server.load_accumulator(strategy.acc.A, strategy.acc.version)
    target = save_final(server, strategy.acc, tmp_path)
    names = {p.name for p in target.iterdir()}
    assert {"model.safetensors", "config.json", "fedkseed_state.safetensors",
            "pollen_fedkseed.json"} <= names
    again = load_zo_model(tiny_cfg(target, tiny_data, **{"fedkseed.params": "norm"}))
    assert torch.equal(flat(again.params), flat(server.params))
    assert save_final(server, strategy.acc, tmp_path) == target  # replaces atomically
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_rebuild_on_several_threads_equals_one_thread(tiny_model_dir, tiny_data):
    """The server and clients rebuild with torch's thread count (a thread pool over seed groups):
    same bits as one thread, and no inference-mode tensor crosses threads."""
    cfg = tiny_cfg(tiny_model_dir, tiny_data)
    acc = SeedAccumulator(cfg.fedkseed.k, master_seed=cfg.run.seed, lr=cfg.fedkseed.lr)
    rng = np.random.default_rng(0)
    acc.aggregate([(list(zip(rng.integers(0, 64, 40).tolist(), rng.normal(size=40).tolist(),
                             strict=True)), 5)])
    one = load_zo_model(cfg)
    one.load_accumulator(acc.A, acc.version)
    torch.set_num_threads(4)  # the fixture puts 1 back
    many = load_zo_model(cfg)
    many.load_accumulator(acc.A, acc.version)
    assert torch.equal(flat(one.params), flat(many.params))
    assert not torch.equal(flat(many.params), flat(many.w0))
