import json
import time

import pytest

from pollen.server.ledger import ACCOUNTING, Ledger, plot_curves, shortfall


def test_ledger_rows_follow_the_public_schema(tmp_path):
    led = Ledger(tmp_path, total_rounds=2)
    assert led.close_round(0, {"eval_loss": 3.0}) ["train_loss"] is None
    led.traffic(down=100, up=40)
    led.traffic(down=100, up=50)
    led.exchange(sampled=4, replied=2, errors=1, timed_out=1)
    led.train_result(clients=2, train_loss=2.5)
    led.close_round(1, {"eval_loss": 2.0, "eval_accuracy": 0.5})
    rows = json.loads((tmp_path / "metrics.json").read_text())["rounds"]
    assert [r["round"] for r in rows] == [0, 1]
    assert rows[0]["bytes_up"] == rows[0]["bytes_down"] == rows[0]["clients"] == 0
    assert all(rows[0][k] == 0 for k in ACCOUNTING)
    assert rows[1] | {"seconds": 0} == {"round": 1, "train_loss": 2.5, "eval_loss": 2.0,
                                         "eval_accuracy": 0.5, "clients": 2, "bytes_up": 90,
                                         "bytes_down": 200, "dropped": 0, "seconds": 0,
                                         "sampled": 4, "replied": 2, "errors": 1, "timed_out": 1,
                                         "aggregated": 2, "train_s": 0.0, "load_s": 0.0,
                                         "aggregate_s": 0.0, "eval_s": 0.0, "server_load_s": 0.0}
    assert shortfall(rows[0]) is None
    assert shortfall(rows[1]) == ("round 1 aggregated 2 of 4 sampled clients (2 replied, 1 errors, "
                                  "1 timed out, 0 dropped)")
    plot_curves(rows, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_round_time_sums_clients_and_bounds_what_they_claim(tmp_path):
    led = Ledger(tmp_path, total_rounds=1)
    led.spent(server_load_s=4.0)
    row0 = led.close_round(0, {})
    time.sleep(0.05)
    led.client_seconds(train=0.01, load=0.02)
    led.client_seconds(train=0.03, load=0.0)
    # Hostile or broken reports: no client adds more than the round has lasted, nor negative time.
    led.client_seconds(train=1e300, load=-5.0)
    led.spent(aggregate_s=0.5, eval_s=float("nan"))
    row1 = led.close_round(1, {})
    assert row0["server_load_s"] == 4.0 and row0["train_s"] == 0.0
    assert row1["server_load_s"] == 0.0 and row1["aggregate_s"] == 0.5 and row1["eval_s"] == 0.0
    assert 0.04 + 0.05 <= row1["train_s"] <= 0.04 + row1["seconds"] + 0.01
    assert row1["load_s"] == 0.02
    with pytest.raises(KeyError, match="unknown timing field 'typo_s'"):
        led.spent(typo_s=1.0)
    assert json.loads((tmp_path / "metrics.json").read_text())["started"] == led.started


def test_non_finite_losses_are_written_as_null(tmp_path):
    led = Ledger(tmp_path, total_rounds=1)
    led.train_result(clients=1, train_loss=float("nan"))
    row = led.close_round(1, {"eval_loss": float("inf")})
    assert row["train_loss"] is None and row["eval_loss"] is None
    json.loads((tmp_path / "metrics.json").read_text())  # strict JSON, no NaN tokens
