"""Round bookkeeping shared by every family's server runner."""

from __future__ import annotations

import math
from typing import Any

from pollen.server.ledger import Ledger


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
                metrics: dict[str, float]) -> dict[str, Any]:
    """Write the round's ledger row and announce the next phase."""
    row = ledger.close_round(server_round, metrics)
    if server_round < total_rounds:
        ledger.phase(server_round + 1, "train")
    return row
