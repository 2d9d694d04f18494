"""Split a training pool across clients: iid, dirichlet(alpha) over groups, natural (group = client)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pollen.errors import DataError
from pollen.registry import Registry

PARTITIONERS: Registry[Callable[..., list[np.ndarray]]] = Registry("partition")


@PARTITIONERS.register("iid")
def iid(groups: np.ndarray, n_clients: int, *, seed: int = 0, alpha: float = 0.0) -> list[np.ndarray]:
    n = len(groups)
    if n_clients > n:
        raise DataError(f"{n_clients} clients but only {n} training examples: use fewer clients")
    perm = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(perm, n_clients)]


@PARTITIONERS.register("dirichlet")
def dirichlet(groups: np.ndarray, n_clients: int, *, seed: int = 0, alpha: float = 0.5,
              max_tries: int = 100) -> list[np.ndarray]:
    """Per group, client shares ~ Dir(alpha); redrawn until every client holds an example."""
    n = len(groups)
    if n_clients > n:
        raise DataError(f"{n_clients} clients but only {n} training examples: use fewer clients")
    rng = np.random.default_rng(seed)
    by_group = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
        for idx in by_group:
            idx = rng.permutation(idx)
            shares = rng.dirichlet(np.full(n_clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(np.int64)
            for c, chunk in enumerate(np.split(idx, cuts)):
                parts[c].append(chunk)
        out = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(p) for p in out) > 0:
            return out
    raise DataError(f"dirichlet(alpha={alpha}) left a client empty in {max_tries} draws: "
                    f"use fewer than {n_clients} clients or a larger alpha")


@PARTITIONERS.register("natural")
def natural(groups: np.ndarray, n_clients: int, *, seed: int = 0, alpha: float = 0.0) -> list[np.ndarray]:
    """Each group (category) belongs to exactly one client; groups are dealt largest-first."""
    ids, counts = np.unique(groups, return_counts=True)
    if n_clients > len(ids):
        raise DataError(f"natural partition: {n_clients} clients but only {len(ids)} categories; "
                        f"use at most {len(ids)} clients or partition = 'dirichlet'")
    load = np.zeros(n_clients, dtype=np.int64)
    owner: dict[int, int] = {}
    for g in ids[np.argsort(-counts, kind="stable")]:
        c = int(np.argmin(load))  # greedy balancing keeps client sizes comparable
        owner[int(g)] = c
        load[c] += counts[ids == g][0]
    client_of = np.array([owner[int(g)] for g in groups])
    return [np.flatnonzero(client_of == c) for c in range(n_clients)]


def partition(name: str, groups: np.ndarray, n_clients: int, *, seed: int, alpha: float) -> list[np.ndarray]:
    return PARTITIONERS.get(name)(groups, n_clients, seed=seed, alpha=alpha)
