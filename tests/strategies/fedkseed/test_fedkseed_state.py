"""Server state: FedKSeed == FedAvg equivalence, Pro probabilities, catch-up, checkpoints, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from pollen.errors import ConfigError, PayloadError
from pollen.strategies.fedkseed.seeds import apply_seeds
from pollen.strategies.fedkseed.state import (
    SeedAccumulator,
    StaleVersionError,
    advance,
    apply_downlink,
    rebuild,
    reconstruct,
    validate_pairs,
)
from pollen.strategies.fedkseed.train import zo_train

K, LR = 64, 2e-3


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg)


def lm_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss


def _client_batches(cid: int, n: int) -> list[dict]:
    g = torch.Generator().manual_seed(1000 + cid)
    base = torch.arange(12) % (5 + cid)  # a learnable per-client pattern
    return [{"input_ids": (base + torch.randint(0, 2, (1, 12), generator=g)) % 64} for _ in range(n)]


def test_fedkseed_round_equals_weighted_fedavg_of_local_models():
    model = tiny_llama()
    w0 = [p.detach().clone() for p in model.parameters()]
    acc = SeedAccumulator(K, master_seed=42, lr=LR)
    n_samples, locals_, uploads = [3, 5, 9], [], []
    for cid, n in enumerate(n_samples):
        with torch.no_grad():
            for p, w in zip(model.parameters(), w0, strict=True):
                p.copy_(w)
        res = zo_train(model, _client_batches(cid, n), lm_loss, seeds=acc.seeds, steps=15, lr=LR,
                       eps=1e-3, generator_seed=cid)
        locals_.append([p.detach().clone() for p in model.parameters()])
        uploads.append((res.pairs, n))
    acc.aggregate(uploads)
    global_ = reconstruct(w0, acc)
    weights = np.array(n_samples) / sum(n_samples)
    fedavg = [sum(float(w) * loc[i] for w, loc in zip(weights, locals_, strict=True))
              for i in range(len(w0))]
    update = math.sqrt(sum(float(((f - w) ** 2).sum()) for f, w in zip(fedavg, w0, strict=True)))
    err = math.sqrt(sum(float(((f - g) ** 2).sum()) for f, g in zip(fedavg, global_, strict=True)))
    equal = [sum(loc[i] for loc in locals_) / 3 for i in range(len(w0))]
    wrong = math.sqrt(sum(float(((f - e) ** 2).sum()) for f, e in zip(fedavg, equal, strict=True)))
    print(f"update={update:.3e} err={err:.3e} unweighted={wrong:.3e}")
    assert update > 0.1  # the round moved the model a lot ...
    assert err <= 1e-5 * update  # ... and FedKSeed's model is FedAvg's to float rounding
    assert wrong > 100 * err  # unweighted averaging would be caught
    # Incremental replay from the logged round delta gives the same model.
    replay = [w.clone() for w in w0]
    advance(replay, acc.deltas_since(0), acc.seeds, acc.lr)
    assert max((a - b).abs().max().item() for a, b in zip(replay, global_, strict=True)) < 1e-6


def _random_round(rng: np.random.Generator, clients: int = 3) -> list[tuple[list, int]]:
    out = []
    for _ in range(clients):
        idx = rng.integers(0, K, size=20)
        out.append((list(zip(idx.tolist(), rng.normal(size=20).tolist(), strict=True)),
                    int(rng.integers(1, 50))))
    return out


def test_pro_probabilities():
    acc = SeedAccumulator(K, 1, LR, pro=True)
    assert np.allclose(acc.probabilities(), 1 / K)  # empty history: uniform
    acc.aggregate([([(3, 5.0), (3, -5.0), (7, 1e6), (9, 0.1)], 4)])
    p = acc.probabilities()
    assert math.isclose(p.sum(), 1.0, rel_tol=1e-12) and p.max() / p.min() <= math.e + 1e-9
    assert p.argmax() == 7  # |1e6| clipped to 1000 still dominates
    # seed 3: history [0, 5, -5] -> mean |g| = 10/3; seed 9: [0, 0.1] -> 0.05
    psi = np.zeros(K)
    psi[[3, 7, 9]] = [10 / 3, 1000 / 2, 0.05]
    scaled = (psi - psi.min()) / (psi.max() - psi.min() + 1e-10)
    assert np.allclose(p, np.exp(scaled) / np.exp(scaled).sum())
    assert np.allclose(SeedAccumulator(K, 1, LR).probabilities(), 1 / K)  # plain FedKSeed


def test_skipped_rounds_catch_up_exactly():
    rng = np.random.default_rng(0)
    acc = SeedAccumulator(K, 5, LR)
    w0 = [torch.randn(40, 30, generator=torch.Generator().manual_seed(1)), torch.randn(30)]
    every, every_v = [w.clone() for w in w0], 0
    for _ in range(4):
        acc.aggregate(_random_round(rng))
        advance(every, acc.deltas_since(every_v), acc.seeds, acc.lr)
        every_v = acc.version
    late = [w.clone() for w in w0]
    advance(late, acc.deltas_since(0), acc.seeds, acc.lr)  # slept through all four rounds
    assert all(torch.equal(a, b) for a, b in zip(every, late, strict=True))
    mid = [w.clone() for w in w0]
    advance(mid, acc.deltas_since(0)[:2], acc.seeds, acc.lr)
    advance(mid, acc.deltas_since(2), acc.seeds, acc.lr)
    assert all(torch.equal(a, b) for a, b in zip(every, mid, strict=True))
    # The merged delta and the from-scratch rebuild agree with the replay to float rounding.
    idx, val = acc.delta_since(2)
    merged = [w.clone() for w in w0]
    advance(merged, acc.deltas_since(0)[:2], acc.seeds, acc.lr)
    apply_seeds(merged, acc.seeds[idx], -acc.lr * val)
    scratch = reconstruct(w0, acc)
    for other in (merged, scratch):
        assert max((a - b).abs().max().item() for a, b in zip(other, every, strict=True)) < 1e-6
    moved = max((a - b).abs().max().item() for a, b in zip(every, w0, strict=True))
    assert moved > 1e-3
    dense = np.zeros(K)
    for d in acc.deltas_since(2):
        dense[d.indices] += d.values
    assert np.allclose(dense[idx], val) and np.count_nonzero(dense) == idx.size
    assert np.array_equal(acc.delta_since(0)[1], acc.A[acc.delta_since(0)[0]])


def test_state_dict_round_trip_and_log_pruning():
    rng = np.random.default_rng(1)
    acc = SeedAccumulator(K, 5, LR, pro=True, keep_rounds=2)
    for _ in range(3):
        acc.aggregate(_random_round(rng))
    state = acc.state_dict()
    fresh = SeedAccumulator(K, 5, LR, pro=True, keep_rounds=2)
    fresh.load_state_dict(state)
    assert fresh.version == 3 and np.array_equal(fresh.A, acc.A)
    assert np.array_equal(fresh.probabilities(), acc.probabilities())
    for a, b in zip(fresh.deltas_since(1), acc.deltas_since(1), strict=True):
        assert (a.version, a.base_version) == (b.version, b.base_version)
        assert np.array_equal(a.indices, b.indices) and np.array_equal(a.values, b.values)
    with pytest.raises(StaleVersionError):
        acc.deltas_since(0)  # pruned; the merged A is still available
    assert acc.delta_since(0)[0].size > 0
    with pytest.raises(ConfigError):
        SeedAccumulator(K + 1, 5, LR, pro=True).load_state_dict(state)


def test_bad_pairs_and_versions_rejected():
    with pytest.raises(PayloadError, match="client 3.*seed_index"):
        validate_pairs([(K, 1.0)], K, 10, client=3)
    with pytest.raises(PayloadError, match="seed_index"):
        validate_pairs([(-1, 1.0)], K, 10)
    with pytest.raises(PayloadError, match="value"):
        validate_pairs([(1, float("nan"))], K, 10)
    with pytest.raises(PayloadError, match="value"):
        validate_pairs([(1, float("inf"))], K, 10)
    with pytest.raises(PayloadError, match="3 pairs for at most 2"):
        validate_pairs([(1, 1.0)] * 3, K, 2)
    idx, val = validate_pairs([(1, 0.5), (1, 2.0)], K, 2)
    assert idx.tolist() == [1, 1] and val.tolist() == [0.5, 2.0]
    acc = SeedAccumulator(K, 5, LR)
    with pytest.raises(PayloadError, match="client 1.*n_samples"):
        acc.aggregate([([(1, 1.0)], 3), ([(2, 1.0)], 0)])
    with pytest.raises(PayloadError, match="client 0"):
        acc.aggregate([([(K + 5, 1.0)], 3)])
    assert acc.version == 0 and not acc.A.any()  # nothing half-applied
    with pytest.raises(PayloadError, match="version"):
        acc.deltas_since(1)


def test_weighting_and_duplicates():
    acc = SeedAccumulator(K, 5, LR)
    d = acc.aggregate([([(1, 1.0), (1, 2.0)], 1), ([(2, 4.0)], 3)])
    assert d.indices.tolist() == [1, 2] and np.allclose(d.values, [0.75, 3.0])
    eq = SeedAccumulator(K, 5, LR, equal_weight=True)
    eq.aggregate([([(1, 1.0), (1, 2.0)], 1), ([(2, 4.0)], 3)])
    assert np.allclose(eq.A[[1, 2]], [1.5, 2.0])


def test_every_route_to_a_version_gives_the_same_model_bits():
    """The global model is rebuild(w_0, A_v). A client reaches A_v by the per-round log, by the
    changed entries (`set`) or by the dense vector, from whatever version it held: the A bits, hence
    the model bits, are the server's in every case. Incremental replay (not served to anyone) is
    equal only up to float rounding; the bound is checked, and it does not feed back into A."""
    rng = np.random.default_rng(3)
    acc = SeedAccumulator(K, 5, LR, keep_rounds=3)
    w0 = [torch.randn(40, 30, generator=torch.Generator().manual_seed(1)), torch.randn(30)]
    held = {0: np.zeros(K, np.float32)}
    for _ in range(6):
        acc.aggregate(_random_round(rng))
        held[acc.version] = acc.A.copy()
    server = reconstruct(w0, acc)
    for base in range(acc.version + 1):
        for down in acc.downlinks(base):
            a = apply_downlink(held[base], base, down)
            assert a is not None and np.array_equal(a, acc.A), (base, down.kind)
            client = [w.clone() for w in w0]
            rebuild(client, w0, a, acc.seeds, acc.lr)
            assert all(torch.equal(x, y) for x, y in zip(client, server, strict=True)), (base, down.kind)
    assert [d.kind for d in acc.downlinks(1)] == ["dense"]  # log pruned: dense only, still exact
    # Incremental replay of the per-round deltas, from a client that kept every round's model.
    replay = [w.clone() for w in w0]
    full = SeedAccumulator(K, 5, LR)
    rng = np.random.default_rng(3)
    for _ in range(6):
        d = full.aggregate(_random_round(rng))
        advance(replay, [d], full.seeds, full.lr)
    assert np.array_equal(full.A, acc.A)
    diff = max((a - b).abs().max().item() for a, b in zip(replay, server, strict=True))
    moved = max((a - b).abs().max().item() for a, b in zip(server, w0, strict=True))
    # |w| <= ~4 here (float32 ulp 4.8e-7): a few ulps per replayed round, never a whole step.
    assert diff < 1e-5 and moved > 1e-3
