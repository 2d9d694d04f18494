"""Flag Aggregator core: exactness on agreeing updates, robustness, the Gram shortcut, IRLS behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pollen.errors import ConfigError, PayloadError
from pollen.linalg import gram_matrix
from pollen.strategies.flag.core import flag_aggregate, irls_step, validate_updates


def _honest_plus_outliers(seed: int, d: int = 300, n_honest: int = 8, n_bad: int = 2):
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(d, generator=gen)
    u /= u.norm()
    honest = u + 0.5 * torch.randn(n_honest, d, generator=gen) / d**0.5
    bad = 100.0 * torch.randn(n_bad, d, generator=gen)
    return torch.cat([honest, bad]), u


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def test_identical_updates_give_the_update_back():
    g = torch.randn(5000, generator=torch.Generator().manual_seed(0))
    res = flag_aggregate(g.repeat(9, 1), m=4)
    torch.testing.assert_close(res.aggregate, g, rtol=1e-5, atol=1e-6)
    assert res.rank == 1  # nine copies span one direction, whatever m asks for


def test_reference_scale_identical_updates_norm_is_p_over_m():
    g = torch.randn(777, generator=torch.Generator().manual_seed(1)) * 3.0
    p, m = 6, 4
    res = flag_aggregate(g.repeat(p, 1), m=m, scale="reference", combine="unit")
    assert _cos(res.aggregate, g) == pytest.approx(1.0, abs=1e-6)
    assert float(res.aggregate.norm()) == pytest.approx(p / m, rel=1e-5)


def test_agreeing_directions_give_mean_direction():
    gen = torch.Generator().manual_seed(2)
    g = torch.randn(400, generator=gen)
    scales = torch.tensor([0.5, 1.0, 2.0, 3.0, 4.0])
    res = flag_aggregate(scales[:, None] * g, m=2)
    assert _cos(res.aggregate, g) == pytest.approx(1.0, abs=1e-6)
    assert float(res.aggregate.norm()) == pytest.approx(2.0 * float(g.norm()), rel=1e-5)


@pytest.mark.parametrize("m", [1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_minority_of_large_random_vectors_is_ignored(m: int, seed: int):
    x, u = _honest_plus_outliers(seed)
    res = flag_aggregate(x, m=m)
    cos_flag, cos_mean = _cos(res.aggregate, u), _cos(x.mean(0), u)
    assert cos_flag > 0.95
    assert cos_flag > cos_mean + 0.2
    assert float(res.aggregate.norm()) < 2.0  # median norm: the outliers' huge norms are not used


def test_outliers_get_the_largest_angles_for_m1():
    x, _ = _honest_plus_outliers(3)
    res = flag_aggregate(x, m=1)
    assert set(torch.argsort(res.sines)[-2:].tolist()) == {8, 9}


def test_client_order_does_not_matter():
    x, _ = _honest_plus_outliers(4)
    w = torch.arange(1.0, 11.0)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    for lam in (0.0, 4.0):
        a = flag_aggregate(x, m=3, lam=lam, weights=w).aggregate
        b = flag_aggregate(x[perm], m=3, lam=lam, weights=w[perm]).aggregate
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(a.norm()))


def test_zero_weight_client_is_as_if_absent():
    x, _ = _honest_plus_outliers(5)
    w = torch.tensor([1.0] * 9 + [0.0])
    a = flag_aggregate(x, m=2, weights=w).aggregate
    b = flag_aggregate(x[:9], m=2).aggregate
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("lam", [0.0, 3.0])
def test_gram_shortcut_matches_full_svd_flag_mean(lam: float):
    rng = np.random.default_rng(7)
    d, p, m, eps = 40, 7, 3, 1e-7
    x = rng.standard_normal((d, p))
    x /= np.linalg.norm(x, axis=0)
    y0, _ = np.linalg.qr(x @ rng.standard_normal((p, m)))  # a subspace inside span{x_i}
    a0 = np.linalg.lstsq(x, y0, rcond=None)[0]
    # Reference IRLS step, materialising every column as the reference code does.
    cols = [(abs(1 - np.sum((y0.T @ x[:, i]) ** 2)) + eps) ** -0.25 * x[:, i] for i in range(p)]
    for i in range(p):
        for j in range(p):
            if lam > 0 and i != j:
                dif = x[:, i] - x[:, j]
                w = (abs(1 - np.sum((y0.T @ dif) ** 2)) + eps) ** -0.25 * lam / (p * (p - 1))
                cols.append(w * dif)
    u = np.linalg.svd(np.stack(cols, 1), full_matrices=False)[0][:, :m]
    kappa2 = (lam / (p * (p - 1))) ** 2
    a1 = irls_step(torch.from_numpy(x.T @ x), torch.from_numpy(a0), m, torch.ones(p), kappa2, eps)
    y1 = x @ a1.numpy()
    np.testing.assert_allclose(y1.T @ y1, np.eye(m), atol=1e-9)
    np.testing.assert_allclose(y1 @ y1.T, u @ u.T, atol=1e-8)


def test_gram_matrix_is_chunk_independent():
    x = torch.randn(5, 1001, generator=torch.Generator().manual_seed(3))
    full = gram_matrix(x)
    torch.testing.assert_close(gram_matrix(x, chunk_elems=5 * 37), full, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(full, x.double() @ x.double().T, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_objective_never_increases_without_pair_term(seed: int):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(12, 60, generator=gen)
    x[:8] += 3.0 * torch.randn(60, generator=gen)  # a loose cluster plus scattered vectors
    res = flag_aggregate(x, m=3, max_iters=200, tol=1e-12)
    obj = np.array(res.objective)
    assert len(obj) > 3  # IRLS actually iterated
    assert np.all(np.diff(obj) <= 1e-12 * obj[0])
    assert obj[-1] < obj[0]


def _objective_of(res, eps: float = 1e-7) -> float:
    return float(torch.sqrt(res.sines**2 + eps).sum())


@pytest.mark.parametrize("max_iters", [0, 1, 5])
def test_random_init_is_returned_only_when_it_is_best(max_iters: int):
    x, _ = _honest_plus_outliers(6)
    res = flag_aggregate(x, m=2, init="random", seed=1, max_iters=max_iters)
    assert len(res.objective) == res.iters + 1 and res.iters <= max_iters
    assert _objective_of(res) == pytest.approx(min(res.objective), rel=1e-9)
    if max_iters:
        assert min(res.objective) < res.objective[0]  # the random start was improved upon


def _full_objective(x: torch.Tensor, y: torch.Tensor, lam: float, eps: float = 1e-7) -> float:
    """Objective of spec §4.2 with the reference's squared pair factor, from a materialised Y."""
    xn = (x / x.norm(dim=1, keepdim=True)).double()
    proj = xn @ y.double()
    val = torch.sqrt((1 - (proj**2).sum(1)).clamp_min(0) + eps).sum()
    p = x.shape[0]
    for i in range(p):
        for j in range(p):
            if i != j:
                dist = ((proj[i] - proj[j]) ** 2).sum()
                val += (lam / (p * (p - 1))) ** 2 * torch.sqrt((1 - dist).abs() + eps)
    return float(val)


