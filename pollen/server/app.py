"""The Flower ServerApp: run the configured strategy, evaluate centrally, keep the ledger."""

from __future__ import annotations

import logging
import math
import traceback
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from pollen.client.trainer import evaluate
from pollen.config import PollenConfig
from pollen.data.tokenize import batches
from pollen.errors import PollenError
from pollen.flower_glue import OUT_KEY, config_from_context, from_arrays, to_arrays
from pollen.models.peft_methods import load_trainable_state
from pollen.runtime import Runtime, eval_data, runtime
from pollen.server.artifacts import save_final
from pollen.server.ledger import Ledger, plot_curves
from pollen.server.metered_grid import MeteredGrid
from pollen.strategies import StrategyContext, build_strategy

log = logging.getLogger("pollen.server")
app = ServerApp()


class RoundRecorder:
    """Hooks Flower's strategy loop: train metrics per round, central evaluation, ledger rows."""

    def __init__(self, cfg: PollenConfig, rt: Runtime, ledger: Ledger) -> None:
        self.cfg, self.rt, self.ledger = cfg, rt, ledger
        self.eval_set = eval_data(cfg)

    def evaluate(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        self.ledger.phase(server_round, "evaluate")
        load_trainable_state(self.rt.model, from_arrays(arrays))
        res = evaluate(self.rt.model, batches(self.eval_set, 16, self.rt.pad_id, seed=0, shuffle=False),
                       self.rt.task)
        metrics: dict[str, float] = {"eval_loss": res.loss}
        if res.accuracy is not None:
            metrics["eval_accuracy"] = res.accuracy
        row = self.ledger.close_round(server_round, metrics)
        log.info("round %d: %s", server_round, row)
        if server_round < self.cfg.run.rounds:
            self.ledger.phase(server_round + 1, "train")
        return MetricRecord(metrics)


def _wrap_aggregate(strategy: Any, ledger: Ledger) -> None:
    """Record accepted clients and their mean train loss without subclassing every strategy."""
    inner = strategy.aggregate_train

    def aggregate_train(server_round: int, replies: Any) -> Any:
        replies = list(replies)
        arrays, metrics = inner(server_round, replies)
        ok = [m for m in replies if not m.has_error()]
        loss = None
        if metrics is not None and "train_loss" in metrics:
            loss = float(metrics["train_loss"])
        ledger.train_result(clients=len(ok) if arrays is not None else 0,
                            train_loss=loss if loss is None or math.isfinite(loss) else None)
        return arrays, metrics

    strategy.aggregate_train = aggregate_train


def run_server(grid: Grid, cfg: PollenConfig, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.run.seed)
    ledger = Ledger(out, cfg.run.rounds)
    ledger.phase(0, "loading")
    rt = runtime(cfg)
    initial = rt.initial_state()
    strategy = build_strategy(StrategyContext(cfg=cfg, tensor_names=list(initial)))
    _wrap_aggregate(strategy, ledger)
    recorder = RoundRecorder(cfg, rt, ledger)
    served: Grid = MeteredGrid(grid, ledger)
    if cfg.attack.name:  # robustness studies: play the configured attackers on the replies
        from pollen.simulations.attack_grid import AttackGrid

        served = AttackGrid(served, cfg)
    result = strategy.start(
        grid=served,
        initial_arrays=to_arrays(initial),
        num_rounds=cfg.run.rounds,
        timeout=cfg.run.round_timeout,
        train_config=ConfigRecord({"lr": cfg.train.lr, "local-steps": cfg.train.local_steps}),
        evaluate_fn=recorder.evaluate,
    )
    final = result.arrays if result.arrays is not None and len(result.arrays) else to_arrays(initial)
    load_trainable_state(rt.model, from_arrays(final))
    save_final(rt, out)
    plot_curves(ledger.rounds, out / "curves.png")
    ledger.phase(cfg.run.rounds, "done")
    return {"rounds": ledger.rounds}


@app.main()
def main(grid: Grid, context: Context) -> None:
    out = Path(str(context.run_config.get(OUT_KEY, "runs/latest")))
    try:
        cfg = config_from_context(context)
        run_server(grid, cfg, out)
    except PollenError as e:
        Ledger(out, 0).phase(0, "failed", error=str(e))
        raise
    except Exception as e:
        Ledger(out, 0).phase(0, "failed", error=f"{type(e).__name__}: {e}",
                             traceback=traceback.format_exc())
        raise
