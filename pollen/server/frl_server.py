"""Server runner of the supermask family (FRL): vote rounds, central evaluation, ledger, final save.

Round 0 evaluates the initial scores S⁰; every round after the vote evaluates the global scores on the
server's held-out set (images: the first EVAL_IMAGES Fashion-MNIST test images, for speed; text:
data.eval_size held-out examples). The saved frl/ directory rebuilds the final model for a full test-set
evaluation (`evaluate_saved`). Bytes are the payload bytes counted by MeteredGrid (rankings + configs).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid

from pollen.client.supermask_trainer import TensorBatches, evaluate
from pollen.config import PollenConfig
from pollen.errors import ConfigError
from pollen.frl_runtime import FRLRuntime, frl_runtime
from pollen.models.supermask import set_scores
from pollen.server.frl_artifacts import save_frl
from pollen.server.inbound import ReplyScreen
from pollen.server.ledger import Ledger, plot_curves
from pollen.server.metered_grid import MeteredGrid
from pollen.server.rounds import close_round, record_train_results
from pollen.strategies import StrategyContext, build_strategy
from pollen.strategies.frl import FRLStrategy
from pollen.strategies.frl_core import scores_from_ranking

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


class FRLEvaluation:
    """Flower's `evaluate_fn`: the global ranking → scores → held-out loss/accuracy → ledger row."""

    def __init__(self, cfg: PollenConfig, rt: FRLRuntime, ledger: Ledger) -> None:
        self.cfg, self.rt, self.ledger = cfg, rt, ledger

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        self.ledger.phase(server_round, "evaluate")
        rankings = {k: torch.from_numpy(np.asarray(arrays[k].numpy(), dtype=np.int64)) for k in self.rt.sizes}
        loss, acc = evaluate_rankings(self.rt, rankings, self.rt.split.eval_x, self.rt.split.eval_y)
        metrics = {"eval_loss": loss, "eval_accuracy": acc}
        log.info("round %d: %s", server_round,
                 close_round(self.ledger, server_round, self.cfg.run.rounds, metrics,
                             allow_empty=self.cfg.run.allow_empty_rounds))
        return MetricRecord(metrics)


def _count_accepted(strategy: FRLStrategy, ledger: Ledger) -> None:
    """The ledger's `clients` are the rankings that entered the vote, not every reply that arrived."""
    inner = strategy.aggregate_train

    def aggregate_train(server_round: int, replies: Any) -> Any:
        arrays, metrics = inner(server_round, replies)
        loss = None if metrics is None or "train_loss" not in metrics else float(metrics["train_loss"])
        ledger.train_result(clients=int(metrics["accepted"]) if metrics is not None else 0, train_loss=loss)
        return arrays, metrics

    strategy.aggregate_train = aggregate_train  # type: ignore[method-assign]


def attack_grid(grid: Grid, cfg: PollenConfig, rt: FRLRuntime) -> Grid:
    """Simulation attacks on FRL: colluding rank reversal (the only one defined on rankings)."""
    if cfg.attack.name != "rank-reversal":
        return grid
    from pollen.simulations.attacks import select_attackers
    from pollen.simulations.frl_attack import RankReversalGrid

    attackers = select_attackers(cfg.federation.clients, cfg.attack.fraction, cfg.attack.seed)
    log.info("rank-reversal attackers (partition ids): %s", attackers)
    return RankReversalGrid(grid, attackers, rt.sizes)


def run(grid: Grid, cfg: PollenConfig, out: Path) -> dict[str, Any]:
    ledger = Ledger(out, cfg.run.rounds)
    ledger.phase(0, "loading")
    rt = frl_runtime(cfg)
    strategy = build_strategy(StrategyContext(cfg=cfg, tensor_names=list(rt.sizes)))
    if not isinstance(strategy, FRLStrategy):
        raise ConfigError(f"strategy {cfg.strategy.name!r} is not an FRL strategy")
    record_train_results(strategy, ledger)
    _count_accepted(strategy, ledger)
    t0 = time.monotonic()
    strategy.start(
        grid=MeteredGrid(attack_grid(grid, cfg, rt), ledger,
                         max_payload_bytes=cfg.compression.max_payload_bytes,
                         codec=cfg.compression.codec, screen=ReplyScreen.for_run(cfg)),
        initial_arrays=strategy.initial_arrays(),
        num_rounds=cfg.run.rounds,
        timeout=cfg.run.round_timeout,
        train_config=ConfigRecord(),
        evaluate_fn=FRLEvaluation(cfg, rt, ledger),
    )
    extra: dict[str, Any] = {"total_rounds": cfg.run.rounds, "seconds": round(time.monotonic() - t0, 1),
                             "eval_examples": len(rt.split.eval_y), "final": ledger.rounds[-1]}
    save_frl(out, strategy.state, cfg, extra)
    plot_curves(ledger.rounds, out / "curves.png")
    ledger.phase(cfg.run.rounds, "done")
    return {"rounds": ledger.rounds, **extra}


def evaluate_saved(directory: str | Path) -> dict[str, float]:
    """Full held-out evaluation of a finished run's frl/ directory (images: all 10k test images)."""
    from pollen.server.frl_artifacts import load_frl_state

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
