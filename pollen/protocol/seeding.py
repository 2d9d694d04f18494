"""Per-client seed formulas every method uses, so each party (and any replay) derives the same streams.

A client's randomness in a round depends only on (run seed, round, partition id): batch order and
torch's global generator (dropout, ZO perturbation draws) are re-seeded from these formulas at the start
of each local training, and the per-client example cap draws from `cap_seed`.
"""

from __future__ import annotations

import numpy as np


def batch_seed(run_seed: int, server_round: int, partition_id: int) -> int:
    """Seed of a client's batch order in one round."""
    return run_seed * 7919 + server_round * 31 + partition_id


def torch_seed(run_seed: int, server_round: int, partition_id: int) -> int:
    """Seed of torch's generator for a client's local training in one round."""
    return run_seed * 100_003 + server_round * 1009 + partition_id


def cap_indices(idx: np.ndarray, cap: int, run_seed: int, partition_id: int) -> np.ndarray:
    """At most `cap` of a client's example indices (0: no cap), drawn once per run and client, sorted."""
    if cap and len(idx) > cap:
        return np.sort(np.random.default_rng(run_seed + partition_id).choice(idx, cap, replace=False))
    return idx
