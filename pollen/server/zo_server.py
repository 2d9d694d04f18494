"""Server runner of the zo-seeds family (FedKSeed): rounds over Flower, central eval, final model.

The server keeps its own copy of the full model and moves it along the accumulator's per-round log
(the same replay every client does), so its evaluation sees exactly the clients' global model.
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
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid
from safetensors.numpy import save_file

from pollen.client.trainer import evaluate
from pollen.config import PollenConfig
from pollen.data.tokenize import batches
from pollen.errors import ConfigError
from pollen.io_utils import atomic_write_json
from pollen.server.inbound import ReplyScreen
from pollen.server.ledger import Ledger, plot_curves
from pollen.server.metered_grid import MeteredGrid
from pollen.server.rounds import close_round
from pollen.strategies import StrategyContext, build_strategy
from pollen.strategies.fedkseed import FedKSeed
from pollen.strategies.fedkseed_state import SeedAccumulator
from pollen.zo_runtime import ZOModel, load_zo_model, zo_eval_data

MODEL_DIR = "model"
STATE_FILE = "fedkseed_state.safetensors"
MANIFEST = "pollen_fedkseed.json"


class ZOEvaluation:
    """Flower's `evaluate_fn`: advance the server's model to the round's version, evaluate, log."""

    def __init__(self, cfg: PollenConfig, zm: ZOModel, acc: SeedAccumulator, ledger: Ledger) -> None:
        self.cfg, self.zm, self.acc, self.ledger = cfg, zm, acc, ledger
        self.eval_set = zo_eval_data(zm)

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        self.ledger.phase(server_round, "evaluate")
        version = int(arrays["version"].numpy()[0])
        self.zm.advance(self.acc.deltas_since(self.zm.version))
        if self.zm.version != version:
            raise ConfigError(f"server model at version {self.zm.version}, round {server_round} "
                              f"ended at {version}")
        res = evaluate(self.zm.model, batches(self.eval_set, 16, self.zm.pad_id, seed=0, shuffle=False),
                       self.zm.task)
        metrics: dict[str, float] = {"eval_loss": res.loss}
        if res.accuracy is not None:
            metrics["eval_accuracy"] = res.accuracy
        close_round(self.ledger, server_round, self.cfg.run.rounds, metrics,
                    allow_empty=self.cfg.run.allow_empty_rounds)
        return MetricRecord(metrics)


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


def record_rounds(strategy: FedKSeed, ledger: Ledger) -> None:
    """Ledger rows from the strategy's own verdicts: accepted clients, and replies it dropped."""
    inner = strategy.aggregate_train

    def aggregate_train(server_round: int, replies: Any) -> Any:
        arrays, metrics = inner(server_round, replies)
        ledger.dropped(len(strategy.dropped))
        loss = float(metrics["train_loss"]) if metrics is not None and "train_loss" in metrics else None
        ledger.train_result(clients=int(metrics["clients"]) if metrics is not None else 0,
                            train_loss=loss if loss is None or math.isfinite(loss) else None)
        return arrays, metrics

    strategy.aggregate_train = aggregate_train  # type: ignore[method-assign]


def run(grid: Grid, cfg: PollenConfig, out: Path) -> dict[str, Any]:
    ledger = Ledger(out, cfg.run.rounds)
    ledger.phase(0, "loading")
    zm = load_zo_model(cfg)
    strategy = build_strategy(StrategyContext(cfg=cfg, tensor_names=zm.names))
    if not isinstance(strategy, FedKSeed):
        raise ConfigError(f"strategy {cfg.strategy.name!r} is not a FedKSeed strategy")
    record_rounds(strategy, ledger)
    strategy.start(
        grid=MeteredGrid(grid, ledger, max_payload_bytes=cfg.compression.max_payload_bytes,
                         codec=cfg.compression.codec, screen=ReplyScreen.for_run(cfg)),
        initial_arrays=strategy.initial_arrays(),
        num_rounds=cfg.run.rounds,
        timeout=cfg.run.round_timeout,
        train_config=ConfigRecord(),
        evaluate_fn=ZOEvaluation(cfg, zm, strategy.acc, ledger),
    )
    zm.advance(strategy.acc.deltas_since(zm.version))
    save_final(zm, strategy.acc, out)
    plot_curves(ledger.rounds, out / "curves.png")
    ledger.phase(cfg.run.rounds, "done")
    return {"rounds": ledger.rounds, "accumulator": strategy.acc}
