"""Attack catalogue (spec §8): formulas, the NDSS'21 search constraints, and no-NaN edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pollen.attacks import (
    ATTACKS,
    alie_z,
    deviation_vector,
    flip_labels,
    ndss_gamma,
    select_attackers,
)
from pollen.errors import ConfigError, UnknownNameError


def _benign(seed: int = 0, n: int = 12, d: int = 300) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen) + torch.randn(d, generator=gen)


def _rng(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _violation(benign: torch.Tensor, mal: torch.Tensor, objective: str, bound: str = "min") -> float:
    """Constraint value minus bound on materialised vectors (> 0 means violated)."""
    b = benign.double()
    to_mal = ((b - mal) ** 2).sum(1)
    pair = torch.cdist(b, b) ** 2
    if objective == "minmax":
        return float(to_mal.max() - pair.max())
    sums = pair.sum(1)
    return float(to_mal.sum() - (sums.min() if bound == "min" else sums.max()))


@pytest.mark.parametrize("objective", ["minmax", "minsum"])
@pytest.mark.parametrize("dev_type", ["unit_vec", "sign", "std"])
def test_ndss_gamma_is_the_constraint_boundary(objective: str, dev_type: str):
    benign = _benign(1)
    dev = deviation_vector(None, benign, dev_type)
    gamma = ndss_gamma(benign, dev, objective)
    mu = benign.double().mean(0)
    assert 0 < gamma < 20
    assert _violation(benign, mu - gamma * dev, objective) <= 0
    assert _violation(benign, mu - (gamma + 3e-5) * dev, objective) > 0
    # the registered attack sends exactly μ − γ*·∇p
    attack = ATTACKS.get(objective)(None, benign, 15, 3, _rng(), dev_type=dev_type)
    torch.testing.assert_close(attack.double(), mu - gamma * dev, rtol=1e-5, atol=1e-5)


def test_minmax_gamma_matches_closed_form_root():
    benign = _benign(2).double()
    dev = deviation_vector(None, benign, "unit_vec")
    mu = benign.mean(0)
    bound = float((torch.cdist(benign, benign) ** 2).max())
    r = mu - benign
    a, b, c = (r**2).sum(1), r @ dev, float(dev @ dev)
    roots = (b + torch.sqrt(b**2 - c * (a - bound))) / c  # largest γ with a − 2γb + γ²c ≤ bound
    assert ndss_gamma(benign, dev, "minmax") == pytest.approx(float(roots.min()), abs=2e-5)


def test_minsum_paper_bound_is_looser_than_reference_code_bound():
    benign = _benign(3)
    dev = deviation_vector(None, benign, "unit_vec")
    g_min = ndss_gamma(benign, dev, "minsum", minsum_bound="min")
    g_max = ndss_gamma(benign, dev, "minsum", minsum_bound="max")
    assert g_max > g_min
    assert _violation(benign, benign.double().mean(0) - g_max * dev, "minsum", "max") <= 0


@pytest.mark.parametrize(("n", "f", "z"), [(15, 3, 0.431), (25, 5, 0.468), (50, 10, 0.468),
                                            (50, 12, 0.583), (100, 20, 0.496)])
def test_alie_z_matches_spec_table(n: int, f: int, z: float):
    assert alie_z(n, f) == pytest.approx(z, abs=5e-4)


def test_alie_is_mean_minus_z_std_over_benign():
    benign = _benign(4, n=12)
    out = ATTACKS.get("alie")(torch.zeros(300), benign, 15, 3, _rng())
    expected = benign.double().mean(0) - alie_z(15, 3) * benign.double().std(0)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-6)


def test_alie_with_one_benign_update_has_no_nan():
    benign = _benign(5, n=1)
    own = _benign(6, n=1)[0]
    alone = ATTACKS.get("alie")(None, benign, 15, 3, _rng())
    assert torch.isfinite(alone).all()
    torch.testing.assert_close(alone, benign[0])  # nothing to estimate a spread from: σ = 0
    with_own = ATTACKS.get("alie")(own, benign, 15, 3, _rng())
    assert torch.isfinite(with_own).all() and not torch.equal(with_own, benign[0])
    only_own = ATTACKS.get("alie")(own, benign[:0], 15, 14, _rng())
    assert torch.isfinite(only_own).all()


def test_ipm_inner_product_with_benign_mean():
    benign = _benign(7).double()
    out = ATTACKS.get("ipm")(None, benign, 15, 3, _rng(), epsilon=0.1)
    mu = benign.mean(0)
    assert float(out @ mu) == pytest.approx(-0.1 * float(mu @ mu), rel=1e-9)


def test_signflip_gaussian_scaling_formulas():
    benign, own = _benign(8), _benign(9, n=1)[0]
    torch.testing.assert_close(ATTACKS.get("signflip")(own, benign, 10, 2, _rng(), c=10.0), -10 * own)
    g1 = ATTACKS.get("gaussian")(own, benign, 10, 2, _rng(3))
    g2 = ATTACKS.get("gaussian")(own, benign, 10, 2, _rng(3))
    assert torch.equal(g1, g2)  # seeded
    sigma = float(benign.double().std(0).pow(2).mean().sqrt())
    assert float(g1.std()) == pytest.approx(sigma, rel=0.15)
    assert float(ATTACKS.get("gaussian")(own, benign, 10, 2, _rng(), sigma=5.0).std()) == \
        pytest.approx(5.0, rel=0.15)
    base = torch.ones(300)
    torch.testing.assert_close(ATTACKS.get("scaling")(own, benign, 10, 2, _rng(), base=base),
                               1e5 * base)
    u = ATTACKS.get("uniform")(None, benign, 10, 2, _rng())
    assert float(u.min()) >= 0 and float(u.max()) < 1


def test_no_attack_emits_nan_on_degenerate_inputs():
    own = torch.randn(50, generator=_rng(1))
    for benign in (torch.zeros(0, 50), torch.zeros(1, 50), torch.zeros(3, 50)):
        for name in ATTACKS:
            out = ATTACKS.get(name)(own, benign, 10, 3, _rng())
            assert out.shape == (50,) and torch.isfinite(out).all(), name


def test_labelflip_is_data_side():
    attack = ATTACKS.get("labelflip")
    assert attack.data_side and not ATTACKS.get("alie").data_side
    assert flip_labels(torch.tensor([0, 3, 9]), 10).tolist() == [9, 6, 0]
    np.testing.assert_array_equal(flip_labels(np.array([0, 1]), 2), np.array([1, 0]))
    with pytest.raises(ConfigError, match="labels must lie"):
        flip_labels(torch.tensor([10]), 10)
    own = torch.randn(8)
    assert torch.equal(attack(own, torch.zeros(2, 8), 4, 1, _rng()), own)


def test_clear_errors_for_bad_use():
    benign = _benign(10)
    with pytest.raises(UnknownNameError, match="minmax"):
        ATTACKS.get("nope")
    with pytest.raises(ConfigError, match="no parameter"):
        ATTACKS.get("ipm")(None, benign, 15, 3, _rng(), eps=0.1)
    with pytest.raises(ConfigError, match="own"):
        ATTACKS.get("signflip")(None, benign, 15, 3, _rng())
    with pytest.raises(ConfigError, match="deviation"):
        ATTACKS.get("minmax")(None, benign, 15, 3, _rng(), dev_type="bogus")


def test_select_attackers_is_deterministic():
    a = select_attackers(100, 0.2, seed=7)
    assert a == select_attackers(100, 0.2, seed=7)
    assert a != select_attackers(100, 0.2, seed=8)
    assert len(a) == 20 and a == sorted(set(a)) and all(0 <= i < 100 for i in a)
    assert len(select_attackers(100, 0.29, seed=0)) == 29
    assert select_attackers(10, 0.0, seed=0) == []
    with pytest.raises(ConfigError):
        select_attackers(10, 1.5, seed=0)
