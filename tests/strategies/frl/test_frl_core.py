"""FRL protocol core: rankings, Borda vote, scores from rankings, rank reversal, server state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pollen.errors import ModelError, PayloadError
from pollen.strategies.frl.core import (
    FRLServerState,
    borda_sums,
    positions,
    rank_reversal,
    rank_scores,
    scores_from_ranking,
    vote,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_rank_scores_orders_by_signed_score() -> None:
    s = torch.tensor([[0.3, -2.0], [1.5, -0.1]])
    # signed ascending: -2.0 (id 1), -0.1 (id 3), 0.3 (id 0), 1.5 (id 2); |S| would put id 1 near the top
    assert rank_scores(s).tolist() == [1, 3, 0, 2]
    assert rank_scores(s).dtype == torch.int64


def test_positions_is_inverse_permutation() -> None:
    r = torch.randperm(1000, generator=_gen(0))
    assert torch.equal(positions(r), torch.argsort(r))
    assert torch.equal(r[positions(r)], torch.arange(1000))


def test_vote_of_identical_rankings_is_that_ranking() -> None:
    r = torch.randperm(5000, generator=_gen(1))
    assert torch.equal(vote([r] * 7), r)
    assert torch.equal(vote([r] * 3, weights=[1.0, 5.0, 0.5]), r)


def test_half_reversed_rankings_tie_everywhere_and_break_by_edge_id() -> None:
    g = _gen(2)
    rankings = []
    for _ in range(4):
        r = torch.randperm(777, generator=g)
        rankings += [r, r.flip(0)]
    sums = borda_sums(rankings)
    assert torch.all(sums == sums[0])
    assert int(sums[0]) == 4 * 776  # each pair contributes p + (n-1-p)
    assert torch.equal(vote(rankings), torch.arange(777))  # stable sort: ties by ascending edge id


def test_vote_is_borda_majority_on_small_example() -> None:
    # edges 0..3; two voters put edge 3 most important, one puts edge 0 most important
    r1, r2, r3 = torch.tensor([0, 1, 2, 3]), torch.tensor([1, 0, 2, 3]), torch.tensor([3, 2, 1, 0])
    assert vote([r1, r2, r3]).tolist() == [1, 0, 2, 3]  # sums: e0=4, e1=3, e2=5, e3=6 → argsort


def test_vote_validates_inputs() -> None:
    with pytest.raises(PayloadError):
        vote([])
    with pytest.raises(PayloadError, match="client 1"):
        vote([torch.arange(5), torch.arange(6)])
    with pytest.raises(PayloadError, match="weights"):
        vote([torch.arange(5)] * 2, weights=[1.0, -1.0])


def test_scores_from_ranking_assigns_sorted_values() -> None:
    s0 = torch.randn(300, generator=_gen(3))
    s_sorted = torch.sort(s0).values
    assert torch.equal(scores_from_ranking(rank_scores(s0), s_sorted), s0)
    r = torch.randperm(300, generator=_gen(4))
    s = scores_from_ranking(r, s_sorted)
    assert torch.equal(s[r], s_sorted) and torch.equal(rank_scores(s), r)


def _honest_scores(z: torch.Tensor, clients: int, noise: float, seed: int) -> list[dict[str, torch.Tensor]]:
    g = _gen(seed)
    return [{"fc": z + noise * torch.randn(z.shape, generator=g)} for _ in range(clients)]


def _kept_set(ranking: torch.Tensor, s_sorted: torch.Tensor, k: float = 0.5) -> set[int]:
    """Edges the |S| mask keeps after loading the voted scores (what actually reaches the model)."""
    s = scores_from_ranking(ranking, s_sorted).abs()
    return set(torch.topk(s, int(k * s.numel())).indices.tolist())


@pytest.mark.parametrize("n_attackers,expect_robust", [(2, True), (8, False)])
def test_rank_reversal_minority_does_not_flip_the_vote(n_attackers: int, expect_robust: bool) -> None:
    n, total = 4000, 10
    z = torch.randn(n, generator=_gen(5)) * 2.0  # latent "true" importance shared by all clients
    s_sorted = torch.sort(torch.empty(n).uniform_(-1, 1, generator=_gen(6))).values
    honest = _honest_scores(z, total - n_attackers, noise=1.0, seed=7)
    attackers_own = _honest_scores(z, n_attackers, noise=1.0, seed=8)  # attackers train honestly first
    r_mal = rank_reversal(attackers_own)["fc"]
    honest_r = [rank_scores(s["fc"]) for s in honest]
    consensus = vote(honest_r)
    attacked = vote(honest_r + [r_mal] * n_attackers)

    def top(r: torch.Tensor) -> set[int]:  # upper half of the ranking
        return set(r[n // 2:].tolist())

    overlap_rank = len(top(attacked) & top(consensus)) / (n // 2)
    overlap_mask = len(_kept_set(attacked, s_sorted) & _kept_set(consensus, s_sorted)) / (n // 2)
    if expect_robust:
        assert overlap_rank > 0.9 and overlap_mask > 0.9
    else:  # an attacker majority does reverse it: the test can tell the difference
        assert overlap_rank < 0.3


def test_rank_reversal_reverses_the_attackers_consensus() -> None:
    s = {"a": torch.randn(50, generator=_gen(9)), "b": torch.randn(3, 4, generator=_gen(10))}
    mal = rank_reversal([s, s])
    assert torch.equal(mal["a"], rank_scores(s["a"]).flip(0))
    assert torch.equal(mal["b"], rank_scores(s["b"]).flip(0))


def test_server_state_round_trip_and_update() -> None:
    s0 = {"conv": torch.randn(4, 3, 3, 3, generator=_gen(11)), "fc": torch.randn(10, 7, generator=_gen(12))}
    st = FRLServerState.from_scores(s0)
    assert st.layer_sizes() == {"conv": 108, "fc": 70}
    assert all(torch.equal(st.global_scores()[k], s0[k]) for k in s0)

    g = _gen(13)
    clients = [{k: torch.randperm(v.numel(), generator=g) for k, v in s0.items()} for _ in range(3)]
    st.update(clients)
    gs = st.global_scores()
    for k, v in s0.items():
        assert gs[k].shape == v.shape
        assert torch.equal(torch.sort(gs[k].flatten()).values, torch.sort(v.flatten()).values)
        assert torch.equal(rank_scores(gs[k]), vote([c[k] for c in clients]))

    sd = st.state_dict()
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    fresh = FRLServerState.from_scores(s0)
    fresh.load_state_dict(sd)
    assert all(torch.equal(fresh.global_scores()[k], gs[k]) for k in s0)


def test_server_state_rejects_bad_checkpoints_and_votes() -> None:
    s0 = {"fc": torch.randn(6, 5, generator=_gen(14))}
    st = FRLServerState.from_scores(s0)
    sd = st.state_dict()
    with pytest.raises(ModelError, match="keys"):
        st.load_state_dict({k: v for k, v in sd.items() if not k.endswith("ranking")})
    bad = dict(sd, **{"fc.ranking": np.zeros(30, dtype=np.int64)})
    with pytest.raises(ModelError, match="permutation"):
        st.load_state_dict(bad)
    with pytest.raises(ModelError, match="shape"):
        st.load_state_dict(dict(sd, **{"fc.shape": np.array([5, 6])}))
    with pytest.raises(PayloadError, match="client 0"):
        st.update([{"other": torch.arange(30)}])
