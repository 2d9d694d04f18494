"""Server hooks of FRL: central evaluation of the voted ranking, rank-reversal attacks, final save.

Round 0 evaluates the initial scores S⁰; every round after the vote evaluates the global scores on the
server's held-out set (images: the first EVAL_IMAGES Fashion-MNIST test images, for speed; text:
data.eval_size held-out examples). The saved frl/ directory rebuilds the final model for a full test-set
evaluation (`evaluate_saved`). Bytes are the payload bytes counted by MeteredGrid (rankings + configs).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from pollen.attacks import select_attackers
from pollen.config import PollenConfig
from pollen.models.supermask import set_scores
from pollen.strategies.frl.artifacts import save_frl
from pollen.strategies.frl.attack import RankReversalGrid
from pollen.strategies.frl.core import scores_from_ranking
from pollen.strategies.frl.runtime import FRLRuntime, frl_runtime
from pollen.strategies.frl.strategy import FRLStrategy
from pollen.strategies.frl.train import TensorBatches, evaluate
from pollen.strategies.method import ServerSide, TrainResult

log = logging.getLogger("pollen.server")


def evaluate_rankings(rt: FRLRuntime, rankings: dict[str, torch.Tensor], x: np.ndarray, y: np.ndarray
                      ) -> tuple[float, float]:
    """(loss, accuracy) of the model whose scores follow `rankings`, on stored examples x, y."""
    set_scores(rt.model, {k: scores_from_ranking(rankings[k], rt.sorted_scores[k]) for k in rt.sizes})
    bs = 500 if rt.split.image else 64
    losses, correct, n = 0.0, 0.0, 0
    for start in range(0, len(y), 4 * bs):  # standardise images in slices, not all 10k at once
        xs, ys = rt.inputs(x[start:start + 4 * bs]), torch.from_numpy(y[start:start + 4 * bs])
        loss, acc = evaluate(rt.model, TensorBatches(xs, ys, bs, shuffle=False))
        losses, correct, n = losses + loss * len(ys), correct + acc * len(ys), n + len(ys)
    return losses / n, correct / n


class FRLServer(ServerSide):
    """Global rankings → scores → held-out loss/accuracy; the vote's accepted count goes to the ledger."""

    # Every round's checkpoint holds the global ranking (the arrays) and the strategy's state_dict
    # (score multiset + ranking); sampling, lr and client seeds derive from (seed, round) alone.
    resumable = True

    def __init__(self, cfg: PollenConfig) -> None:
        super().__init__(cfg)
        self.rt = frl_runtime(cfg)

    def tensor_names(self) -> list[str]:
        return list(self.rt.sizes)

    def initial_arrays(self, strategy: Strategy) -> ArrayRecord:
        assert isinstance(strategy, FRLStrategy)  # the registry pairs this method with its own strategy
        return strategy.initial_arrays()

    def attack_grid(self, grid: Grid) -> Grid | None:
        """Simulation attacks on FRL: colluding rank reversal (the only one defined on rankings)."""
        if self.cfg.attack.name != "rank-reversal":
            return grid
        attackers = select_attackers(self.cfg.federation.clients, self.cfg.attack.fraction, self.cfg.attack.seed)
        log.info("rank-reversal attackers (partition ids): %s", attackers)
        return RankReversalGrid(grid, attackers, self.rt.sizes)

    def train_result(self, strategy: Strategy, replies: list[Message], arrays: ArrayRecord | None,
                     metrics: MetricRecord | None) -> TrainResult:
        """The ledger's `clients` are the rankings that entered the vote, not every reply that arrived."""
        loss = None if metrics is None or "train_loss" not in metrics else float(metrics["train_loss"])
        return TrainResult(clients=int(metrics["accepted"]) if metrics is not None else 0,  # type: ignore[arg-type]
                           train_loss=loss)

    def evaluate(self, server_round: int, arrays: ArrayRecord) -> dict[str, float]:
        rankings = {k: torch.from_numpy(np.asarray(arrays[k].numpy(), dtype=np.int64)) for k in self.rt.sizes}
        loss, acc = evaluate_rankings(self.rt, rankings, self.rt.split.eval_x, self.rt.split.eval_y)
        return {"eval_loss": loss, "eval_accuracy": acc}

    def save(self, out: Path, strategy: Strategy, arrays: ArrayRecord, rows: list[dict[str, Any]],
             seconds: float) -> dict[str, Any]:
        assert isinstance(strategy, FRLStrategy)
        extra: dict[str, Any] = {"total_rounds": self.cfg.run.rounds, "seconds": round(seconds, 1),
                                 "eval_examples": len(self.rt.split.eval_y), "final": rows[-1]}
        save_frl(out, strategy.state, self.cfg, extra)
        return extra


def evaluate_saved(directory: str | Path) -> dict[str, float]:
    """Full held-out evaluation of a finished run's frl/ directory (images: all 10k test images)."""
    from pollen.strategies.frl.artifacts import load_frl_state

    state, cfg, _ = load_frl_state(directory)
    rt = frl_runtime(cfg)
    if rt.split.image:
        from pollen.data.fashion_mnist import load_fashion_mnist

        d = load_fashion_mnist()
        x, y = d.test_images, d.test_labels.astype(np.int64)
    else:
        x, y = rt.split.eval_x, rt.split.eval_y
    loss, acc = evaluate_rankings(rt, state.rankings, x, y)
    return {"examples": float(len(y)), "loss": loss, "accuracy": acc}
