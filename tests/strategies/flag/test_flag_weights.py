"""Flag Aggregator's near-copy weights and clipped sum: copies of one attacker vector count once,
tiny IPM-style vectors no longer cancel the honest direction, and the paper's mode is unchanged."""

from __future__ import annotations

import pytest
import torch

from pollen.errors import ConfigError
from pollen.strategies.flag.core import flag_aggregate
from pollen.strategies.flag.weights import collinear_counts, dedup_weights

PAPER = {"combine": "unit", "dedup_tol": 0.0}


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def _non_iid_honest(seed: int, n: int = 20, d: int = 2000) -> torch.Tensor:
    """Weakly aligned updates like the robustness bench's (pairwise cosine ≈ 0.1, some clients
    negatively aligned with the mean): a small shared direction plus a label-mix of three class
    directions that sum to zero, plus noise."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(3, d, generator=g, dtype=torch.float64) / d**0.5
    classes = a - a.mean(0)
    shared = torch.randn(d, generator=g, dtype=torch.float64) / d**0.5
    w = torch.rand(n, 3, generator=g, dtype=torch.float64) ** 2 * -torch.log(
        torch.rand(n, 3, generator=g, dtype=torch.float64))
    mix = w / w.sum(1, keepdim=True)
    noise = torch.randn(n, d, generator=g, dtype=torch.float64) / d**0.5
    return 0.4 * shared + 2.0 * mix @ classes + 0.15 * noise


def test_copies_of_one_vector_count_as_one_client():
    honest = _non_iid_honest(0)
    bad = -0.1 * honest.mean(0)
    five = torch.cat([honest, bad.repeat(5, 1)])
    one = torch.cat([honest, bad[None]])
    res5, res1 = flag_aggregate(five, m=13), flag_aggregate(one, m=13)
    torch.testing.assert_close(res5.aggregate, res1.aggregate, rtol=1e-6, atol=1e-9)
    assert res5.weights[-5:].sum() == pytest.approx(float(res5.weights[0]), rel=1e-9)
    paper5, paper1 = flag_aggregate(five, m=13, **PAPER), flag_aggregate(one, m=13, **PAPER)
    gap = (paper5.aggregate - paper1.aggregate).norm() / paper1.aggregate.norm()
    assert float(gap) > 0.05  # the paper's rule counts every copy


def test_ipm_copies_no_longer_cancel_the_honest_direction():
    honest = _non_iid_honest(1)
    mu = honest.mean(0)
    attacked = torch.cat([honest, (-0.1 * mu).repeat(5, 1)])
    paper = _cos(flag_aggregate(attacked, m=13, **PAPER).aggregate, mu)
    ours = _cos(flag_aggregate(attacked, m=13).aggregate, mu)
    clean = _cos(flag_aggregate(honest, m=10).aggregate, mu)
    assert paper < clean - 0.05  # the failure this change addresses
    assert ours > clean - 0.01


def test_clipped_sum_resists_decorrelated_tiny_vectors():
    """Noise makes the IPM copies only ~0.5-correlated: the copy count cannot see them, but with
    combine="clipped" a vector 10× shorter than the honest ones weighs 10× less."""
    honest = _non_iid_honest(1)
    mu, d = honest.mean(0), honest.shape[1]
    g = torch.Generator().manual_seed(9)
    noise = torch.randn(5, d, generator=g, dtype=torch.float64) / d**0.5
    attacked = torch.cat([honest, -0.1 * mu + 0.1 * float(mu.norm()) * noise])
    unit = _cos(flag_aggregate(attacked, m=13).aggregate, mu)
    clipped = _cos(flag_aggregate(attacked, m=13, combine="clipped").aggregate, mu)
    clean = _cos(flag_aggregate(honest, m=10, combine="clipped").aggregate, mu)
    assert unit < clean - 0.05
    assert clipped > clean - 0.01


def test_paper_mode_is_the_spec_formula():
    """(1/m)·Y Yᵀ Σ x_i over unit x_i, duplicates counted, whatever the norms."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, 50, generator=g, dtype=torch.float64) * torch.rand(7, 1, generator=g)
    x = torch.cat([x, x[:1].repeat(2, 1) * 3.0])  # a client sent three times (different lengths)
    m = 4
    res = flag_aggregate(x, m=m, scale="reference", **PAPER)
    y = res.subspace(x)
    unit = x / x.norm(dim=1, keepdim=True)
    torch.testing.assert_close(res.aggregate, y @ (y.T @ unit.sum(0)) / m)
    torch.testing.assert_close(res.weights, torch.ones(9, dtype=torch.float64))


def test_clipped_mode_is_its_formula():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(9, 60, generator=g, dtype=torch.float64) * (0.1 + 3 * torch.rand(9, 1, generator=g))
    res = flag_aggregate(x, m=4, scale="reference", combine="clipped", dedup_tol=0.0)
    norms = x.norm(dim=1)
    tau = norms.sort().values[4]  # the (lower) median of 9
    y = res.subspace(x)
    expected = y @ (y.T @ (x / norms[:, None] * norms.clamp(max=tau)[:, None]).sum(0)) / 4
    torch.testing.assert_close(res.aggregate, expected)


def test_collinear_counts_ramp_and_zero_update():
    tol = 0.01
    cosines = torch.tensor([[1.0, 1.0, 1.0 - tol / 2, 0.2, 0.0],
                            [1.0, 1.0, 1.0 - tol / 2, 0.2, 0.0],
                            [1.0 - tol / 2, 1.0 - tol / 2, 1.0, 0.2, 0.0],
                            [0.2, 0.2, 0.2, 1.0, 0.0],
                            [0.0, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)  # last: zero update
    counts = collinear_counts(cosines, tol)
    torch.testing.assert_close(counts, torch.tensor([2.5, 2.5, 2.0, 1.0, 1.0], dtype=torch.float64))
    w = dedup_weights(torch.ones(5, dtype=torch.float64), cosines, tol)
    assert float(w.sum()) == pytest.approx(5.0)
    assert float(w[3]) == pytest.approx(2.5 * float(w[0]))
    torch.testing.assert_close(dedup_weights(torch.ones(5, dtype=torch.float64), cosines, 0.0),
                               torch.ones(5, dtype=torch.float64))


def test_bad_combine_or_dedup_tol_raise_config_errors():
    x = torch.randn(4, 10, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ConfigError, match="combine"):
        flag_aggregate(x, m=2, combine="sum")
    for tol in (-0.1, 1.0):
        with pytest.raises(ConfigError, match="dedup_tol"):
            flag_aggregate(x, m=2, dedup_tol=tol)
