"""Server hooks of FedPEFT (also used by FLAG and Flower's baselines): adapter tensors, central eval, save."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp.strategy import Strategy

from pollen.config import PollenConfig
from pollen.data.tokenize import batches
from pollen.models.train import evaluate
from pollen.protocol.records import from_arrays, to_arrays
from pollen.strategies.fedpeft import downlink
from pollen.strategies.fedpeft.artifacts import save_final, save_round_adapter
from pollen.strategies.fedpeft.downlink import DownlinkServer
from pollen.strategies.fedpeft.lora_exact import load_global, save_residual
from pollen.strategies.fedpeft.runtime import eval_data, runtime
from pollen.strategies.method import ServerSide


class PeftServer(ServerSide):
    """The global adapter lives in the server's own PEFT model; evaluation loads it into that model."""

    resumable = True
    tolerate_dropouts = True
    supports_codec_down = True

    def __init__(self, cfg: PollenConfig) -> None:
        super().__init__(cfg)
        self.rt = runtime(cfg)
        self.initial = self.rt.initial_state()
        self.eval_set = eval_data(cfg)
        self._down: DownlinkServer | None = None

    def tensor_names(self) -> list[str]:
        return list(self.initial)

    def initial_arrays(self, strategy: Strategy) -> ArrayRecord:
        return to_arrays(self.initial)

    def downlink(self) -> DownlinkServer | None:
        """Compressed deltas to clients that keep the global state (compression.codec_down)."""
        c = self.cfg.compression
        if not downlink.enabled(c.codec_down):
            return None
        self._down = DownlinkServer(c.codec_down, self.initial, history=c.down_history)
        return self._down

    def train_config(self) -> ConfigRecord:
        return ConfigRecord({"lr": self.cfg.train.lr, "local-steps": self.cfg.train.local_steps})

    def evaluate(self, server_round: int, arrays: ArrayRecord) -> dict[str, float]:
        """The server's global x_t; with a compressed down-link also the reference x̂_t that clients
        reconstruct and train the next round from (`down_eval_*`), and how far apart the two are
        (`down_gap` = ||x_t − x̂_t|| / ||x_t − x_0||)."""
        state = from_arrays(arrays)
        metrics = self._evaluate(state)
        if self._down is not None:
            self._down.advance(state)  # what the next round sends; that send reuses it
            assert self._down.ref is not None
            same = self._down.residual_norm() == 0.0  # e.g. round 0: nothing to evaluate twice
            ref_metrics = dict(metrics) if same else self._evaluate(self._down.ref)
            metrics.update({f"down_{k}": v for k, v in ref_metrics.items()})
            moved = float(np.sqrt(sum(float(((state[k].astype(np.float64) - v) ** 2).sum())
                                      for k, v in self.initial.items() if k in state)))
            metrics["down_gap"] = self._down.residual_norm() / moved if moved > 0 else 0.0
        return metrics

    def _evaluate(self, state: dict[str, np.ndarray]) -> dict[str, float]:
        load_global(self.rt.model, state)  # adapter, plus any exact-LoRA residual
        res = evaluate(self.rt.model, batches(self.eval_set, 16, self.rt.pad_id, seed=0, shuffle=False),
                       self.rt.task)
        return res.metrics()

    def save_round(self, out: Path, server_round: int, arrays: ArrayRecord) -> None:
        if self.cfg.run.keep_round_adapters:
            state = from_arrays(arrays)
            load_global(self.rt.model, state)
            target = save_round_adapter(self.rt, out, server_round, keep=self.cfg.run.keep_round_adapters)
            save_residual(self.rt.model, state, target)  # exact LoRA: the round's model needs it too

    def save(self, out: Path, strategy: Strategy, arrays: ArrayRecord, rows: list[dict[str, Any]],
             seconds: float) -> dict[str, Any]:
        state = from_arrays(arrays)
        load_global(self.rt.model, state)
        # lora_aggregation = "exact": the adapter alone is not the model; its residual goes beside it.
        save_residual(self.rt.model, state, save_final(self.rt, out, rows))
        return {}
