"""Server hooks of FedKSeed: central evaluation on the server's own rebuilt model, final model save.

The server keeps its own copy of the full model and rebuilds it from w_0 and the accumulator with the
same call every client uses (`ZOModel.load_accumulator`), so its evaluation sees exactly, bit for bit,
the clients' global model. The strategy's state (accumulator, per-round log, Pro statistics) is
checkpointed every round, so `pollen server --resume` works (`resumable`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from safetensors.numpy import save_file

from pollen.config import PollenConfig
from pollen.data.tokenize import batches
from pollen.errors import ConfigError
from pollen.io_utils import atomic_write_json
from pollen.models.train import evaluate
from pollen.strategies.fedkseed.runtime import ZOModel, load_zo_model, zo_eval_data
from pollen.strategies.fedkseed.state import SeedAccumulator
from pollen.strategies.fedkseed.strategy import FedKSeed
from pollen.strategies.method import ServerSide, TrainResult

MODEL_DIR = "model"
STATE_FILE = "fedkseed_state.safetensors"
MANIFEST = "pollen_fedkseed.json"


def save_final(zm: ZOModel, acc: SeedAccumulator, out: Path) -> Path:
    """OUT/model: the full tuned model (HF safetensors + tokenizer), the accumulator, a manifest.

    Built in a temporary directory and renamed into place, so a reader never sees half a model.
    """
    target = out / MODEL_DIR
    tmp = Path(tempfile.mkdtemp(prefix=f".{MODEL_DIR}.", dir=out))
    try:
        zm.model.save_pretrained(tmp, safe_serialization=True)
        zm.tokenizer.save_pretrained(tmp)
        state = acc.state_dict()
        arrays = {k: np.ascontiguousarray(v) for k, v in state.items() if isinstance(v, np.ndarray)}
        save_file(arrays, str(tmp / STATE_FILE))
        atomic_write_json(tmp / MANIFEST, {
            "method": "fedkseed-pro" if acc.pro else "fedkseed", "model": zm.cfg.model.name,
            "version": zm.version, "rng": zm.cfg.fedkseed.rng, "eps": zm.cfg.fedkseed.eps,
            "params_regex": zm.cfg.fedkseed.params, "tuned": zm.names,
            "accumulator": {k: v for k, v in state.items() if not isinstance(v, np.ndarray)},
            "config": json.loads(zm.cfg.to_json()),
        })
        if target.exists():
            old = out / f".{MODEL_DIR}.old-{os.getpid()}"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


class ZOServer(ServerSide):
    """The server keeps a full model and rebuilds it from the accumulator before evaluating."""

    resumable = True

    def __init__(self, cfg: PollenConfig) -> None:
        super().__init__(cfg)
        self.zm = load_zo_model(cfg)
        self.eval_set = zo_eval_data(self.zm)
        self.acc: SeedAccumulator | None = None

    def tensor_names(self) -> list[str]:
        return self.zm.names

    def initial_arrays(self, strategy: Strategy) -> ArrayRecord:
        assert isinstance(strategy, FedKSeed)  # the registry pairs this method with its own strategies
        self.acc = strategy.acc
        return strategy.initial_arrays()

    def attack_grid(self, grid: Grid) -> Grid | None:
        """No attacks: they act on tensor updates and FedKSeed replies carry scalar pairs (preflight refuses)."""
        return grid

    def train_result(self, strategy: Strategy, replies: list[Message], arrays: ArrayRecord | None,
                     metrics: MetricRecord | None) -> TrainResult:
        """Ledger rows from the strategy's own verdicts: accepted clients, and replies it dropped."""
        assert isinstance(strategy, FedKSeed)
        loss = float(metrics["train_loss"]) if metrics is not None and "train_loss" in metrics else None
        return TrainResult(clients=int(metrics["clients"]) if metrics is not None else 0,  # type: ignore[arg-type]
                           train_loss=loss if loss is None or math.isfinite(loss) else None,
                           dropped=len(strategy.dropped))

    def evaluate(self, server_round: int, arrays: ArrayRecord) -> dict[str, float]:
        """Advance the server's model to the round's version, then evaluate it."""
        assert self.acc is not None
        version = int(arrays["version"].numpy()[0])
        if self.acc.version != version:
            raise ConfigError(f"server accumulator at version {self.acc.version}, round {server_round} "
                              f"ended at {version}")
        self.zm.load_accumulator(self.acc.A, self.acc.version)
        res = evaluate(self.zm.model, batches(self.eval_set, 16, self.zm.pad_id, seed=0, shuffle=False),
                       self.zm.task)
        return res.metrics()

    def save(self, out: Path, strategy: Strategy, arrays: ArrayRecord, rows: list[dict[str, Any]],
             seconds: float) -> dict[str, Any]:
        assert isinstance(strategy, FedKSeed)
        self.zm.load_accumulator(strategy.acc.A, strategy.acc.version)
        save_final(self.zm, strategy.acc, out)
        return {"accumulator": strategy.acc}
