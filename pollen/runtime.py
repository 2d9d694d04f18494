"""What one process needs to take part in a run: the PEFT model, the tokenizer and its data.

Built once per process and config (Ray actors and server processes live across rounds), so each
round costs training, not loading.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pollen.config import PollenConfig
from pollen.data import FederatedData, load_dataset, partition
from pollen.data.tokenize import Encoded, encode
from pollen.models import apply_peft, load_model
from pollen.models.peft_methods import trainable_state
from pollen.simulations.poison import poison_client_data


@dataclass
class Runtime:
    cfg: PollenConfig
    model: torch.nn.Module
    tokenizer: Any
    task: str
    data: FederatedData

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    def initial_state(self) -> dict[str, np.ndarray]:
        return trainable_state(self.model)


@functools.lru_cache(maxsize=2)
def _data(name: str, eval_size: int, seed: int) -> FederatedData:
    return load_dataset(name, eval_size=eval_size, seed=seed)


def data_for(cfg: PollenConfig) -> FederatedData:
    return _data(cfg.data.name, cfg.data.eval_size, cfg.run.seed)


def client_indices(cfg: PollenConfig, partition_id: int, num_partitions: int) -> np.ndarray:
    data = data_for(cfg)
    scheme = cfg.data.partition
    if scheme == "auto":
        scheme = "natural" if data.natural_groups else "dirichlet"
    parts = partition(scheme, data.train.groups, num_partitions,
                      seed=cfg.run.seed, alpha=cfg.data.alpha)
    idx = parts[partition_id]
    cap = cfg.data.max_client_examples
    if cap and len(idx) > cap:
        idx = np.sort(np.random.default_rng(cfg.run.seed + partition_id).choice(idx, cap, replace=False))
    return idx


def partition_sizes(cfg: PollenConfig) -> list[int]:
    """Training examples of every client's partition (what an honest client claims, or fewer)."""
    n = cfg.federation.clients
    return [len(client_indices(cfg, pid, n)) for pid in range(n)]


@functools.lru_cache(maxsize=1)
def _runtime(cfg_json: str) -> Runtime:
    cfg = PollenConfig.from_json(cfg_json)
    data = data_for(cfg)
    lm = load_model(cfg.model.name, data.train.task, num_labels=data.num_labels or None,
                    seed=cfg.run.seed)
    torch.manual_seed(cfg.run.seed)  # identical PEFT init on every party
    model = apply_peft(lm.model, cfg.model, lm.task)
    return Runtime(cfg=cfg, model=model, tokenizer=lm.tokenizer, task=lm.task, data=data)


def runtime(cfg: PollenConfig) -> Runtime:
    return _runtime(cfg.to_json())


@functools.lru_cache(maxsize=4)
def _encoded(cfg_json: str, partition_id: int, num_partitions: int) -> Encoded:
    cfg = PollenConfig.from_json(cfg_json)
    rt = _runtime(cfg_json)
    if partition_id < 0:
        return encode(rt.data.eval, rt.tokenizer, cfg.model.max_length)
    idx = client_indices(cfg, partition_id, num_partitions)
    # Data-side attackers (attack = labelflip) train on poisoned labels; everyone else gets the split.
    ds = poison_client_data(cfg, partition_id, rt.data.train.subset(idx), rt.data.num_labels)
    return encode(ds, rt.tokenizer, cfg.model.max_length)


def client_data(cfg: PollenConfig, partition_id: int, num_partitions: int) -> Encoded:
    return _encoded(cfg.to_json(), partition_id, num_partitions)


def eval_data(cfg: PollenConfig) -> Encoded:
    return _encoded(cfg.to_json(), -1, 0)


def preflight(cfg: PollenConfig) -> None:
    """Every client gets data and the model loads (which also warms its cache)."""
    from pollen.errors import DataError
    from pollen.simulations.attack_grid import check_attack

    check_attack(cfg)  # unknown attack names / parameters fail before any process starts
    n = cfg.federation.clients
    for pid in range(n):
        if len(client_indices(cfg, pid, n)) == 0:
            raise DataError(f"client {pid} would get no data; use fewer clients")
    rt = runtime(cfg)
    # The strategy factory validates [strategy.params] against the federation (e.g. flag's m).
    from pollen.strategies import StrategyContext, build_strategy

    build_strategy(StrategyContext(cfg=cfg, tensor_names=list(rt.initial_state())))
