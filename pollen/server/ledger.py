"""The run's ledger: per-round loss, clients, bytes and time, written to DIR/metrics.json.

metrics.json is rewritten atomically after every round, so it doubles as the progress feed that
`pollen simulate` and `pollen server` render live. Its field names are a public interface.

Every row accounts for the round's clients, so a round that lost some says so:
`sampled` = train instructions sent, `replied` = replies that came back without an error,
`errors` = error replies (the client or Flower failed), `timed_out` = no reply within
`run.round_timeout`, `dropped` = replies refused by decoding or screening, `aggregated` = updates the
strategy aggregated (also written as `clients`, the older name). sampled = replied + errors + timed_out.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pollen.io_utils import atomic_write_json

PROGRESS_FILE = "progress.json"
# The accounting fields of a row, in the order they are shown.
ACCOUNTING = ("sampled", "replied", "errors", "timed_out", "dropped", "aggregated")
# The time fields of a row (seconds; train_s and load_s are summed over the round's clients).
TIMING = ("train_s", "load_s", "aggregate_s", "eval_s", "server_load_s")


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class Ledger:
    def __init__(self, out: Path, total_rounds: int,
                 on_row: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.out = out
        self.total_rounds = total_rounds
        self.on_row = on_row  # experiment trackers see each row once it is on disk
        self._phase: tuple[int, str] = (0, "loading")
        self.rounds: list[dict[str, Any]] = []
        self.started = time.time()  # epoch: lets the CLI split its wall time (pollen/deploy/timing.py)
        self._reset()

    def _reset(self) -> None:
        self._down = self._up = self._clients = self._dropped = 0
        self._sampled = self._replied = self._errors = self._timed_out = 0
        self._train_loss: float | None = None
        self._t0 = time.monotonic()
        # Where the round's time went: clients' summed training and loading (what they report),
        # the server's aggregation and evaluation, and (row 0) the server's own model load.
        self._seconds = dict.fromkeys(TIMING, 0.0)

    def traffic(self, down: int, up: int) -> None:
        self._down += down
        self._up += up

    def exchange(self, *, sampled: int, replied: int, errors: int, timed_out: int) -> None:
        """One train exchange of this round: instructions sent and what became of them."""
        self._sampled += sampled
        self._replied += replied
        self._errors += errors
        self._timed_out += timed_out

    def dropped(self, n: int) -> None:
        """Updates rejected by validation this round (they are not in `clients`)."""
        self._dropped += n

    def spent(self, **seconds: float) -> None:
        """Add time to this round's TIMING fields (non-finite or negative reports count as 0)."""
        for key, value in seconds.items():
            if key not in self._seconds:
                raise KeyError(f"unknown timing field {key!r}; fields are {', '.join(TIMING)}")
            v = float(value)
            self._seconds[key] += v if math.isfinite(v) and v > 0 else 0.0

    def client_seconds(self, train: float, load: float) -> None:
        """One client's reported seconds; a claim longer than the round so far is cut to it."""
        cap = time.monotonic() - self._t0
        self.spent(train_s=min(float(train), cap), load_s=min(float(load), cap))

    def train_result(self, clients: int, train_loss: float | None) -> None:
        self._clients = clients
        self._train_loss = train_loss

    def phase(self, server_round: int, phase: str, **extra: Any) -> None:
        self._phase = (server_round, phase)
        atomic_write_json(self.out / PROGRESS_FILE, {
            "round": server_round, "total_rounds": self.total_rounds, "phase": phase,
            "time": time.time(), **{k: _clean(v) for k, v in extra.items()}})

    def live(self, *, kind: str, sent: int, done: int, failed: int, deadline: float | None) -> None:
        """Clients within the current phase: `sent` work, `done` answered, `failed`; round deadline."""
        server_round, phase = self._phase
        self.phase(server_round, phase, clients={"kind": kind, "sent": sent, "done": done,
                                                 "failed": failed, "deadline": deadline})

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
            "sampled": self._sampled,
            "replied": self._replied,
            "errors": self._errors,
            "timed_out": self._timed_out,
            "aggregated": self._clients if server_round > 0 else 0,
            **{k: round(v, 3) for k, v in self._seconds.items()},
        }
        self.rounds.append(row)
        atomic_write_json(self.out / "metrics.json", {"started": self.started, "rounds": self.rounds})
        if self.on_row is not None:
            self.on_row(row)
        self._reset()
        return row


