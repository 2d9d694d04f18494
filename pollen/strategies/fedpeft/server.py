"""Server hooks of FedPEFT (also used by FLAG and Flower's baselines): adapter tensors, central eval, save."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp.strategy import Strategy

from pollen.config import PollenConfig
from pollen.data.tokenize import batches
from pollen.models.train import evaluate
from pollen.protocol.records import from_arrays, to_arrays
from pollen.strategies.fedpeft.artifacts import save_final
from pollen.strategies.fedpeft.lora_exact import load_global, save_residual
from pollen.strategies.fedpeft.runtime import eval_data, runtime
from pollen.strategies.method import ServerSide


class PeftServer(ServerSide):
    """The global adapter lives in the server's own PEFT model; evaluation loads it into that model."""

    resumable = True
    tolerate_dropouts = True

    def __init__(self, cfg: PollenConfig) -> None:
        super().__init__(cfg)
        self.rt = runtime(cfg)
        self.initial = self.rt.initial_state()
        self.eval_set = eval_data(cfg)

    def tensor_names(self) -> list[str]:
        return list(self.initial)

    def initial_arrays(self, strategy: Strategy) -> ArrayRecord:
        return to_arrays(self.initial)

    def train_config(self) -> ConfigRecord:
        return ConfigRecord({"lr": self.cfg.train.lr, "local-steps": self.cfg.train.local_steps})

    def evaluate(self, server_round: int, arrays: ArrayRecord) -> dict[str, float]:
        load_global(self.rt.model, from_arrays(arrays))  # adapter, plus any exact-LoRA residual
        res = evaluate(self.rt.model, batches(self.eval_set, 16, self.rt.pad_id, seed=0, shuffle=False),
                       self.rt.task)
        return res.metrics()

    def save(self, out: Path, strategy: Strategy, arrays: ArrayRecord, rows: list[dict[str, Any]],
             seconds: float) -> dict[str, Any]:
        state = from_arrays(arrays)
        load_global(self.rt.model, state)
        # lora_aggregation = "exact": the adapter alone is not the model; its residual goes beside it.
        save_residual(self.rt.model, state, save_final(self.rt, out))
        return {}
