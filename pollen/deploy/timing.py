"""Where a run's wall time went: the CLI's own stages plus the server's per-round TIMING fields.

The issue a user has with a slow run is "how much of it was training?". The answer is one ratio,
wall time over the clients' summed training time (with clients in parallel it can go below 1), and
a wall-clock breakdown whose parts add up to the wall time. Written to OUT/timing.json and printed
as one line of the run summary.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Timing:
    wall: float            # the CLI process from its start to the summary
    preflight: float       # the CLI from its start: imports, checks, its model load (then released)
    startup: float         # SuperLink, simulation engine / SuperNodes, ServerApp process start
    server_load: float     # the ServerApp's model and strategy
    evaluation: float      # central evaluations (round 0 included)
    aggregation: float     # strategies' aggregate_train
    rounds: float          # the rounds' wall time minus evaluation and aggregation: client work
    finish: float          # final save, shutdown of the processes
    train_sum: float       # Σ over client replies of their training seconds
    load_sum: float        # Σ over client replies of their model/data loading seconds
    client_replies: int

    @property
    def ratio(self) -> float:
        """Wall time per second of client training (the issue's ≤ 1.3 target)."""
        return self.wall / self.train_sum if self.train_sum > 0 else math.inf

    def to_json(self) -> dict[str, Any]:
        out = {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}
        out["wall_per_train"] = round(self.ratio, 3) if math.isfinite(self.ratio) else None
        return out

    def line(self) -> str:
        ratio = f"{self.ratio:.2f}×" if math.isfinite(self.ratio) else "n/a"
        return (f"wall {self.wall:.0f} s = {ratio} the clients' training ({self.train_sum:.0f} s summed "
                f"over {self.client_replies} replies) · preflight {self.preflight:.0f} s · start-up "
                f"{self.startup:.0f} s · server load {self.server_load:.0f} s · client loads "
                f"{self.load_sum:.0f} s (summed) · evaluation {self.evaluation:.0f} s · aggregation "
                f"{self.aggregation:.1f} s · finish {self.finish:.0f} s")


def process_started() -> float:
    """Epoch at which this process started (Linux /proc), so the wall time includes the imports and
    the model-cache warm-up before any Pollen code runs; elsewhere: now."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # starttime, clock ticks after boot
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


def breakdown(rows: Sequence[dict[str, Any]], *, wall: float, preflight: float,
              server_started: float | None, cli_started: float) -> Timing:
    """Combine the ledger rows with the CLI's clock marks (epoch seconds from one machine).

    `server_started` is the epoch at which the ServerApp's ledger began (metrics.json "started");
    without it (an older run) start-up and finish are lumped into start-up.
    """
    def total(key: str) -> float:
        return float(sum(float(r.get(key) or 0.0) for r in rows))

    evaluation, aggregation = total("eval_s"), total("aggregate_s")
    round_wall = total("seconds")
    server_load = total("server_load_s")
    rounds = max(0.0, round_wall - evaluation - aggregation - server_load)
    outside = max(0.0, wall - preflight - round_wall)
    if server_started is not None:
        startup = min(outside, max(0.0, server_started - cli_started - preflight))
    else:
        startup = outside
    return Timing(wall=wall, preflight=preflight, startup=startup, server_load=server_load,
                  evaluation=evaluation, aggregation=aggregation, rounds=rounds,
                  finish=max(0.0, outside - startup), train_sum=total("train_s"),
                  load_sum=total("load_s"),
                  client_replies=int(sum(int(r.get("replied") or 0) for r in rows)))
