"""Server runner of the PEFT family: FedPEFT and Flower's baselines over adapter tensors."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid

from pollen.client.trainer import evaluate
from pollen.config import PollenConfig
from pollen.data.tokenize import batches
from pollen.flower_glue import from_arrays, to_arrays
from pollen.models.peft_methods import load_trainable_state
from pollen.runtime import Runtime, eval_data, runtime
from pollen.server.artifacts import save_final
from pollen.server.checkpoint import (
    load_checkpoint,
    offset_evaluate_fn,
    offset_rounds,
    restore_strategy,
    save_checkpoint,
    set_rng_state,
)
from pollen.server.inbound import ReplyScreen
from pollen.server.ledger import Ledger, plot_curves
from pollen.server.metered_grid import MeteredGrid
from pollen.server.rounds import close_round, record_train_results, tolerate_dropouts
from pollen.strategies import StrategyContext, build_strategy

log = logging.getLogger("pollen.server")


class CentralEvaluation:
    """Flower's `evaluate_fn`: the global adapter on the held-out split, then the ledger row."""

    def __init__(self, cfg: PollenConfig, rt: Runtime, ledger: Ledger,
                 on_round_end: Callable[[int, ArrayRecord], None] | None = None) -> None:
        self.cfg, self.rt, self.ledger = cfg, rt, ledger
        self.eval_set = eval_data(cfg)
        self.on_round_end = on_round_end

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        self.ledger.phase(server_round, "evaluate")
        load_trainable_state(self.rt.model, from_arrays(arrays))
        res = evaluate(self.rt.model, batches(self.eval_set, 16, self.rt.pad_id, seed=0, shuffle=False),
                       self.rt.task)
        metrics: dict[str, float] = {"eval_loss": res.loss}
        if res.accuracy is not None:
            metrics["eval_accuracy"] = res.accuracy
        log.info("round %d: %s", server_round, close_round(
            self.ledger, server_round, self.cfg.run.rounds, metrics,
            allow_empty=self.cfg.run.allow_empty_rounds))
        if self.on_round_end is not None:
            self.on_round_end(server_round, arrays)
        return MetricRecord(metrics)


def run(grid: Grid, cfg: PollenConfig, out: Path, *, resume: bool = False) -> dict[str, Any]:
    ledger = Ledger(out, cfg.run.rounds)
    ledger.phase(0, "loading")
    rt = runtime(cfg)
    initial = rt.initial_state()
    strategy = build_strategy(StrategyContext(cfg=cfg, tensor_names=list(initial)))
    start = 0
    if resume:
        ckpt = load_checkpoint(out, cfg)
        start, initial = ckpt.round, ckpt.arrays
        ledger.rounds = list(ckpt.rows)
        set_rng_state(ckpt.rng)
        restore_strategy(strategy, ckpt)
        log.info("resuming after round %d of %d", start, cfg.run.rounds)
        ledger.phase(start + 1, "train", resumed_from=start)
    record_train_results(strategy, ledger)
    served: Grid = MeteredGrid(grid, ledger, max_payload_bytes=cfg.compression.max_payload_bytes,
                               codec=cfg.compression.codec, screen=ReplyScreen.for_run(cfg))
    if cfg.attack.name:  # robustness studies: play the configured attackers on the replies
        from pollen.simulations.attack_grid import AttackGrid

        served = AttackGrid(served, cfg)
    tolerate_dropouts(strategy, cfg, first_round=start + 1)
    offset_rounds(strategy, start)

    def checkpoint(server_round: int, arrays: ArrayRecord) -> None:
        save_checkpoint(out, cfg, server_round, from_arrays(arrays), ledger.rounds, strategy)

    evaluate_fn = CentralEvaluation(cfg, rt, ledger, on_round_end=checkpoint)
    result = strategy.start(
        grid=served,
        initial_arrays=to_arrays(initial),
        num_rounds=cfg.run.rounds - start,
        timeout=cfg.run.round_timeout,
        train_config=ConfigRecord({"lr": cfg.train.lr, "local-steps": cfg.train.local_steps}),
        evaluate_fn=offset_evaluate_fn(evaluate_fn, start, resumed=resume),
    )
    final = result.arrays if result.arrays is not None and len(result.arrays) else to_arrays(initial)
    load_trainable_state(rt.model, from_arrays(final))
    save_final(rt, out)
    plot_curves(ledger.rounds, out / "curves.png")
    ledger.phase(cfg.run.rounds, "done")
    return {"rounds": ledger.rounds}
