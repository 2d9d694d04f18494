import json

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
                                         "aggregated": 2}
    assert shortfall(rows[0]) is None
    assert shortfall(rows[1]) == ("round 1 aggregated 2 of 4 sampled clients (2 replied, 1 errors, "
                                  "1 timed out, 0 dropped)")
    plot_curves(rows, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_non_finite_losses_are_written_as_null(tmp_path):
    led = Ledger(tmp_path, total_rounds=1)
    led.train_result(clients=1, train_loss=float("nan"))
    row = led.close_round(1, {"eval_loss": float("inf")})
    assert row["train_loss"] is None and row["eval_loss"] is None
    json.loads((tmp_path / "metrics.json").read_text())  # strict JSON, no NaN tokens
