import numpy as np

from pollen.strategies.fedpeft.lora_exact import lora_pairs, merge_exact


def _clients(rng, n, r, d_out, d_in):
    return ([rng.normal(size=(r, d_in)) for _ in range(n)], [rng.normal(size=(d_out, r)) for _ in range(n)])


def test_exact_merge_equals_weighted_mean_of_products_when_rank_suffices():
    rng = np.random.default_rng(0)
    As, Bs = _clients(rng, 3, 2, 12, 10)
    w = np.array([5.0, 1.0, 2.0])
    target = sum(wi * b @ a for wi, a, b in zip(w / w.sum(), As, Bs))
    A, B = merge_exact(As, Bs, w, rank=6)  # 3 clients x rank 2: the mean has rank <= 6
    assert A.shape == (6, 10) and B.shape == (12, 6)
    np.testing.assert_allclose(B @ A, target, atol=1e-10)


def test_exact_merge_truncates_optimally_and_beats_factor_averaging():
    rng = np.random.default_rng(1)
    As, Bs = _clients(rng, 4, 3, 20, 16)
    w = np.array([1.0, 2.0, 3.0, 4.0])
    target = sum(wi * b @ a for wi, a, b in zip(w / w.sum(), As, Bs))
    A, B = merge_exact(As, Bs, w, rank=3)
    s = np.linalg.svd(target, compute_uv=False)
    # Eckart–Young: the residual is exactly the discarded singular values.
    np.testing.assert_allclose(np.linalg.norm(B @ A - target), np.sqrt((s[3:] ** 2).sum()), rtol=1e-8)
    naive = (sum(wi * b for wi, b in zip(w / w.sum(), Bs))) @ (sum(wi * a for wi, a in zip(w / w.sum(), As)))
    assert np.linalg.norm(B @ A - target) < np.linalg.norm(naive - target)


def test_rank_deficient_mean_is_padded_to_configured_shape():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(4, 8)), rng.normal(size=(8, 4))
    A, B = merge_exact([a, a], [b, b], np.array([1.0, 1.0]), rank=4)
    np.testing.assert_allclose(B @ A, b @ a, atol=1e-10)


def test_pairs_follow_peft_naming():
    names = ["x.lora_A.default.weight", "x.lora_B.default.weight", "y.bias", "z.lora_A.default.weight"]
    assert lora_pairs(names) == [("x.lora_A.default.weight", "x.lora_B.default.weight")]
