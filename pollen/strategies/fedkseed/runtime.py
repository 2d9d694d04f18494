"""The full (non-PEFT) model a FedKSeed party tunes with zeroth-order steps, tagged with its version.

The global model is w_v = w_0 - lr * sum of the per-round accumulator deltas up to version v. A
`ZOModel` holds one such w_v: w_0 is the model as `pollen.models.load_model` gives it (deterministic
from disk and the run seed, so every party starts from the same bits) and `advance` replays deltas in
order. Only the parameters whose name matches `[fedkseed] params` (a regex, empty = all) are tuned;
the list order is `named_parameters()` order, which fixes what z(s) means on every party.

Clients keep ONE model per process (`process_model`): in simulation one Ray actor serves many nodes,
and since every node's starting point in a round is the same global model, one copy at the newest
version serves them all. The server builds its own (`load_zo_model`) for central evaluation.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pollen.compression.update import uses_codec
from pollen.config import PollenConfig
from pollen.data.clients import client_indices, data_for
from pollen.data.tokenize import Encoded, encode
from pollen.errors import ConfigError, DataError, PayloadError
from pollen.models import load_model
from pollen.strategies.fedkseed.seeds import candidate_seeds
from pollen.strategies.fedkseed.state import SeedDelta, advance


def select_params(model: torch.nn.Module, pattern: str) -> tuple[list[str], list[torch.Tensor]]:
    """Parameters whose name matches `pattern` (re.search; empty = all), in named_parameters order."""
    try:
        rx = re.compile(pattern) if pattern else None
    except re.error as e:
        raise ConfigError(f"config fedkseed.params: {pattern!r} is not a valid regex ({e})") from None
    named = [(n, p) for n, p in model.named_parameters() if rx is None or rx.search(n)]
    if not named:
        some = ", ".join(n for n, _ in list(model.named_parameters())[:4])
        raise ConfigError(f"config fedkseed.params: {pattern!r} matches no parameter of the model "
                          f"(names look like: {some}, ...)")
    return [n for n, _ in named], [p for _, p in named]


@dataclass
class ZOModel:
    cfg: PollenConfig
    model: torch.nn.Module
    tokenizer: Any
    task: str
    names: list[str]
    params: list[torch.Tensor]
    seeds: np.ndarray  # the K candidate seeds
    version: int = 0
    # Which run the version counts in (client processes may outlive a run in tests/deployments).
    run_id: int | None = None

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def numel(self) -> int:
        return sum(p.numel() for p in self.params)

    def advance(self, deltas: Sequence[SeedDelta]) -> None:
        """Replay the deltas after `self.version` in order; earlier ones are skipped, a gap raises."""
        todo = [d for d in deltas if d.base_version >= self.version]
        for d in todo:
            if d.base_version != self.version:
                raise PayloadError(f"delta {d.base_version}->{d.version} does not continue the model "
                                   f"at version {self.version}", field="deltas")
            advance(self.params, [d], self.seeds, self.cfg.fedkseed.lr, rng=self.cfg.fedkseed.rng)
            self.version = d.version

    def reset(self) -> None:
        """Back to w_0 (version 0): reload the tuned tensors from disk."""
        fresh = load_zo_model(self.cfg)
        with torch.no_grad():
            for p, q in zip(self.params, fresh.params, strict=True):
                p.copy_(q)
        self.version, self.run_id = 0, None


def load_zo_model(cfg: PollenConfig) -> ZOModel:
    data = data_for(cfg)
    lm = load_model(cfg.model.name, data.train.task, num_labels=data.num_labels or None,
                    seed=cfg.run.seed)
    lm.model.requires_grad_(False)  # no backward pass anywhere in this family
    names, params = select_params(lm.model, cfg.fedkseed.params)
    return ZOModel(cfg=cfg, model=lm.model, tokenizer=lm.tokenizer, task=lm.task, names=names,
                   params=params, seeds=candidate_seeds(cfg.fedkseed.k, cfg.run.seed))


@functools.lru_cache(maxsize=1)
def _process_model(cfg_json: str) -> ZOModel:
    return load_zo_model(PollenConfig.from_json(cfg_json))


def process_model(cfg: PollenConfig) -> ZOModel:
    """This process's one cached client model (at whatever version it last reached)."""
    return _process_model(cfg.to_json())


@functools.lru_cache(maxsize=4)
def _encoded(cfg_json: str, partition_id: int, num_partitions: int) -> Encoded:
    cfg = PollenConfig.from_json(cfg_json)
    idx = client_indices(cfg, partition_id, num_partitions)
    tok = _process_model(cfg_json).tokenizer
    return encode(data_for(cfg).train.subset(idx), tok, cfg.model.max_length)


def zo_client_data(cfg: PollenConfig, partition_id: int, num_partitions: int) -> Encoded:
    """A client's tokenised partition (cached per process, like the model)."""
    return _encoded(cfg.to_json(), partition_id, num_partitions)


def zo_eval_data(zm: ZOModel) -> Encoded:
    """The held-out split the server evaluates on, tokenised with the given model's tokenizer."""
    return encode(data_for(zm.cfg).eval, zm.tokenizer, zm.cfg.model.max_length)


def model_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The ZO objective: the model's own loss (response tokens only for causal LM)."""
    return model(**batch).loss


def preflight(cfg: PollenConfig) -> None:
    """Every client gets data, the model loads and the parameter regex selects something."""
    if uses_codec(cfg):
        raise ConfigError(f"compression.codec {cfg.compression.codec!r} does not apply to FedKSeed: "
                          "its replies are already a few bytes of (seed, scalar) pairs; leave it empty")
    if cfg.attack.name:
        raise ConfigError(f"attack {cfg.attack.name!r} acts on tensor updates; FedKSeed replies carry "
                          "scalar pairs, so attacks are not supported with this strategy")
    n = cfg.federation.clients
    for pid in range(n):
        if len(client_indices(cfg, pid, n)) == 0:
            raise DataError(f"client {pid} would get no data; use fewer clients")
    process_model(cfg)
