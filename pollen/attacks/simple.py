"""Closed-form attacks of spec §8: sign flip, Gaussian/uniform noise, scaling, label flip, ALIE, IPM."""

from __future__ import annotations

from statistics import NormalDist

import torch

from pollen.attacks.base import benign_mean, benign_std, like, reference_set, register
from pollen.errors import ConfigError


@register("signflip", needs_own=True)
def signflip(own: torch.Tensor, benign: torch.Tensor, n_total: int, n_attackers: int,
             rng: torch.Generator, c: float = 1.0) -> torch.Tensor:
    """Δ_mal = −c·Δ_own (c=1 bit-flipping; FlagAggregator's `reverse` is c=10)."""
    return -c * own


@register("gaussian")
def gaussian(own: torch.Tensor | None, benign: torch.Tensor, n_total: int, n_attackers: int,
             rng: torch.Generator, sigma: float | None = None) -> torch.Tensor:
    """Δ_mal ~ N(0, σ² I). σ=None matches the benign scale: the RMS of the coordinate-wise benign std
    (or, when that is zero because only one update is visible, the RMS of that update)."""
    if sigma is None:
        sigma = float(benign_std(own, benign).pow(2).mean().sqrt())
        if sigma == 0.0:
            sigma = float(reference_set(own, benign).to(torch.float64).pow(2).mean().sqrt())
    elif sigma < 0:
        raise ConfigError(f"gaussian attack sigma must be >= 0, got {sigma}")
    d = benign.shape[1]
    noise = torch.randn(d, generator=rng, device=rng.device, dtype=torch.float64) * sigma
    return like(noise, own, benign)


@register("uniform")
def uniform(own: torch.Tensor | None, benign: torch.Tensor, n_total: int, n_attackers: int,
            rng: torch.Generator, high: float = 1.0) -> torch.Tensor:
    """Δ_mal ~ U[0, high)^d: FlagAggregator's default `random` attack (all coordinates positive)."""
    d = benign.shape[1]
    return like(torch.rand(d, generator=rng, device=rng.device, dtype=torch.float64) * high,
                own, benign)


@register("scaling")
def scaling(own: torch.Tensor | None, benign: torch.Tensor, n_total: int, n_attackers: int,
            rng: torch.Generator, factor: float = 1e5, base: torch.Tensor | None = None
            ) -> torch.Tensor:
    """Δ_mal = factor·base. FRL's FedAvg attack passes base=θ_global (factor 1e5); without `base`
    the attacker boosts its own update (model replacement with factor ≈ n_total)."""
    ref = base if base is not None else own
    if ref is None:
        raise ConfigError("scaling attack needs base= (e.g. the global model) or the own update")
    if ref.shape != (benign.shape[1],):
        raise ConfigError(f"scaling base must have shape ({benign.shape[1]},), got {tuple(ref.shape)}")
    return factor * ref


@register("labelflip", data_side=True, needs_own=True)
def labelflip(own: torch.Tensor, benign: torch.Tensor, n_total: int, n_attackers: int,
              rng: torch.Generator) -> torch.Tensor:
    """Data-side: the client trained on flip_labels(y) already, so its honest-looking update is sent."""
    return own


def alie_z(n_total: int, n_attackers: int) -> float:
    """z_max = Φ⁻¹((n−s)/n), s = ⌊n/2+1⌋−f (Baruch et al. 2019). s is clamped to [1, n−1] so the
    quantile stays finite when attackers could form a majority on their own (or n ≤ 2)."""
    if n_total < 1 or not 0 <= n_attackers <= n_total:
        raise ConfigError(f"ALIE needs n_total >= 1 and 0 <= n_attackers <= n_total "
                          f"(got {n_total}, {n_attackers})")
    if n_total < 3:
        return 0.0
    s = min(max((n_total // 2 + 1) - n_attackers, 1), n_total - 1)
    return NormalDist().inv_cdf((n_total - s) / n_total)


@register("alie", collusive=True)
def alie(own: torch.Tensor | None, benign: torch.Tensor, n_total: int, n_attackers: int,
         rng: torch.Generator, z: float | None = None, direction: str = "minus") -> torch.Tensor:
    """Δ_mal = μ − z·σ (direction="plus": μ + z·σ, the NDSS'21 variant); z defaults to `alie_z`.

    μ, σ are over the benign updates; σ never becomes NaN (see `benign_std`)."""
    if direction not in ("minus", "plus"):
        raise ConfigError(f"ALIE direction must be 'minus' or 'plus', got {direction!r}")
    zval = alie_z(n_total, n_attackers) if z is None else float(z)
    sign = -1.0 if direction == "minus" else 1.0
    return like(benign_mean(own, benign) + sign * zval * benign_std(own, benign), own, benign)


@register("ipm", collusive=True)
def ipm(own: torch.Tensor | None, benign: torch.Tensor, n_total: int, n_attackers: int,
        rng: torch.Generator, epsilon: float = 0.1) -> torch.Tensor:
    """Inner-product manipulation (Xie et al. 2019): Δ_mal = −ε·μ (ε=0.1 vs median/Krum, 100 vs mean)."""
    return like(-epsilon * benign_mean(own, benign), own, benign)
