"""The algebra of each LoRA aggregation mode on toys: svd (Eckart–Young), exact (FedEx-LoRA)."""

import numpy as np
import pytest

from pollen.strategies.fedpeft.lora_exact import (
    fold,
    lora_pairs,
    merge_svd,
    residual_key,
    residual_matrix,
)


def _clients(rng, n, r, d_out, d_in, dtype=np.float64):
    return ([rng.normal(size=(r, d_in)).astype(dtype) for _ in range(n)],
            [rng.normal(size=(d_out, r)).astype(dtype) for _ in range(n)])


def _rel(got, want):
    return np.linalg.norm(got - want) / np.linalg.norm(want)


def test_svd_merge_equals_weighted_mean_of_products_when_rank_suffices():
    rng = np.random.default_rng(0)
    As, Bs = _clients(rng, 3, 2, 12, 10)
    w = np.array([5.0, 1.0, 2.0])
    target = sum(wi * b @ a for wi, a, b in zip(w / w.sum(), As, Bs))
    A, B = merge_svd(As, Bs, w, rank=6)  # 3 clients x rank 2: the mean has rank <= 6
    assert A.shape == (6, 10) and B.shape == (12, 6)
    np.testing.assert_allclose(B @ A, target, atol=1e-10)


def test_svd_merge_truncates_optimally_and_beats_factor_averaging():
    rng = np.random.default_rng(1)
    As, Bs = _clients(rng, 4, 3, 20, 16)
    w = np.array([1.0, 2.0, 3.0, 4.0])
    target = sum(wi * b @ a for wi, a, b in zip(w / w.sum(), As, Bs))
    A, B = merge_svd(As, Bs, w, rank=3)
    s = np.linalg.svd(target, compute_uv=False)
    # Eckart–Young: the residual is exactly the discarded singular values.
    np.testing.assert_allclose(np.linalg.norm(B @ A - target), np.sqrt((s[3:] ** 2).sum()), rtol=1e-8)
    naive = (sum(wi * b for wi, b in zip(w / w.sum(), Bs))) @ (sum(wi * a for wi, a in zip(w / w.sum(), As)))
    assert np.linalg.norm(B @ A - target) < np.linalg.norm(naive - target)


def test_rank_deficient_mean_is_padded_to_configured_shape():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(4, 8)), rng.normal(size=(8, 4))
    A, B = merge_svd([a, a], [b, b], np.array([1.0, 1.0]), rank=4)
    np.testing.assert_allclose(B @ A, b @ a, atol=1e-10)


def test_the_issue_toy_svd_misses_the_mean_and_exact_does_not():
    """3 clients, 12×10, r = 2 (issue 13): factors and svd miss the mean, exact reproduces it."""
    rng = np.random.default_rng(3)
    As, Bs = _clients(rng, 3, 2, 12, 10)
    w = np.ones(3)
    target = sum(b @ a for a, b in zip(As, Bs)) / 3
    A_svd, B_svd = merge_svd(As, Bs, w, rank=2)
    A_m, B_m, res = fold(As, Bs, w)
    assert _rel(B_svd @ A_svd, target) > 0.2 and _rel(B_m @ A_m, target) > _rel(B_svd @ A_svd, target)
    assert _rel(residual_matrix(res) + B_m @ A_m, target) < 1e-12
    np.testing.assert_allclose(A_m, sum(As) / 3) and np.testing.assert_allclose(B_m, sum(Bs) / 3)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-6)])
def test_exact_fold_accumulates_the_mean_of_products_over_rounds(dtype, tol):
    """Each round clients start from (R, B̄, Ā) and train; R + B̄Ā tracks Σ wᵢ(R + BᵢAᵢ) exactly.

    20×16 at r = 2 with 3 clients adds rank ≤ (n−1)·r = 4 a round: factors for two rounds, then the
    dense form once K·(d_out + d_in) ≥ d_out·d_in; the identity holds through the switch.
    """
    rng = np.random.default_rng(4)
    n, r, d_out, d_in = 3, 2, 20, 16
    A_g, B_g = rng.normal(size=(r, d_in)).astype(dtype), np.zeros((d_out, r), dtype)
    residual: dict[str, np.ndarray] = {}
    truth = (B_g @ A_g).astype(np.float64)
    forms = []
    for _ in range(5):
        w = rng.integers(1, 50, size=n).astype(float)
        As = [(A_g + 0.3 * rng.normal(size=A_g.shape)).astype(dtype) for _ in range(n)]
        Bs = [(B_g + 0.3 * rng.normal(size=B_g.shape)).astype(dtype) for _ in range(n)]
        R_prev = residual_matrix(residual) if residual else 0.0
        truth = sum(wi * (R_prev + b.astype(np.float64) @ a.astype(np.float64))
                    for wi, a, b in zip(w / w.sum(), As, Bs))
        A_g, B_g, residual = fold(As, Bs, w, residual)
        forms.append("W" if "W" in residual else residual["B"].shape[1])
        assert A_g.dtype == dtype and all(v.dtype == dtype for v in residual.values())
        got = residual_matrix(residual) + B_g.astype(np.float64) @ A_g.astype(np.float64)
        assert _rel(got, truth) < tol, forms
    assert forms == [4, 8, "W", "W", "W"]


def test_exact_fold_residual_is_zero_when_clients_agree():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(2, 9)), rng.normal(size=(7, 2))
    A, B, res = fold([a, a.copy()], [b, b.copy()], np.array([1.0, 3.0]))
    assert np.abs(residual_matrix(res)).max() < 1e-14 and res["B"].shape == (7, 1)
    np.testing.assert_allclose(B @ A, b @ a)


def test_pairs_and_residual_names_follow_peft_naming():
    names = ["x.lora_A.default.weight", "x.lora_B.default.weight", "y.bias", "z.lora_A.default.weight"]
    assert lora_pairs(names) == [("x.lora_A.default.weight", "x.lora_B.default.weight")]
    assert residual_key("m.q_proj.lora_A.default.weight") == "lora-residual/m.q_proj.default"