@pytest.mark.parametrize(("seed", "lam"), [(0, 8.0), (0, 32.0), (0, 64.0)])
def test_pair_term_returns_best_iterate_when_irls_ascends(seed: int, lam: float):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(7, 30, generator=gen, dtype=torch.float64)
    x[:5] += 2 * torch.randn(30, generator=gen, dtype=torch.float64)
    res = flag_aggregate(x, m=2, lam=lam)
    obj = np.array(res.objective)
    assert np.any(np.diff(obj) > 0)  # the |.| pair branch is not a majoriser: IRLS can go up
    assert not res.converged
    assert _full_objective(x, res.subspace(x), lam) == pytest.approx(obj.min(), rel=1e-9)


def test_zero_update_is_guarded():
    x, u = _honest_plus_outliers(8)
    x[3] = 0.0
    res = flag_aggregate(x, m=2)
    assert torch.isfinite(res.aggregate).all() and _cos(res.aggregate, u) > 0.95
    assert float(flag_aggregate(torch.zeros(4, 10), m=2).aggregate.abs().max()) == 0.0


def test_subspace_is_orthonormal():
    x, _ = _honest_plus_outliers(9)
    res = flag_aggregate(x.double(), m=3)
    y = res.subspace(x.double())
    torch.testing.assert_close(y.T @ y, torch.eye(res.rank, dtype=torch.float64), atol=1e-8, rtol=0)


def test_bad_arguments_raise_config_errors():
    x = torch.randn(3, 10)
    with pytest.raises(ConfigError, match="exceeds the number of updates"):
        flag_aggregate(x, m=4)
    with pytest.raises(ConfigError, match="m must be >= 1"):
        flag_aggregate(x, m=0)
    with pytest.raises(ConfigError, match="scale"):
        flag_aggregate(x, m=1, scale="nope")
    with pytest.raises(ConfigError, match="weights"):
        flag_aggregate(x, m=1, weights=[1.0, -1.0, 1.0])
    with pytest.raises(ConfigError, match="floating-point"):
        flag_aggregate(torch.ones(3, 4, dtype=torch.int64), m=1)
    x[1, 2] = float("nan")
    with pytest.raises(PayloadError, match="validate_updates"):
        flag_aggregate(x, m=1)


