"""The full (non-PEFT) model a FedKSeed party tunes with zeroth-order steps, tagged with its version.

The global model is w_v = w_0 - lr * sum_j A_v[j] z(s_j). A `ZOModel` holds one such w_v and a copy
of w_0 (the tuned tensors as `pollen.models.load_model` gives them: deterministic from disk and the
run seed, so every party starts from the same bits); `load_accumulator` rebuilds w_v from w_0 and
A_v with `state.rebuild`, the one computation every party uses, so equal A_v means equal bits.
Only the parameters whose name matches `[fedkseed] params` (a regex, empty = all) are tuned; the
list order is `named_parameters()` order, which fixes what z(s) means on every party.

Clients keep ONE model per process (`process_model`): in simulation one Ray actor serves many nodes,
and since every node's starting point in a round is the same global model, one copy at the newest
version serves them all. The server builds its own (`load_zo_model`) for central evaluation.
"""

from __future__ import annotations

import re
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
from pollen.models.train import lm_loss
from pollen.registry import process_cache
from pollen.strategies.fedkseed.seeds import candidate_seeds
from pollen.strategies.fedkseed.state import rebuild


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
    w0: list[torch.Tensor]  # the tuned tensors at version 0 (kept: every version is rebuilt from them)
    version: int = 0
    # The accumulator the weights were rebuilt from (None: w_0 itself).
    A: np.ndarray | None = None

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def numel(self) -> int:
        return sum(p.numel() for p in self.params)

    def load_accumulator(self, a: np.ndarray, version: int) -> None:
        """Become w_version = rebuild(w_0, A): a no-op when these weights already came from the same A."""
        a = np.asarray(a, np.float32)
        if a.shape != self.seeds.shape:
            raise PayloadError(f"accumulator has shape {a.shape}, need {self.seeds.shape}", field="A")
        if self.A is not None and self.version == version and np.array_equal(self.A, a):
            return
        # no_grad, not inference_mode: apply_seeds fills buffers on worker threads, where an
        # inference-mode tensor made on this thread may not be written.
        with torch.no_grad():
            rebuild(self.params, self.w0, a, self.seeds, self.cfg.fedkseed.lr, rng=self.cfg.fedkseed.rng)
        self.A, self.version = a.copy(), version


def load_zo_model(cfg: PollenConfig) -> ZOModel:
    data = data_for(cfg)
    lm = load_model(cfg.model.name, data.train.task, num_labels=data.num_labels or None,
                    seed=cfg.run.seed)
    lm.model.requires_grad_(False)  # no backward pass anywhere in this family
    names, params = select_params(lm.model, cfg.fedkseed.params)
    return ZOModel(cfg=cfg, model=lm.model, tokenizer=lm.tokenizer, task=lm.task, names=names,
                   params=params, seeds=candidate_seeds(cfg.fedkseed.k, cfg.run.seed),
                   w0=[p.detach().clone() for p in params])


@process_cache(maxsize=1)
def _process_model(cfg_json: str) -> ZOModel:
    return load_zo_model(PollenConfig.from_json(cfg_json))


def process_model(cfg: PollenConfig) -> ZOModel:
    """This process's one cached client model (at whatever version it last reached)."""
    return _process_model(cfg.to_json())


@process_cache(maxsize=4)
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
    """The ZO objective: the model's own loss (response tokens only for causal LM, projected onto the
    vocabulary only there: `pollen.models.train.lm_loss`)."""
    if batch["labels"].dim() == 2:
        return lm_loss(model, batch)[0]
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
