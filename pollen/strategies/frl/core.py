"""Federated Rank Learning protocol core (spec §5.3): rankings, Borda vote, scores from a ranking, server state.

Pure torch/numpy so the Flower strategy, tests and attack simulations share one implementation.
Conventions, reproduced from the reference on purpose (spec §9.3):
- a ranking lists edge ids from least to most important, ordered by the SIGNED score (the mask uses |S|);
- the global scores are the fixed multiset of initial score values, reassigned along the global ranking.
Deviation: every sort here is stable, so ties (equal scores or equal Borda sums) break by ascending edge id
instead of arbitrarily; the server's result is then a deterministic function of the votes it received.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from pollen.errors import ModelError, PayloadError


def rank_scores(scores: Tensor) -> Tensor:
    """Edge ids sorted by signed score, ascending (int64): R[0] is the least important edge."""
    return torch.argsort(scores.detach().flatten(), stable=True).to(torch.int64)


def positions(ranking: Tensor) -> Tensor:
    """Inverse permutation P with P[R[t]] = t, i.e. argsort(R), computed by one scatter (O(n))."""
    pos = torch.empty_like(ranking, dtype=torch.int64)
    pos[ranking] = torch.arange(ranking.numel(), dtype=torch.int64, device=ranking.device)
    return pos


def borda_sums(rankings: Sequence[Tensor], weights: Sequence[float] | None = None) -> Tensor:
    """V[e] = Σ_u w_u·P_u[e]; int64 (exact) without weights, float64 with them."""
    if not rankings:
        raise PayloadError("vote needs at least one ranking")
    n = rankings[0].numel()
    for u, r in enumerate(rankings):
        if r.dim() != 1 or r.numel() != n:
            raise PayloadError(f"ranking has shape {tuple(r.shape)}, expected ({n},)", client=u)
    if weights is None:
        total = torch.zeros(n, dtype=torch.int64)
        for r in rankings:
            total += positions(r.to(torch.int64).cpu())
        return total
    w = torch.as_tensor(list(weights), dtype=torch.float64)
    if w.numel() != len(rankings) or not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise PayloadError(f"vote weights must be {len(rankings)} finite non-negative numbers")
    total_f = torch.zeros(n, dtype=torch.float64)
    for wu, r in zip(w, rankings):
        total_f += wu * positions(r.to(torch.int64).cpu()).to(torch.float64)
    return total_f


def vote(rankings: Sequence[Tensor], weights: Sequence[float] | None = None) -> Tensor:
    """Borda vote: R_g = argsort(Σ_u argsort(R_u)) ascending, ties broken by ascending edge id.

    Unweighted by default: "every vote counts" equally, which is what bounds a single client's influence;
    weights (e.g. sample counts) are offered but let a client that lies about its size buy influence.
    """
    return torch.argsort(borda_sums(rankings, weights), stable=True).to(torch.int64)


def scores_from_ranking(ranking: Tensor, sorted_initial_scores: Tensor) -> Tensor:
    """Flat scores S with S[R[t]] = s_sorted[t]: the most-voted edge gets the largest initial value."""
    if ranking.numel() != sorted_initial_scores.numel():
        raise PayloadError(f"ranking has {ranking.numel()} entries, scores {sorted_initial_scores.numel()}")
    out = torch.empty_like(sorted_initial_scores)
    out[ranking.to(torch.int64)] = sorted_initial_scores
    return out


def rank_reversal(attacker_scores: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """FRL's rank-reversal attack (spec §5.6): the attackers' collective ranking, reversed, per layer.

    Positions from each attacker's honestly trained scores are summed and ranked descending, so the edges the
    attackers agree are most important are voted least important. Every malicious client sends this ranking.
    """
    if not attacker_scores:
        raise PayloadError("rank_reversal needs the scores of at least one attacker")
    out: dict[str, Tensor] = {}
    for layer in attacker_scores[0]:
        total = borda_sums([rank_scores(s[layer]) for s in attacker_scores])
        out[layer] = torch.argsort(-total, stable=True).to(torch.int64)
    return out


class FRLServerState:
    """Per-layer fixed score multiset and current global ranking; everything the server must checkpoint."""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]], sorted_scores: Mapping[str, Tensor],
                 rankings: Mapping[str, Tensor]) -> None:
        self.shapes = {k: tuple(int(d) for d in v) for k, v in shapes.items()}
        self.sorted_scores = {k: sorted_scores[k].detach().flatten().cpu() for k in self.shapes}
        self.rankings = {k: rankings[k].to(torch.int64).flatten().cpu() for k in self.shapes}
        self._check()

    @classmethod
    def from_scores(cls, scores: Mapping[str, Tensor]) -> FRLServerState:
        """Start from the initial scores S⁰; global_scores() then returns S⁰ (exactly, for distinct values)."""
        shapes = {k: tuple(v.shape) for k, v in scores.items()}
        sorted_scores = {k: torch.sort(v.detach().flatten().cpu()).values for k, v in scores.items()}
        return cls(shapes, sorted_scores, {k: rank_scores(v.cpu()) for k, v in scores.items()})

    def layer_sizes(self) -> dict[str, int]:
        """Expected ranking length per layer, for `frl/wire.py: decode_rankings`."""
        return {k: v.numel() for k, v in self.sorted_scores.items()}

    def update(self, client_rankings: Sequence[Mapping[str, Tensor]],
               weights: Sequence[float] | None = None) -> None:
        """Replace each layer's global ranking by the vote of the clients' (already validated) rankings."""
        if not client_rankings:
            raise PayloadError("no client rankings to aggregate")
        for u, cr in enumerate(client_rankings):
            if set(cr) != set(self.shapes):
                raise PayloadError(f"ranking layers {sorted(cr)} differ from {sorted(self.shapes)}", client=u)
        self.rankings = {k: vote([cr[k] for cr in client_rankings], weights) for k in self.shapes}

    def global_scores(self) -> dict[str, Tensor]:
        """Scores to broadcast / load into the model, shaped like the layers."""
        return {k: scores_from_ranking(self.rankings[k], self.sorted_scores[k]).reshape(self.shapes[k])
                for k in self.shapes}

    def state_dict(self) -> dict[str, np.ndarray]:
        """Flat name → array map (safetensors-friendly): `<layer>.shape`, `.sorted_scores`, `.ranking`."""
        out: dict[str, np.ndarray] = {}
        for k in self.shapes:
            out[f"{k}.shape"] = np.asarray(self.shapes[k], dtype=np.int64)
            out[f"{k}.sorted_scores"] = self.sorted_scores[k].numpy().copy()
            out[f"{k}.ranking"] = self.rankings[k].numpy().copy()
        return out

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore from `state_dict()`; the checkpoint must describe exactly this state's layers."""
        expected = {f"{k}.{f}" for k in self.shapes for f in ("shape", "sorted_scores", "ranking")}
        if set(state) != expected:
            raise ModelError(f"FRL checkpoint keys differ: unexpected/missing {sorted(set(state) ^ expected)}")
        for k in self.shapes:
            if tuple(int(d) for d in state[f"{k}.shape"]) != self.shapes[k]:
                raise ModelError(f"FRL checkpoint layer {k!r} has shape {tuple(state[f'{k}.shape'])}, "
                                 f"model has {self.shapes[k]}")
        new = FRLServerState(self.shapes,
                             {k: torch.from_numpy(np.array(state[f"{k}.sorted_scores"])) for k in self.shapes},
                             {k: torch.from_numpy(np.array(state[f"{k}.ranking"])) for k in self.shapes})
        self.sorted_scores, self.rankings = new.sorted_scores, new.rankings

    def _check(self) -> None:
        for k, shape in self.shapes.items():
            n = int(np.prod(shape))
            s, r = self.sorted_scores.get(k), self.rankings.get(k)
            if s is None or r is None or s.numel() != n or r.numel() != n:
                raise ModelError(f"FRL state for layer {k!r}: sizes do not match shape {shape}")
            if n > 1 and bool((s[1:] < s[:-1]).any()):
                raise ModelError(f"FRL state for layer {k!r}: sorted_scores are not ascending")
            if not bool((torch.bincount(r.clamp(0, n - 1), minlength=n) == 1).all()) or \
                    bool(((r < 0) | (r >= n)).any()):
                raise ModelError(f"FRL state for layer {k!r}: ranking is not a permutation of 0..{n - 1}")
