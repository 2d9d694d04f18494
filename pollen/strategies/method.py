"""What a method is: its strategies, its client-side training and its server-side hooks.

A method folder (`pollen/strategies/<method>/`) builds one `Method` and registers it with one
`register_method(...)` line in its `__init__.py`. The ClientApp calls `method.train`; the round runner
(`pollen.server.runner.run_rounds`) calls the `ServerSide` hooks in the order documented there. Both
are plain attributes, so a reader can click from the apps to the method without import-path strings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from pollen.config import PollenConfig
from pollen.data.clients import partition_sizes as client_partition_sizes
from pollen.errors import ConfigError
from pollen.protocol.contracts import Contracts

# (instruction, node context, run config, partition id, number of partitions) -> reply content
ClientTrain = Callable[[Message, Context, PollenConfig, int, int], RecordDict]


@dataclass(frozen=True)
class TrainResult:
    """What a round's aggregation means for the ledger: accepted clients, their loss, refused replies."""

    clients: int
    train_loss: float | None
    dropped: int = 0


class ServerSide:
    """A method's server hooks. Constructing one loads what the server needs (model, eval data).

    The runner calls, in order: `tensor_names` (to build the strategy), `initial_arrays`,
    `train_config`, `attack_grid`, then per round `train_result` (after aggregation), `evaluate` and
    `save_round`, and at the end `save`. Override what differs; the defaults suit a stateless method.
    """

    # `pollen server --resume` restarts from OUT/checkpoint (the runner writes one every round).
    resumable: bool = False
    # From round 2 on, sample whoever is still alive instead of waiting for every node.
    tolerate_dropouts: bool = False
    # `compression.codec_down` works with this method (see `downlink`).
    supports_codec_down: bool = False

    def __init__(self, cfg: PollenConfig) -> None:
        self.cfg = cfg

    def tensor_names(self) -> list[str]:
        """Names of the tensors the strategy aggregates (its factory may check them)."""
        return []

    def initial_arrays(self, strategy: Strategy) -> ArrayRecord:
        raise NotImplementedError

    def train_config(self) -> ConfigRecord:
        return ConfigRecord()

    def downlink(self) -> Any | None:
        """The method's down-link compression layer for `MeteredGrid` (None: states go in full).

        A method that has one sets `supports_codec_down`; the others refuse `compression.codec_down`.
        """
        if self.cfg.compression.codec_down.strip().lower() not in ("", "none"):
            raise ConfigError(f"compression.codec_down: strategy {self.cfg.strategy.name!r} has no "
                              "compressed down-link (only the PEFT family does); leave it empty")
        return None

    def attack_grid(self, grid: Grid) -> Grid | None:
        """A method-specific attack wrapper placed *inside* metering; None: the shared update attacks."""
        return None

    def train_result(self, strategy: Strategy, replies: list[Message], arrays: ArrayRecord | None,
                     metrics: MetricRecord | None) -> TrainResult:
        """Default: every reply without an error was aggregated."""
        ok = [m for m in replies if not m.has_error()]
        loss = float(metrics["train_loss"]) if metrics is not None and "train_loss" in metrics else None
        return TrainResult(clients=len(ok) if arrays is not None else 0, train_loss=loss)

    def evaluate(self, server_round: int, arrays: ArrayRecord) -> dict[str, float]:
        """Central evaluation of the global model after `server_round` (0: the initial model)."""
        raise NotImplementedError

    def save_round(self, out: Path, server_round: int, arrays: ArrayRecord) -> None:
        """After a round's evaluation: a per-round artifact users can load (default: none)."""

    def save(self, out: Path, strategy: Strategy, arrays: ArrayRecord, rows: list[dict[str, Any]],
             seconds: float) -> dict[str, Any]:
        """Write the run's final artifacts under `out`; the dict joins the runner's result."""
        return {}


@dataclass(frozen=True)
class Method:
    """One federated method: the strategy names it answers to and both sides of its algorithm."""

    name: str
    strategies: tuple[str, ...]
    train: ClientTrain
    server: Callable[[PollenConfig], ServerSide]
    # Checks run before any process starts (data split, model load); raise PollenError.
    preflight: Callable[[PollenConfig], None]
    # What every reply must hold before a strategy sees it (pollen/server/inbound.py screens it).
    reply_contract: Callable[[PollenConfig], Contracts]
    # Each partition's training-example count; in simulation the largest caps the `num-examples`
    # a reply may claim (bounded influence).
    partition_sizes: Callable[[PollenConfig], list[int]] = client_partition_sizes
    # Clients change the base model's weights in place (full-parameter methods): every process then
    # holds its own copy, where PEFT clients share one memory-mapped copy (pollen/deploy/simulate.py).
    writes_base_weights: bool = False
    doc: str = ""

    @property
    def resumable(self) -> bool:
        return bool(getattr(self.server, "resumable", False))