def test_validate_updates_drops_bad_clients_with_reasons():
    good = np.ones(6, dtype=np.float32)
    nan = good.copy()
    nan[2] = np.nan
    inf = torch.ones(6)
    inf[0] = float("inf")
    ups = [good, nan, torch.zeros(6), np.ones(5, dtype=np.float32), inf, "junk",
           np.ones(6, dtype=np.complex64)]
    kept, reasons = validate_updates(ups, (6,))
    assert kept == [0, 2]
    assert set(reasons) == {1, 3, 4, 5, 6}
    assert "1 NaN" in reasons[1] and "1 Inf" in reasons[4]
    assert "(5,)" in reasons[3] and "str" in reasons[5] and "complex" in reasons[6]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x, _ = _honest_plus_outliers(10, d=20000)
    cpu = flag_aggregate(x, m=3, lam=2.0)
    gpu = flag_aggregate(x.cuda(), m=3, lam=2.0)
    assert gpu.aggregate.is_cuda
    torch.testing.assert_close(gpu.aggregate.cpu(), cpu.aggregate, rtol=1e-4, atol=1e-6)


def test_float32_gram_blocks_match_float64_to_1e6():
    """float32 GEMM blocks summed in float64, with a ragged last block; also a non-contiguous and a float16 input."""
    gen = torch.Generator().manual_seed(4)
    for n, d in ((3, 5000), (70, 20_011)):
        x = torch.randn(n, d, generator=gen) * torch.rand(n, 1, generator=gen)
        exact = x.double() @ x.double().T
        g32 = gram_matrix(x, blocks="float32")
        assert g32.dtype == torch.float64 and torch.equal(g32, g32.T)  # syrk fills one triangle, mirrored
        scale = exact.diagonal().sqrt()
        rel = ((g32 - exact).abs() / (scale[:, None] * scale[None, :])).max()
        assert 0 < rel < 1e-6  # really float32 arithmetic, really accumulated well
    x64 = x.double()
    assert torch.equal(gram_matrix(x64, blocks="float32"), gram_matrix(x64))  # float64 stays float64
    strided = torch.randn(4000, 9, generator=gen).T  # rows 9 × 4000 with column stride 9
    half = strided.half()
    for y in (strided, half):
        exact = y.double() @ y.double().T
        scale = exact.diagonal().sqrt()
        assert ((gram_matrix(y, blocks="float32") - exact).abs() / (scale[:, None] * scale)).max() < 1e-6


@pytest.mark.parametrize("lam, combine", [(0.0, "unit"), (5.0, "clipped")])
def test_flag_with_float32_gram_blocks_matches_the_float64_path(lam: float, combine: str):
    """The default (float32 blocks) against the exact path, on the bench's kind of input: honest updates
    around a shared direction plus 20 % large random rows."""
    gen = torch.Generator().manual_seed(11)
    n, d = 40, 200_000
    base = torch.randn(d, generator=gen) / d**0.5
    x = torch.randn(n, d, generator=gen).mul_(0.5 / d**0.5).add_(base)
    x[:8].normal_(generator=gen).mul_(10.0)
    fast = flag_aggregate(x, m=n // 2, lam=lam, combine=combine)
    exact = flag_aggregate(x, m=n // 2, lam=lam, combine=combine, gram_blocks="float64")
    assert fast.iters == exact.iters
    rel = float((fast.aggregate.double() - exact.aggregate.double()).norm() / exact.aggregate.double().norm())
    assert rel < 1e-6, rel
    torch.testing.assert_close(fast.sines, exact.sines, rtol=0, atol=1e-5)
    with pytest.raises(ConfigError, match="gram_blocks"):
        flag_aggregate(x, m=2, gram_blocks="float16")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_flag_on_cuda_matches_the_cpu_float64_path():
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(30, 100_000, generator=gen)
    x[:6].mul_(10.0)
    exact = flag_aggregate(x, m=15, gram_blocks="float64")
    on_gpu = flag_aggregate(x.cuda(), m=15)
    assert on_gpu.aggregate.is_cuda
    g = gram_matrix(x.cuda(), blocks="float32")
    ref = x.double() @ x.double().T
    assert float(((g - ref).abs() / ref.diagonal().max()).max()) < 1e-6
    rel = float((on_gpu.aggregate.cpu().double() - exact.aggregate.double()).norm()
                / exact.aggregate.double().norm())
    assert rel < 1e-6, rel
