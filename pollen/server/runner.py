"""The one round runner every method plugs into: ledger, metering, attacks, checkpoints, final save.

`run_rounds` builds the method's strategy and hands it to Flower's `Strategy.start` wrapped in
`Rounds`, a strategy that *holds* the method's strategy (nothing is patched): it shifts round numbers
on resume, samples only live nodes after the first round when the method allows it, and writes the
ledger once per round from the method's `train_result` hook. The method's `ServerSide` hooks do the
rest (see pollen/strategies/method.py for their order).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from pollen.config import PollenConfig
from pollen.errors import ConfigError, RoundError
from pollen.protocol.contracts import LOAD_SECONDS, TRAIN_SECONDS
from pollen.protocol.records import from_arrays, to_arrays
from pollen.server.attack_grid import AttackGrid
from pollen.server.checkpoint import (
    load_checkpoint,
    restore_strategy,
    save_checkpoint,
    set_rng_state,
)
from pollen.server.inbound import ReplyScreen
from pollen.server.ledger import Ledger, plot_curves, shortfall
from pollen.server.metered_grid import MeteredGrid
from pollen.server.progress_grid import ProgressGrid
from pollen.server.tracking import Trackers
from pollen.strategies import Method, ServerSide, StrategyContext, build_strategy

log = logging.getLogger("pollen.server")


class Rounds(Strategy):
    """Holds a method's strategy for one run: round offset, dropout tolerance, one ledger write per round.

    Resuming restarts Flower's `start` for the remaining rounds; `offset` shifts the round numbers the
    inner strategy sees, so clients, the ledger and evaluation count on from the checkpoint.
    """

    def __init__(self, inner: Strategy, side: ServerSide, ledger: Ledger, cfg: PollenConfig, *,
                 offset: int = 0, tolerate_dropouts: bool = False) -> None:
        self.inner, self.side, self.ledger, self.cfg = inner, side, ledger, cfg
        self.offset = offset
        self.tolerate_dropouts = tolerate_dropouts
        self._wanted = int(getattr(inner, "min_train_nodes", 1))

    def summary(self) -> None:
        self.inner.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        server_round += self.offset
        if self.tolerate_dropouts and server_round > self.offset + 1:
            self._sample_live_nodes(grid)
        return self.inner.configure_train(server_round, arrays, config, grid)

    def _sample_live_nodes(self, grid: Grid) -> None:
        """After the first round, sample whoever is still alive instead of waiting for dead nodes.

        Flower's `sample_nodes` blocks (no timeout) until `min_available_nodes` are connected, and a
        sample of `min_train_nodes` waits the same way. Pollen sets both to the whole federation so
        round 1 starts only once everyone joined; a client killed later must not stall every later
        round. From then on a round waits only for the quorum `federation.min_clients` (at least 1);
        replies that never come are dropped by Flower's `send_and_receive` timeout and the round
        aggregates the rest.
        """
        if not hasattr(self.inner, "min_available_nodes"):
            return
        quorum = max(1, self.cfg.federation.min_clients)
        live = len(list(grid.get_node_ids()))
        self.inner.min_available_nodes = quorum
        self.inner.min_train_nodes = max(quorum, min(self._wanted, live))

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        for reply in replies:  # screened replies: their timing metrics are finite numbers
            if not reply.has_error() and "metrics" in reply.content:
                m = reply.content["metrics"]
                if TRAIN_SECONDS in m and LOAD_SECONDS in m:
                    self.ledger.client_seconds(float(m[TRAIN_SECONDS]), float(m[LOAD_SECONDS]))
        t0 = time.perf_counter()
        arrays, metrics = self.inner.aggregate_train(server_round + self.offset, replies)
        res = self.side.train_result(self.inner, replies, arrays, metrics)
        self.ledger.spent(aggregate_s=time.perf_counter() - t0)
        if res.dropped:
            self.ledger.dropped(res.dropped)
        loss = res.train_loss
        self.ledger.train_result(clients=res.clients,
                                 train_loss=loss if loss is None or math.isfinite(loss) else None)
        return arrays, metrics

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round + self.offset, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round + self.offset, replies)


class Evaluation:
    """Flower's `evaluate_fn`: the method's central evaluation, the ledger row, the checkpoint."""

    def __init__(self, side: ServerSide, ledger: Ledger, cfg: PollenConfig, out: Path,
                 strategy: Strategy, *, offset: int = 0, resumed: bool = False,
                 checkpoint: bool = False) -> None:
        self.side, self.ledger, self.cfg, self.out = side, ledger, cfg, out
        self.strategy, self.offset, self.checkpoint = strategy, offset, checkpoint
        self.resumed = resumed or offset > 0

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if self.resumed and server_round == 0:
            # Round 0 of a resumed start is the checkpointed round (round 0 included), already in the
            # ledger: evaluating again would list it twice in metrics.json.
            return None
        server_round += self.offset
        metrics: dict[str, float] = {}
        if evaluates(server_round, self.cfg.run.rounds, self.cfg.run.eval_every):
            self.ledger.phase(server_round, "evaluate")
            t0 = time.perf_counter()
            metrics = self.side.evaluate(server_round, arrays)
            self.ledger.spent(eval_s=time.perf_counter() - t0)
        log.info("round %d: %s", server_round,
                 close_round(self.ledger, server_round, self.cfg.run.rounds, metrics,
                             allow_empty=self.cfg.run.allow_empty_rounds))
        if self.checkpoint:
            save_checkpoint(self.out, self.cfg, server_round, from_arrays(arrays), self.ledger.rounds,
                            self.strategy)
        if server_round > 0:
            self.side.save_round(self.out, server_round, arrays)
        return MetricRecord(metrics)


def evaluates(server_round: int, total_rounds: int, every: int) -> bool:
    """Central evaluation after every `every`-th round (round 0 = the initial model) and the last one.

    Evaluation sits on the critical path between rounds; `run.eval_every` trades curve resolution
    for wall time (0: only the final model).
    """
    return server_round == total_rounds or (every > 0 and server_round % every == 0)


def close_round(ledger: Ledger, server_round: int, total_rounds: int,
                metrics: dict[str, float], *, allow_empty: bool = False) -> dict[str, Any]:
    """Write the round's ledger row, say what the round lost, and announce the next phase.

    A round that aggregated nobody left the model where it was: unless the run allows it
    (`run.allow_empty_rounds`), the run stops here with the round's accounting as the reason,
    instead of "finishing" with a model that never trained.
    """
    row = ledger.close_round(server_round, metrics)
    lost = shortfall(row)
    if lost is not None:
        log.warning("%s", lost)
    if server_round > 0 and row["aggregated"] == 0 and not allow_empty:
        hint = " (raise run.round_timeout if clients need longer)" if row["timed_out"] else ""
        raise RoundError(f"{lost or f'round {server_round} aggregated no client update'}{hint}; "
                         "set run.allow_empty_rounds = true to let a run go on through empty rounds")
    if server_round < total_rounds:
        ledger.phase(server_round + 1, "train")
    return row


def run_rounds(grid: Grid, cfg: PollenConfig, out: Path, method: Method, *,
               resume: bool = False) -> dict[str, Any]:
    """Run `method` for cfg.run.rounds rounds over `grid`; returns the ledger rows and the method's extras."""
    if resume and not method.resumable:
        raise ConfigError(f"--resume: the {method.name!r} method cannot resume yet")
    trackers = Trackers.for_run(out, cfg)
    try:
        return _run(grid, cfg, out, method, Ledger(out, cfg.run.rounds, on_row=trackers.log_row),
                    resume=resume)
    finally:
        trackers.close()


