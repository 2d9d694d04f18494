"""What one process needs to take part in a run: the PEFT model, the tokenizer and its data.

Built once per process and config (Ray actors and server processes live across rounds), so each
round costs training, not loading.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pollen.attacks.poison import poison_client_data
from pollen.config import PollenConfig
from pollen.data import FederatedData
from pollen.data.clients import client_indices, data_for
from pollen.data.tokenize import Encoded, encode
from pollen.models import apply_peft, load_model
from pollen.models.peft_methods import trainable_state
from pollen.models.train import enable_gradient_checkpointing
from pollen.registry import process_cache


@dataclass
class Runtime:
    cfg: PollenConfig
    model: torch.nn.Module
    tokenizer: Any
    task: str
    data: FederatedData
    # The trainable tensors right after PEFT wrapping: deterministic from (model, PEFT config, seed).
    # A snapshot, because training in this process changes the model (a simulation worker serves
    # many clients); the down-link lets clients build it instead of receiving it.
    initial: dict[str, np.ndarray]

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    def initial_state(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self.initial.items()}


@process_cache(maxsize=1)
def _runtime(cfg_json: str) -> Runtime:
    cfg = PollenConfig.from_json(cfg_json)
    data = data_for(cfg)
    lm = load_model(cfg.model.name, data.train.task, num_labels=data.num_labels or None,
                    seed=cfg.run.seed)
    torch.manual_seed(cfg.run.seed)  # identical PEFT init on every party
    model = apply_peft(lm.model, cfg.model, lm.task)
    if cfg.train.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return Runtime(cfg=cfg, model=model, tokenizer=lm.tokenizer, task=lm.task, data=data,
                   initial=trainable_state(model))


def runtime(cfg: PollenConfig) -> Runtime:
    return _runtime(cfg.to_json())


@process_cache(maxsize=4)
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
    from pollen.attacks import check_attack
    from pollen.errors import DataError

    check_attack(cfg)  # unknown attack names / parameters fail before any process starts
    n = cfg.federation.clients
    for pid in range(n):
        if len(client_indices(cfg, pid, n)) == 0:
            raise DataError(f"client {pid} would get no data; use fewer clients")
    rt = runtime(cfg)
    # The strategy factory validates [strategy.params] against the federation (e.g. flag's m).
    from pollen.strategies.registry import StrategyContext, build_strategy

    build_strategy(StrategyContext(cfg=cfg, tensor_names=list(rt.initial_state())))
