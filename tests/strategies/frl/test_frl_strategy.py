"""The FRL Flower strategy over real `flwr.app.Message`s: vote, rank-reversal minority, malformed replies."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict

from pollen.compression._proto.pollen.v1 import frl_pb2 as pb
from pollen.protocol.grid import InProcessGrid, ensure_task_identity
from pollen.strategies.frl.attack import RankReversalGrid, reverse_collective
from pollen.strategies.frl.core import FRLServerState, rank_reversal, rank_scores
from pollen.strategies.frl.strategy import FRLStrategy
from pollen.strategies.frl.wire import RANKING, RECORD, _pack, decode_rankings, encode_rankings
from tests.strategies.helpers import TIMING

SHAPES = {"conv": (6, 2, 3), "fc": (50, 4)}


def _state(seed: int = 0) -> FRLServerState:
    g = torch.Generator().manual_seed(seed)
    return FRLServerState.from_scores({k: torch.randn(*s, generator=g) for k, s in SHAPES.items()})


def _strategy(state: FRLServerState, **kw) -> FRLStrategy:
    return FRLStrategy(state, lr=0.4, lr_decay=0.5, local_epochs=2, seed=3, **kw)


def _reply(to: Message, content: RecordDict) -> Message:
    return Message(content=content, reply_to=to)


def _ranking_reply(to: Message, rankings: dict[str, torch.Tensor] | bytes, pid: int) -> Message:
    blob = rankings if isinstance(rankings, bytes) else encode_rankings(rankings)
    return _reply(to, RecordDict({RECORD: ConfigRecord({RANKING: blob}),
                                  "metrics": MetricRecord({**TIMING, "num-examples": 10, "train_loss": 1.0 + pid,
                                                           "partition-id": pid})}))


def _noisy(truth: dict[str, torch.Tensor], g: torch.Generator, noise: float) -> dict[str, torch.Tensor]:
    """A client's ranking: the true positions plus Gaussian noise, re-ranked."""
    out = {}
    for k, r in truth.items():
        pos = torch.argsort(r).double()
        out[k] = torch.argsort(pos + noise * r.numel() * torch.randn(r.numel(), generator=g, dtype=torch.float64))
    return out


def test_broadcast_and_identical_rankings_give_that_ranking() -> None:
    state = _state()
    initial = {k: v.clone() for k, v in state.rankings.items()}
    g = torch.Generator().manual_seed(1)
    target = {k: torch.randperm(int(np.prod(s)), generator=g) for k, s in SHAPES.items()}
    seen: list[Message] = []

    def handler(msg: Message, ctx: Context) -> Message:
        seen.append(msg)
        return _ranking_reply(msg, target, int(ctx.node_config["partition-id"]))

    strategy = _strategy(state)
    result = strategy.start(grid=InProcessGrid(5, handler), initial_arrays=strategy.initial_arrays(),
                            num_rounds=2, timeout=10)
    assert len(seen) == 10 and {m.metadata.dst_node_id for m in seen} == {1, 2, 3, 4, 5}
    first, second = seen[0].content, seen[5].content
    # round 1 broadcasts the initial ranking, round 2 the vote of round 1; lr = 0.4·0.5^(round-1)
    got1 = decode_rankings(first[RECORD][RANKING], state.layer_sizes(), direction="down")
    got2 = decode_rankings(second[RECORD][RANKING], state.layer_sizes(), direction="down")
    assert all(torch.equal(got1[k], initial[k]) and torch.equal(got2[k], target[k]) for k in SHAPES)
    assert (first["config"]["server-round"], first["config"]["lr"], first["config"]["local-epochs"]) == (1, 0.4, 2)
    assert second["config"]["lr"] == pytest.approx(0.2)
    assert all(torch.equal(strategy.state.rankings[k], target[k]) for k in SHAPES)
    assert np.array_equal(result.arrays["fc"].numpy(), target["fc"].numpy())
    metrics = result.train_metrics_clientapp[2]
    assert metrics["accepted"] == 5 and metrics["rejected"] == 0
    assert metrics["train_loss"] == pytest.approx(3.0)  # mean of 1..5 (equal num-examples)


def test_global_scores_are_rebuilt_exactly_from_the_ranking() -> None:
    state = _state(4)
    g = torch.Generator().manual_seed(5)
    state.update([{k: torch.randperm(int(np.prod(s)), generator=g) for k, s in SHAPES.items()}])
    blob = encode_rankings(state.rankings, "down")
    client_state = _state(4)  # same seed → same score multiset on the client
    client_state.rankings = decode_rankings(blob, client_state.layer_sizes(), client="server",
                                           direction="down")
    server, client = state.global_scores(), client_state.global_scores()
    assert all(torch.equal(server[k], client[k]) for k in SHAPES)


