import json

from pollen.server.ledger import Ledger, plot_curves


def test_ledger_rows_follow_the_public_schema(tmp_path):
    led = Ledger(tmp_path, total_rounds=2)
    assert led.close_round(0, {"eval_loss": 3.0}) ["train_loss"] is None
    led.traffic(down=100, up=40)
    led.traffic(down=100, up=50)
    led.train_result(clients=2, train_loss=2.5)
    led.close_round(1, {"eval_loss": 2.0, "eval_accuracy": 0.5})
    rows = json.loads((tmp_path / "metrics.json").read_text())["rounds"]
    assert [r["round"] for r in rows] == [0, 1]
    assert rows[0]["bytes_up"] == rows[0]["bytes_down"] == rows[0]["clients"] == 0
    assert rows[1] | {"seconds": 0} == {"round": 1, "train_loss": 2.5, "eval_loss": 2.0,
                                         "eval_accuracy": 0.5, "clients": 2, "bytes_up": 90,
                                         "bytes_down": 200, "dropped": 0, "seconds": 0}
    plot_curves(rows, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_non_finite_losses_are_written_as_null(tmp_path):
    led = Ledger(tmp_path, total_rounds=1)
    led.train_result(clients=1, train_loss=float("nan"))
    row = led.close_round(1, {"eval_loss": float("inf")})
    assert row["train_loss"] is None and row["eval_loss"] is None
    json.loads((tmp_path / "metrics.json").read_text())  # strict JSON, no NaN tokens
