"""AGR-agnostic Min-Max and Min-Sum attacks (Shejwalkar & Houmansadr, NDSS'21), spec §8.

Δ_mal = μ − γ·∇p. Every distance the search needs is a quadratic in γ,
‖Δ_mal − Δ_i‖² = a_i − 2γ·b_i + γ²·c, so the scalars a, b, c come from one benign Gram pass and
the NDSS binary search itself costs nothing per step (no d-sized work inside the loop).

Min-Sum bound: we implement the reference code's constraint
Σ_j ‖Δ_mal − Δ_j‖² ≤ min_i Σ_j ‖Δ_i − Δ_j‖² (stricter); minsum_bound="max" gives the paper text's.
"""

from __future__ import annotations

import torch

from pollen.attacks.base import benign_std, like, reference_set, register
from pollen.errors import ConfigError
from pollen.linalg import gram_matrix

DEVIATIONS = ("unit_vec", "sign", "std")
_CHUNK = 1 << 22


def deviation_vector(own: torch.Tensor | None, benign: torch.Tensor, kind: str) -> torch.Tensor:
    """∇p in float64: μ/‖μ‖ ("unit_vec"), sign(μ) ("sign") or the coordinate-wise std ("std")."""
    if kind not in DEVIATIONS:
        raise ConfigError(f"deviation {kind!r} unknown; choose one of: {', '.join(DEVIATIONS)}")
    if kind == "std":
        return benign_std(own, benign)
    mu = reference_set(own, benign).to(torch.float64).mean(0)
    if kind == "sign":
        return torch.sign(mu)
    norm = mu.norm()
    return mu / norm if norm > 0 else torch.zeros_like(mu)


def _matvec64(rows: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
    """rows @ vec in float64 without a float64 copy of all rows."""
    out = torch.zeros(rows.shape[0], dtype=torch.float64, device=rows.device)
    step = max(1, _CHUNK // max(rows.shape[0], 1))
    for s in range(0, rows.shape[1], step):
        out += rows[:, s : s + step].to(torch.float64) @ vec[s : s + step].to(rows.device)
    return out.cpu()


def ndss_gamma(
    benign: torch.Tensor,
    deviation: torch.Tensor,
    objective: str = "minmax",
    gamma0: float = 10.0,
    tol: float = 1e-5,
    minsum_bound: str = "min",
) -> float:
    """γ* of the NDSS'21 search: γ ← γ ± step/2, step halves, until |γ_succ − γ| ≤ tol.

    Returns the last γ meeting the constraint (0 if none did; the search never exceeds 2·gamma0).
    """
    if objective not in ("minmax", "minsum") or minsum_bound not in ("min", "max"):
        raise ConfigError(f"ndss_gamma: objective must be minmax|minsum and minsum_bound min|max "
                          f"(got {objective!r}, {minsum_bound!r})")
    if gamma0 <= 0 or tol <= 0:
        raise ConfigError(f"ndss_gamma needs gamma0 > 0 and tol > 0 (got {gamma0}, {tol})")
    n = benign.shape[0]
    gram = gram_matrix(benign)
    sq = gram.diagonal()
    dist = (sq[:, None] + sq[None, :] - 2.0 * gram).clamp_min(0.0)  # ‖Δ_i − Δ_j‖²
    dots_mu = gram.sum(1) / n  # ⟨Δ_i, μ⟩
    mu_sq = float(gram.sum()) / n**2
    a = (sq - 2.0 * dots_mu + mu_sq).clamp_min(0.0)  # ‖μ − Δ_i‖²
    p_dot = _matvec64(benign, deviation)  # ⟨∇p, Δ_i⟩
    b = p_dot.mean() - p_dot  # ⟨∇p, μ − Δ_i⟩
    c = float(deviation.to(torch.float64).pow(2).sum())

    if objective == "minmax":
        bound = float(dist.max())

        def feasible(g: float) -> bool:
            return float((a - 2.0 * g * b + g * g * c).max()) <= bound
    else:
        sums = dist.sum(1)
        bound = float(sums.min() if minsum_bound == "min" else sums.max())
        a_sum, b_sum = float(a.sum()), float(b.sum())

        def feasible(g: float) -> bool:
            return a_sum - 2.0 * g * b_sum + g * g * c * n <= bound

    gamma, step, succ = float(gamma0), float(gamma0), 0.0
    while abs(succ - gamma) > tol:
        if feasible(gamma):
            succ = gamma
            gamma += step / 2
        else:
            gamma -= step / 2
        step /= 2
    return succ


def _ndss(own: torch.Tensor | None, benign: torch.Tensor, objective: str, dev_type: str,
          gamma0: float, tol: float, minsum_bound: str) -> torch.Tensor:
    ref = reference_set(own, benign)
    dev = deviation_vector(own, benign, dev_type).to(ref.device)
    gamma = ndss_gamma(ref, dev, objective, gamma0, tol, minsum_bound)
    return like(ref.to(torch.float64).mean(0) - gamma * dev, own, benign)


@register("minmax", collusive=True)
def minmax(own: torch.Tensor | None, benign: torch.Tensor, n_total: int, n_attackers: int,
           rng: torch.Generator, dev_type: str = "unit_vec", gamma0: float = 10.0,
           tol: float = 1e-5) -> torch.Tensor:
    """Largest γ with max_i ‖Δ_mal − Δ_i‖² ≤ max_{i,j} ‖Δ_i − Δ_j‖²."""
    return _ndss(own, benign, "minmax", dev_type, gamma0, tol, "min")


@register("minsum", collusive=True)
def minsum(own: torch.Tensor | None, benign: torch.Tensor, n_total: int, n_attackers: int,
           rng: torch.Generator, dev_type: str = "unit_vec", gamma0: float = 10.0,
           tol: float = 1e-5, minsum_bound: str = "min") -> torch.Tensor:
    """Largest γ with Σ_j ‖Δ_mal − Δ_j‖² ≤ min_i Σ_j ‖Δ_i − Δ_j‖² (reference code; "max": paper)."""
    return _ndss(own, benign, "minsum", dev_type, gamma0, tol, minsum_bound)
