"""Round bookkeeping shared by every family's server runner."""

from __future__ import annotations

import logging
import math
from typing import Any

from pollen.errors import RoundError
from pollen.server.ledger import Ledger, shortfall

log = logging.getLogger("pollen.server")


def record_train_results(strategy: Any, ledger: Ledger) -> None:
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


def tolerate_dropouts(strategy: Any, cfg: Any, first_round: int = 1) -> None:
    """After the first round, sample whoever is still alive instead of waiting for dead nodes.

    Flower's `sample_nodes` blocks (no timeout) until `min_available_nodes` are connected, and a
    sample of `min_train_nodes` waits the same way. Pollen sets both to the whole federation so
    round 1 starts only once everyone joined; a client killed later must not stall every later
    round. From then on a round waits only for the quorum `federation.min_clients` (at least 1);
    replies that never come are dropped by Flower's `send_and_receive` timeout and the round
    aggregates the rest.
    """
    inner = strategy.configure_train
    fed = cfg.federation
    wanted = int(getattr(strategy, "min_train_nodes", 1))

    def configure_train(server_round: int, arrays: Any, config: Any, grid: Any) -> Any:
        if server_round > first_round and hasattr(strategy, "min_available_nodes"):
            quorum = max(1, fed.min_clients)
            live = len(list(grid.get_node_ids()))
            strategy.min_available_nodes = quorum
            strategy.min_train_nodes = max(quorum, min(wanted, live))
        return inner(server_round, arrays, config, grid)

    strategy.configure_train = configure_train
