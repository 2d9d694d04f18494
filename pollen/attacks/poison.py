"""Data-side poisoning: what an attacking client trains on under a data-side attack (`labelflip`).

The attacker runs the ordinary client code on poisoned data and sends its resulting update unchanged,
so nothing on the wire distinguishes it. Classification: all-to-all flip y' = C−1−y (spec §8).
Causal LM (no labels to flip): responses are permuted across the client's own examples so that no
example keeps its own response ("replace responses with those of another example", spec §8).
Who attacks is `select_attackers(clients, attack.fraction, attack.seed)` by partition id, the same
set the server-side AttackGrid uses.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pollen.attacks import ATTACKS, flip_labels, select_attackers
from pollen.config import PollenConfig
from pollen.data.registry import TextDataset
from pollen.errors import ConfigError

DATA_SIDE = ("labelflip",)


def attacker_ids(cfg: PollenConfig) -> list[int]:
    """Sorted partition ids of the attacking clients ([] when no attack is configured)."""
    if not cfg.attack.name:
        return []
    return select_attackers(cfg.federation.clients, cfg.attack.fraction, cfg.attack.seed)


def poison_dataset(ds: TextDataset, num_labels: int, seed: int) -> TextDataset:
    """The poisoned copy of a client's training examples (the input is left untouched)."""
    if ds.task == "seq-cls":
        if ds.labels is None:
            raise ConfigError("label flipping needs a labelled (seq-cls) dataset")
        return dataclasses.replace(ds, labels=flip_labels(np.asarray(ds.labels), num_labels))
    n = len(ds.responses)
    if n < 2:
        return ds  # one example has no other response to take: the attacker trains honestly
    perm = np.random.default_rng(seed).permutation(n)
    donor = np.empty(n, dtype=np.int64)
    donor[perm] = np.roll(perm, -1)  # a single cycle through all examples: no fixed point
    return dataclasses.replace(ds, responses=[ds.responses[int(j)] for j in donor])


def poison_client_data(cfg: PollenConfig, partition_id: int, ds: TextDataset,
                       num_labels: int) -> TextDataset:
    """`ds` itself for benign clients and update-side attacks; the poisoned copy for data-side attackers."""
    if not cfg.attack.name or not ATTACKS.get(cfg.attack.name).data_side:
        return ds
    if cfg.attack.name not in DATA_SIDE:
        raise ConfigError(f"data-side attack {cfg.attack.name!r} has no client-side implementation; "
                          f"implemented: {', '.join(DATA_SIDE)}")
    if partition_id not in attacker_ids(cfg):
        return ds
    return poison_dataset(ds, num_labels, seed=cfg.attack.seed * 1_000_003 + partition_id)