def _run(grid: Grid, cfg: PollenConfig, out: Path, method: Method, ledger: Ledger, *,
         resume: bool) -> dict[str, Any]:
    ledger.phase(0, "loading")
    t0 = time.perf_counter()
    side = method.server(cfg)
    strategy = build_strategy(StrategyContext(cfg=cfg, tensor_names=side.tensor_names()))
    initial = side.initial_arrays(strategy)
    ledger.spent(server_load_s=time.perf_counter() - t0)  # row 0 (or the first resumed row)
    start = 0
    if resume:
        ckpt = load_checkpoint(out, cfg)
        start, initial = ckpt.round, to_arrays(ckpt.arrays)
        ledger.rounds = list(ckpt.rows)
        set_rng_state(ckpt.rng)
        restore_strategy(strategy, ckpt)
        log.info("resuming after round %d of %d", start, cfg.run.rounds)
        ledger.phase(start + 1, "train", resumed_from=start)
    rounds = Rounds(strategy, side, ledger, cfg, offset=start, tolerate_dropouts=side.tolerate_dropouts)
    grid = ProgressGrid(grid, ledger)  # innermost: live per-client progress in progress.json
    own_attack = side.attack_grid(grid)
    served: Grid = MeteredGrid(own_attack if own_attack is not None else grid, ledger,
                               max_payload_bytes=cfg.compression.max_payload_bytes,
                               codec=cfg.compression.codec, screen=ReplyScreen.for_run(cfg),
                               downlink=side.downlink())
    if own_attack is None and cfg.attack.name:  # robustness studies: attackers play on the real replies
        served = AttackGrid(served, cfg)
    t0 = time.monotonic()
    result = rounds.start(
        grid=served,
        initial_arrays=initial,
        num_rounds=cfg.run.rounds - start,
        timeout=cfg.run.round_timeout,
        train_config=side.train_config(),
        evaluate_fn=Evaluation(side, ledger, cfg, out, strategy, offset=start, resumed=resume,
                               checkpoint=side.resumable),
    )
    seconds = time.monotonic() - t0
    final = result.arrays if result.arrays is not None and len(result.arrays) else initial
    extra = side.save(out, strategy, final, ledger.rounds, seconds)
    plot_curves(ledger.rounds, out / "curves.png")
    ledger.phase(cfg.run.rounds, "done")
    return {"rounds": ledger.rounds, **extra}

