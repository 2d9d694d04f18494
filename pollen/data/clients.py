"""Which examples each client holds: the run's dataset (cached per process) and its seeded split."""

from __future__ import annotations

import numpy as np

from pollen.config import PollenConfig
from pollen.data.load import load_dataset
from pollen.data.partition import partition
from pollen.data.registry import FederatedData
from pollen.protocol.seeding import cap_indices
from pollen.registry import process_cache


@process_cache(maxsize=2)
def _data(name: str, eval_size: int, seed: int) -> FederatedData:
    return load_dataset(name, eval_size=eval_size, seed=seed)


def data_for(cfg: PollenConfig) -> FederatedData:
    return _data(cfg.data.name, cfg.data.eval_size, cfg.run.seed)


def client_indices(cfg: PollenConfig, partition_id: int, num_partitions: int) -> np.ndarray:
    """Training-example indices of one client ("auto": natural groups if the data has them, else Dirichlet)."""
    data = data_for(cfg)
    scheme = cfg.data.partition
    if scheme == "auto":
        scheme = "natural" if data.natural_groups else "dirichlet"
    parts = partition(scheme, data.train.groups, num_partitions,
                      seed=cfg.run.seed, alpha=cfg.data.alpha)
    return cap_indices(parts[partition_id], cfg.data.max_client_examples, cfg.run.seed, partition_id)


def partition_sizes(cfg: PollenConfig) -> list[int]:
    """Training examples of every client's partition (what an honest client claims, or fewer)."""
    n = cfg.federation.clients
    return [len(client_indices(cfg, pid, n)) for pid in range(n)]
