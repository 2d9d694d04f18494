import math

from pollen.deploy.timing import breakdown


def _row(r, seconds, **t):
    return {"round": r, "seconds": seconds, "replied": 0 if r == 0 else 4,
            **{k: 0.0 for k in ("train_s", "load_s", "aggregate_s", "eval_s", "server_load_s")}, **t}


def test_the_parts_add_up_to_the_wall_time_and_the_ratio_is_over_client_training():
    rows = [_row(0, 30.0, server_load_s=20.0, eval_s=10.0),
            _row(1, 50.0, train_s=80.0, load_s=12.0, aggregate_s=0.5, eval_s=9.0),
            _row(2, 40.0, train_s=70.0, aggregate_s=0.5, eval_s=9.0)]
    t = breakdown(rows, wall=150.0, preflight=8.0, server_started=1000.0 + 8.0 + 15.0,
                  cli_started=1000.0)
    assert (t.preflight, t.startup, t.server_load, t.evaluation, t.aggregation) == (8, 15, 20, 28, 1)
    assert t.rounds == 120 - 20 - 28 - 1
    assert t.finish == 150 - 8 - 15 - 120
    parts = t.preflight + t.startup + t.server_load + t.evaluation + t.aggregation + t.rounds + t.finish
    assert math.isclose(parts, t.wall)
    assert (t.train_sum, t.load_sum, t.client_replies) == (150.0, 12.0, 8)
    assert math.isclose(t.ratio, 1.0) and t.to_json()["wall_per_train"] == 1.0
    assert "wall 150 s = 1.00× the clients' training (150 s summed over 8 replies)" in t.line()


def test_no_training_or_no_server_mark_still_describes_the_run():
    t = breakdown([_row(0, 5.0)], wall=20.0, preflight=2.0, server_started=None, cli_started=0.0)
    assert t.startup == 13.0 and t.finish == 0.0
    assert t.to_json()["wall_per_train"] is None and "n/a" in t.line()