def one_line(text: str, limit: int = 400) -> str:
    """A reason fit for one line of a terminal or a JSON field: whitespace collapsed, bounded."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def shortfall(row: dict[str, Any]) -> str | None:
    """One line naming a round's lost clients, or None when it aggregated all it sampled."""
    sampled, aggregated = int(row.get("sampled", 0) or 0), int(row.get("aggregated", 0) or 0)
    if row.get("round", 0) == 0 or aggregated >= sampled:
        return None
    return (f"round {row['round']} aggregated {aggregated} of {sampled} sampled clients "
            f"({row.get('replied', 0)} replied, {row.get('errors', 0)} errors, "
            f"{row.get('timed_out', 0)} timed out, {row.get('dropped', 0)} dropped)")


def record_failure(out: Path, reason: str) -> bool:
    """Mark the run failed in OUT/progress.json, best-effort: True if the file now says so.

    Called while things are going wrong (a full disk, a dying process), so it never raises and
    writes little: first atomically (a new file renamed over the old one); if that fails (no room for
    a new file), by overwriting the old file's blocks in place; if even that fails, the stale file is
    removed so nobody reads a run that is still "train"ing.
    """
    path = Path(out) / PROGRESS_FILE
    try:
        old = json.loads(path.read_text())
        if not isinstance(old, dict):
            old = {}
    except (OSError, ValueError):
        old = {}
    doc = {"round": old.get("round", 0), "total_rounds": old.get("total_rounds", 0),
           "phase": "failed", "time": time.time(), "error": one_line(reason)}
    data = json.dumps(doc, allow_nan=False).encode() + b"\n"
    try:
        atomic_write_json(path, doc)
        return True
    except (OSError, ValueError):
        pass
    try:  # rewrite in place: the old file's blocks are already allocated
        fd = os.open(path, os.O_WRONLY)
        try:
            if os.write(fd, data) != len(data):
                raise OSError("short write")
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)
        return True
    except OSError:
        pass
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass
    return False


def human_bytes(n: float, _pos: object = None, *, digits: int = 1) -> str:
    """1_866_129 -> '1.9 MB' (SI units, as network rates are quoted), for tables and plot axes."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.{digits}f} {unit}"
        n /= 1000
    return f"{n:.{digits}f} GB"  # pragma: no cover


def plot_curves(rounds: list[dict[str, Any]], path: Path) -> None:
    """OUT/curves.png, a quick look at a run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = curves_figure(rounds)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def curves_figure(rounds: list[dict[str, Any]]) -> Any:
    """One panel per quantity (loss, accuracy if any, bytes, clients), integer rounds on every axis."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    r = [row["round"] for row in rounds]
    has_acc = any(row.get("eval_accuracy") is not None for row in rounds)
    panels = ["loss", *(["accuracy"] if has_acc else []), "bytes", "clients"]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4))
    ax = dict(zip(panels, axes))
    ax["loss"].plot(r, [row.get("eval_loss") for row in rounds], "o-", label="eval")
    tl = [(row["round"], row["train_loss"]) for row in rounds if row.get("train_loss") is not None]
    if tl:
        ax["loss"].plot(*zip(*tl), "s--", label="train")
    ax["loss"].set_title("loss")
    ax["loss"].legend()
    if has_acc:
        ax["accuracy"].plot(r, [row.get("eval_accuracy") for row in rounds], "g^-")
        ax["accuracy"].set_title("eval accuracy")
        ax["accuracy"].set_ylim(0, 1)
    ax["bytes"].bar([x - 0.2 for x in r], [row.get("bytes_up", 0) for row in rounds], width=0.4,
                    label="up")
    ax["bytes"].bar([x + 0.2 for x in r], [row.get("bytes_down", 0) for row in rounds], width=0.4,
                    label="down")
    ax["bytes"].set_ylim(bottom=0)
    ax["bytes"].yaxis.set_major_formatter(FuncFormatter(human_bytes))
    ax["bytes"].set_title("bytes per round (all clients)")
    ax["bytes"].legend()
    ax["clients"].plot(r, [row.get("sampled", row.get("clients", 0)) for row in rounds], "o-",
                       label="sampled")
    ax["clients"].plot(r, [row.get("aggregated", row.get("clients", 0)) for row in rounds], "s--",
                       label="aggregated")
    ax["clients"].set_ylim(bottom=0)
    ax["clients"].yaxis.set_major_locator(MaxNLocator(integer=True))
    ax["clients"].set_title("clients")
    ax["clients"].legend()
    for a in axes:
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.set_xlabel("round")
    fig.tight_layout()
    return fig