def test_rank_reversal_minority_does_not_flip_the_global_ranking() -> None:
    truth = _state(7).rankings
    g = torch.Generator().manual_seed(8)
    honest = {pid: _noisy(truth, g, 0.05) for pid in range(10)}  # each client: a noisy view of the truth
    attackers = [0, 4]  # 20%

    def handler(msg: Message, ctx: Context) -> Message:
        pid = int(ctx.node_config["partition-id"])
        return _ranking_reply(msg, honest[pid], pid)

    strategy = _strategy(_state(9))
    grid = RankReversalGrid(InProcessGrid(10, handler), attackers, strategy.state.layer_sizes())
    strategy.start(grid=grid, initial_arrays=strategy.initial_arrays(), num_rounds=1, timeout=10)
    assert grid.replaced == 2
    for k, r in truth.items():
        got = torch.argsort(strategy.state.rankings[k]).double()
        corr = np.corrcoef(got.numpy(), torch.argsort(r).double().numpy())[0, 1]
        assert corr > 0.97, (k, corr)
        # the attackers' reversed vote alone would anti-correlate
        mal = torch.argsort(reverse_collective([honest[a] for a in attackers])[k]).double()
        assert np.corrcoef(mal.numpy(), torch.argsort(r).double().numpy())[0, 1] < -0.9


def test_reverse_collective_on_rankings_equals_rank_reversal_on_scores() -> None:
    g = torch.Generator().manual_seed(11)
    scores = [{k: torch.randn(*s, generator=g) for k, s in SHAPES.items()} for _ in range(3)]
    from_scores = rank_reversal(scores)
    from_rankings = reverse_collective([{k: rank_scores(v) for k, v in s.items()} for s in scores])
    assert all(torch.equal(from_scores[k], from_rankings[k]) for k in SHAPES)


def _non_permutation_blob(sizes: dict[str, int]) -> bytes:
    """A well-formed ClientRanking whose first layer repeats an edge id (only the permutation check catches it)."""
    msg = pb.ClientRanking(format_version=pb.FRL_FORMAT_VERSION_1)
    for i, (name, n) in enumerate(sizes.items()):
        ids = np.arange(n, dtype=np.int64)
        if i == 0:
            ids[1] = ids[0]
        bits = (n - 1).bit_length()
        msg.layers.add(name=name, size=n, id_bits=bits, ids=_pack(ids, bits))
    return msg.SerializeToString()


def test_malformed_rankings_are_dropped_and_the_round_completes(caplog: pytest.LogCaptureFixture) -> None:
    ensure_task_identity()
    state = _state(12)
    sizes = state.layer_sizes()
    g = torch.Generator().manual_seed(13)
    good = {k: torch.randperm(n, generator=g) for k, n in sizes.items()}
    wrong_len = {k: torch.randperm(n + 1, generator=g) for k, n in sizes.items()}
    strategy = _strategy(state)
    ins = [Message(content=RecordDict({}), dst_node_id=n, message_type=MessageType.TRAIN) for n in range(1, 8)]
    replies = [
        _ranking_reply(ins[0], good, 0),
        _ranking_reply(ins[1], good, 1),
        _ranking_reply(ins[2], encode_rankings(good)[:-3], 2),  # truncated
        _ranking_reply(ins[3], _non_permutation_blob(sizes), 3),  # repeated edge id
        _ranking_reply(ins[4], wrong_len, 4),  # wrong length
        _reply(ins[5], RecordDict({"metrics": MetricRecord({**TIMING, "num-examples": 3})})),  # no ranking record
        _reply(ins[6], RecordDict({RECORD: ConfigRecord({RANKING: "not bytes"})})),
    ]
    with caplog.at_level(logging.WARNING, logger="pollen.frl"):
        arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None and metrics is not None
    assert (metrics["accepted"], metrics["rejected"]) == (2, 5)
    assert all(np.array_equal(arrays[k].numpy(), good[k].numpy()) for k in sizes)
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 5
    # the log names the node (ids here start at 1), the layer and the defect
    assert any("client 3" in m and "truncated" in m for m in dropped)
    assert any("client 4, field 'conv'" in m and "not a permutation" in m for m in dropped)
    assert any("client 5, field 'conv'" in m and "ranking length" in m for m in dropped)
    assert any("client 6" in m and "no frl.ranking record" in m for m in dropped)
    assert any("client 7" in m and "must be bytes" in m for m in dropped)

    # nothing valid: the round still completes and the global ranking stays
    before = {k: v.clone() for k, v in strategy.state.rankings.items()}
    arrays, metrics = strategy.aggregate_train(2, replies[2:])
    assert arrays is None and metrics is not None and metrics["accepted"] == 0
    assert all(torch.equal(before[k], strategy.state.rankings[k]) for k in sizes)


def test_failed_nodes_are_counted_not_voted() -> None:
    state = _state(14)

    def handler(msg: Message, ctx: Context) -> Message:
        if ctx.node_config["partition-id"] == 1:
            raise RuntimeError("out of memory")
        return _ranking_reply(msg, state.rankings, 0)

    strategy = _strategy(state, fraction_train=1.0)
    result = strategy.start(grid=InProcessGrid(3, handler), initial_arrays=strategy.initial_arrays(),
                            num_rounds=1, timeout=10)
    m = result.train_metrics_clientapp[1]
    assert (m["accepted"], m["failed"]) == (2, 1)


def test_sampling_is_seeded_and_respects_the_fraction() -> None:
    grid = InProcessGrid(20, lambda m, c: m)
    a = _strategy(_state(), fraction_train=0.25)
    b = _strategy(_state(), fraction_train=0.25)
    ids_a = [m.metadata.dst_node_id for m in a.configure_train(3, a.initial_arrays(), ConfigRecord(), grid)]
    ids_b = [m.metadata.dst_node_id for m in b.configure_train(3, b.initial_arrays(), ConfigRecord(), grid)]
    assert ids_a == ids_b and len(ids_a) == 5 and len(set(ids_a)) == 5
