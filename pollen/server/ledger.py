"""The run's ledger: per-round loss, clients, bytes and time, written to DIR/metrics.json.

metrics.json is rewritten atomically after every round, so it doubles as the progress feed that
`pollen simulate` and `pollen server` render live. Its field names are a public interface.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from pollen.io_utils import atomic_write_json


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class Ledger:
    def __init__(self, out: Path, total_rounds: int) -> None:
        self.out = out
        self.total_rounds = total_rounds
        self.rounds: list[dict[str, Any]] = []
        self._reset()

    def _reset(self) -> None:
        self._down = self._up = self._clients = self._dropped = 0
        self._train_loss: float | None = None
        self._t0 = time.monotonic()

    def traffic(self, down: int, up: int) -> None:
        self._down += down
        self._up += up

    def dropped(self, n: int) -> None:
        """Updates rejected by validation this round (they are not in `clients`)."""
        self._dropped += n

    def train_result(self, clients: int, train_loss: float | None) -> None:
        self._clients = clients
        self._train_loss = train_loss

    def phase(self, server_round: int, phase: str, **extra: Any) -> None:
        atomic_write_json(self.out / "progress.json", {
            "round": server_round, "total_rounds": self.total_rounds, "phase": phase,
            "time": time.time(), **{k: _clean(v) for k, v in extra.items()}})

    def close_round(self, server_round: int, evaluation: dict[str, float]) -> dict[str, Any]:
        row: dict[str, Any] = {
            "round": server_round,
            "train_loss": _clean(self._train_loss) if server_round > 0 else None,
            **{k: _clean(v) for k, v in evaluation.items()},
            "clients": self._clients if server_round > 0 else 0,
            "bytes_up": self._up,
            "bytes_down": self._down,
            "dropped": self._dropped,
            "seconds": round(time.monotonic() - self._t0, 3),
        }
        self.rounds.append(row)
        atomic_write_json(self.out / "metrics.json", {"rounds": self.rounds})
        self._reset()
        return row


def plot_curves(rounds: list[dict[str, Any]], path: Path) -> None:
    """Loss and bytes per round, for a quick look at a run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = [row["round"] for row in rounds]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot(r, [row.get("eval_loss") for row in rounds], "o-", label="eval_loss")
    tl = [(row["round"], row["train_loss"]) for row in rounds if row.get("train_loss") is not None]
    if tl:
        ax1.plot(*zip(*tl), "s--", label="train_loss")
    if any(row.get("eval_accuracy") is not None for row in rounds):
        ax1b = ax1.twinx()
        ax1b.plot(r, [row.get("eval_accuracy") for row in rounds], "g^-", label="eval_accuracy")
        ax1b.set_ylabel("accuracy")
    ax1.set_xlabel("round")
    ax1.set_ylabel("loss")
    ax1.legend(loc="upper right")
    ax2.bar([x - 0.2 for x in r], [row["bytes_up"] for row in rounds], width=0.4, label="bytes_up")
    ax2.bar([x + 0.2 for x in r], [row["bytes_down"] for row in rounds], width=0.4, label="bytes_down")
    ax2.set_xlabel("round")
    ax2.set_ylabel("bytes")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
