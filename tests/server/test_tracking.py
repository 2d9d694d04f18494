"""Every ledger row reaches TensorBoard (read back with tensorboard's own reader); trackers never cost the run."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pollen.config import PollenConfig
from pollen.errors import ConfigError
from pollen.server.ledger import Ledger, curves_figure, human_bytes, plot_curves
from pollen.server.tracking import Trackers, check_trackers, default_mlflow_uri, scalars


def _read_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _two_rounds(ledger: Ledger) -> None:
    ledger.close_round(0, {"eval_loss": 3.5})
    ledger.traffic(down=1000, up=300)
    ledger.exchange(sampled=2, replied=2, errors=0, timed_out=0)
    ledger.train_result(clients=2, train_loss=3.1)
    ledger.close_round(1, {"eval_loss": 2.75})


def test_tensorboard_gets_every_row(tmp_path):
    cfg = PollenConfig()
    trackers = Trackers.for_run(tmp_path, cfg)
    assert [t.name for t in trackers.trackers] == ["tensorboard"]  # the default
    _two_rounds(Ledger(tmp_path, 1, on_row=trackers.log_row))
    trackers.close()
    got = _read_scalars(tmp_path / "tensorboard")
    assert got["eval_loss"] == [(0, 3.5), (1, 2.75)]
    assert got["train_loss"] == [(1, pytest.approx(3.1))]  # round 0 has no training: absent, not 0
    assert got["bytes_up"] == [(0, 0.0), (1, 300.0)] and got["bytes_down"][-1] == (1, 1000.0)
    for tag in ("clients", "dropped", "seconds", "sampled", "aggregated", "timed_out"):
        assert [s for s, _ in got[tag]] == [0, 1], tag


def test_tracking_can_be_switched_off(tmp_path):
    cfg = PollenConfig.load(None, {"tracking.tensorboard": "false"})
    assert Trackers.for_run(tmp_path, cfg).trackers == []
    assert not (tmp_path / "tensorboard").exists()


def test_a_failing_tracker_is_dropped_with_a_warning_not_the_run(tmp_path, caplog):
    class Broken:
        name = "broken"

        def log_row(self, row):
            raise OSError("disk full")

        def close(self):
            pass

    trackers = Trackers([Broken()])
    ledger = Ledger(tmp_path, 1, on_row=trackers.log_row)
    with caplog.at_level(logging.WARNING, logger="pollen.server"):
        _two_rounds(ledger)
    assert [r["round"] for r in ledger.rounds] == [0, 1]  # the run's own record is complete
    assert trackers.trackers == []
    assert "broken disabled after round 0: disk full" in caplog.text


def test_a_missing_optional_tracker_fails_before_anything_starts(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "mlflow" else real(n, *a))
    with pytest.raises(ConfigError, match=r"tracking.mlflow = true needs the 'mlflow' package"):
        check_trackers(PollenConfig.load(None, {"tracking.mlflow": "true"}))
    check_trackers(PollenConfig())  # tensorboard is a dependency


@pytest.mark.slow  # MLflow creates its SQLite schema: ~1 min on 2 cores
def test_mlflow_offline_sqlite_store(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    cfg = PollenConfig.load(None, {"tracking.mlflow": "true", "tracking.tensorboard": "false"})
    trackers = Trackers.for_run(tmp_path, cfg)
    _two_rounds(Ledger(tmp_path, 1, on_row=trackers.log_row))
    trackers.close()
    client = mlflow.tracking.MlflowClient(default_mlflow_uri(tmp_path))
    (run,) = client.search_runs([client.get_experiment_by_name("pollen").experiment_id])
    assert [m.value for m in client.get_metric_history(run.info.run_id, "eval_loss")] == [3.5, 2.75]


def test_scalars_skip_missing_and_non_finite():
    assert scalars({"round": 1, "a": 1, "b": None, "c": float("nan"), "d": True, "e": 2.5}) == \
        {"a": 1.0, "e": 2.5}


def test_curves_use_integer_rounds_human_bytes_and_one_panel_per_quantity(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    assert human_bytes(512) == "512 B" and human_bytes(1_866_129) == "1.9 MB"
    rows = [{"round": i, "eval_loss": 3 - i / 2, "train_loss": None if i == 0 else 3.0, "bytes_up": 10**6 * i,
             "bytes_down": 2 * 10**6 * i, "sampled": 4 * (i > 0), "aggregated": 3 * (i > 0)} for i in range(4)]
    fig = curves_figure(rows)
    titles = [a.get_title() for a in fig.axes]
    assert titles == ["loss", "bytes per round (all clients)", "clients"]
    for a in fig.axes:
        fig.canvas.draw()
        ticks = [t for t in a.get_xticks() if a.get_xlim()[0] <= t <= a.get_xlim()[1]]
        assert all(float(t).is_integer() for t in ticks), (a.get_title(), ticks)
    bytes_ax = fig.axes[1]
    assert bytes_ax.get_ylim()[0] == 0
    labels = [t.get_text() for t in bytes_ax.get_yticklabels() if t.get_text()]
    assert any(lbl.endswith("MB") for lbl in labels), labels
    plt.close(fig)
    plot_curves(rows, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 1000
