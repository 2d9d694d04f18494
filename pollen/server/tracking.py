"""Experiment tracking: every ledger row also goes to TensorBoard (default), MLflow or W&B.

metrics.json stays the run's record; trackers are views of it for the tools people already use.
All three work offline and write under the run directory unless the user points them elsewhere:
TensorBoard event files in OUT/tensorboard, MLflow's SQLite store OUT/mlflow.db (or
`tracking.mlflow_uri`), W&B's offline run in OUT/wandb (sync later with `wandb sync`). A tracker that
fails mid-run (a full disk, a server gone) is switched off with one warning: tracking must never
cost a federated run.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Protocol

from pollen.config import PollenConfig
from pollen.errors import ConfigError

log = logging.getLogger("pollen.server")

# Row fields that are not a per-round quantity.
_NOT_SCALARS = {"round"}


class Tracker(Protocol):
    name: str

    def log_row(self, row: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """The row's finite numbers (None and NaN are absent, not zero: a round without eval has no loss)."""
    out = {}
    for k, v in row.items():
        if k in _NOT_SCALARS or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if math.isfinite(v):
            out[k] = float(v)
    return out


class TensorBoardTracker:
    name = "tensorboard"

    def __init__(self, out: Path, cfg: PollenConfig) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(out / "tensorboard"))
        self.writer.add_text("config", f"```toml\n{cfg.to_toml()}\n```", 0)

    def log_row(self, row: dict[str, Any]) -> None:
        step = int(row["round"])
        for key, value in scalars(row).items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()  # live: `tensorboard --logdir OUT` shows the round as it closes

    def close(self) -> None:
        self.writer.close()


class MLflowTracker:
    name = "mlflow"

    def __init__(self, out: Path, cfg: PollenConfig) -> None:
        import mlflow

        self.mlflow = mlflow
        mlflow.set_tracking_uri(cfg.tracking.mlflow_uri or default_mlflow_uri(out))
        mlflow.set_experiment(cfg.tracking.project)
        self.run = mlflow.start_run(run_name=Path(cfg.run.out).name)
        flat = {k: str(v) for k, v in _flatten(cfg.to_dict()).items()}
        mlflow.log_params(flat)

    def log_row(self, row: dict[str, Any]) -> None:
        self.mlflow.log_metrics(scalars(row), step=int(row["round"]))

    def close(self) -> None:
        self.mlflow.end_run()


def default_mlflow_uri(out: Path) -> str:
    """A SQLite store in the run directory: offline, and the backend MLflow 3 maintains."""
    return f"sqlite:///{(out / 'mlflow.db').resolve()}"


class WandbTracker:
    name = "wandb"

    def __init__(self, out: Path, cfg: PollenConfig) -> None:
        import wandb

        # Offline unless the user set WANDB_MODE themselves: nothing leaves the machine by default.
        mode = os.environ.get("WANDB_MODE", "offline")
        self.run = wandb.init(project=cfg.tracking.project, dir=str(out), mode=mode,
                              name=Path(cfg.run.out).name, config=cfg.to_dict(), reinit=True)

    def log_row(self, row: dict[str, Any]) -> None:
        self.run.log(scalars(row), step=int(row["round"]))

    def close(self) -> None:
        self.run.finish()


TRACKERS: dict[str, type] = {"tensorboard": TensorBoardTracker, "mlflow": MLflowTracker,
                             "wandb": WandbTracker}
# The module each tracker needs, and the pip extra that brings it.
_NEEDS = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "pollen-fl[mlflow]"),
          "wandb": ("wandb", "pollen-fl[wandb]")}


def selected(cfg: PollenConfig) -> list[str]:
    return [name for name in TRACKERS if getattr(cfg.tracking, name)]


def check_trackers(cfg: PollenConfig) -> None:
    """Fail before any process starts when a selected tracker's package is missing."""
    import importlib.util

    for name in selected(cfg):
        module, extra = _NEEDS[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"config tracking.{name} = true needs the {module!r} package: "
                              f"pip install {extra!r} (or set tracking.{name} = false)")


class Trackers:
    """The run's trackers as one: a tracker that fails is dropped with one warning, never the run."""

    def __init__(self, trackers: list[Tracker]) -> None:
        self.trackers = trackers

    @classmethod
    def for_run(cls, out: Path, cfg: PollenConfig) -> Trackers:
        live: list[Tracker] = []
        for name in selected(cfg):
            try:
                live.append(TRACKERS[name](out, cfg))
            except Exception as e:  # noqa: BLE001 - an optional view of the ledger, never fatal
                log.warning("tracking: %s disabled: %s", name, " ".join(str(e).split())[:300])
        return cls(live)

    def log_row(self, row: dict[str, Any]) -> None:
        for t in list(self.trackers):
            try:
                t.log_row(row)
            except Exception as e:  # noqa: BLE001
                log.warning("tracking: %s disabled after round %s: %s", t.name, row.get("round"),
                            " ".join(str(e).split())[:300])
                self.trackers.remove(t)

    def close(self) -> None:
        for t in self.trackers:
            try:
                t.close()
            except Exception as e:  # noqa: BLE001
                log.warning("tracking: closing %s failed: %s", t.name, e)
        self.trackers = []


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out
