"""MeZO-style local training restricted to K shared seeds (the FedKSeed / FedKSeed-Pro client).

Each step draws a seed index j, measures L(w + eps z_j) and L(w - eps z_j) on one batch, and moves the
weights by -lr * (g z_j + wd w) with g = (L+ - L-) / (2 eps). Only (j, g) pairs leave the client.

Deviations from the reference code (see specs §3.2, §9):
- An fp32 master copy holds w. Perturbed weights are written as master +/- eps z, so "restore" is a
  copy and exact; the reference's +eps, -2eps, +eps arithmetic in fp16 drifts.
- Non-finite losses or g (NaN or Inf) skip the step, not only NaN.
- g is rounded to float32 before use, so the update the client makes is exactly the one it reports.
- Weight decay skips every parameter whose name contains "bias" or "norm" (case-insensitive), which
  also exempts LLaMA's final ``model.norm.weight`` that the reference decays.

Cost per step: two forward passes plus three regenerations of z (perturb +, perturb -, update); the
weights are copied back from the master only once, at the end.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from pollen.errors import ConfigError, DataError
from pollen.strategies.fedkseed.seeds import apply_seeds

NO_DECAY_KEYS = ("bias", "norm")


@dataclass
class ZOResult:
    """What a client reports: per-step (seed index, g) pairs in step order, g float32-representable."""

    pairs: list[tuple[int, float]] = field(default_factory=list)
    skipped: int = 0
    losses: list[float] = field(default_factory=list)  # (L+ + L-) / 2 of every recorded step


def decays(name: str) -> bool:
    """Whether weight decay applies to a parameter of this name."""
    low = name.lower()
    return not any(key in low for key in NO_DECAY_KEYS)


def _cycle(batches: Iterable[dict]) -> Iterator[dict]:
    """Re-iterates the source (a list or DataLoader gives a new epoch) so `steps` may exceed its length."""
    done = 0
    while True:
        fresh = 0
        for batch in batches:
            fresh += 1
            done += 1
            yield batch
        if fresh == 0:
            raise DataError(f"the batch source ran dry after {done} batches; pass a re-iterable "
                            "source (list, DataLoader) or at least `steps` batches")


def _check_probs(probs: np.ndarray | None, k: int) -> np.ndarray | None:
    if probs is None:
        return None
    p = np.asarray(probs, dtype=np.float64)
    if p.shape != (k,) or not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise ConfigError(f"seed probabilities must be {k} finite non-negative numbers with a "
                          f"positive sum, got shape {p.shape}")
    return p / p.sum()


def zo_train(model: torch.nn.Module, batches: Iterable[dict],
             loss_fn: Callable[[torch.nn.Module, dict], torch.Tensor], *,
             seeds: np.ndarray, steps: int, lr: float, eps: float, generator_seed: int,
             params: list[torch.Tensor] | None = None, param_names: list[str] | None = None,
             probs: np.ndarray | None = None, weight_decay: float = 0.0, grad_clip: float = 0.0,
             rng: str = "torch", threads: int | None = None, restore: bool = False) -> ZOResult:
    """Run `steps` two-point zeroth-order steps in place on `params` (default: all trainable).

    ``probs`` switches to FedKSeed-Pro sampling; ``grad_clip > 0`` skips steps with |L+ - L-| above
    it (reference semantics); ``restore=True`` puts the starting weights back (bit-exact) so a client
    that only uploads pairs keeps the global model. Seed indices come from
    ``numpy.random.default_rng(generator_seed)``, so a run is reproducible.
    """
    seeds = np.asarray(seeds, dtype=np.int64).reshape(-1)
    k = seeds.size
    if k < 1 or steps < 0 or lr < 0 or not eps > 0 or weight_decay < 0:
        raise ConfigError(f"zo_train needs K >= 1, steps >= 0, lr >= 0, eps > 0, weight_decay >= 0; "
                          f"got K={k}, steps={steps}, lr={lr}, eps={eps}, weight_decay={weight_decay}")
    p_seed = _check_probs(probs, k)
    if params is None:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        params, param_names = [p for _, p in named], [n for n, _ in named]
    elif param_names is None:
        by_id = {id(p): n for n, p in model.named_parameters()}
        param_names = [by_id.get(id(p), "") for p in params]
    if len(param_names) != len(params):
        raise ConfigError(f"{len(params)} params but {len(param_names)} param_names")
    decayed = [i for i, n in enumerate(param_names) if decays(n)]
    pick = np.random.default_rng(generator_seed)
    result = ZOResult()
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            start = [p.detach().clone() for p in params] if restore else None
            master = [p.detach().to(torch.float32, copy=True) for p in params]
            source = _cycle(batches)
            for _ in range(steps):
                batch = next(source)
                j = int(pick.integers(k)) if p_seed is None else int(pick.choice(k, p=p_seed))
                seed = [int(seeds[j])]
                apply_seeds(params, seed, [eps], src=master, rng=rng, threads=threads)
                l_plus = float(loss_fn(model, batch))
                apply_seeds(params, seed, [-eps], src=master, rng=rng, threads=threads)
                l_minus = float(loss_fn(model, batch))
                with np.errstate(over="ignore", invalid="ignore"):
                    g = float(np.float32((l_plus - l_minus) / (2.0 * eps)))
                if not (math.isfinite(g) and math.isfinite(l_plus) and math.isfinite(l_minus)) or (
                        grad_clip > 0 and abs(l_plus - l_minus) > grad_clip):
                    result.skipped += 1
                    continue
                if weight_decay > 0 and lr > 0:
                    for i in decayed:
                        master[i].mul_(1.0 - lr * weight_decay)
                apply_seeds(master, seed, [-lr * g], rng=rng, threads=threads)
                result.pairs.append((j, g))
                result.losses.append(0.5 * (l_plus + l_minus))
            for p, m in zip(params, start if start is not None else master, strict=True):
                p.copy_(m)
    finally:
        model.train(was_training)
    return result
