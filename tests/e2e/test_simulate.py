"""`pollen simulate` end to end on Flower's simulation engine (Ray), with a tiny config."""

import json

import pytest
from peft import PeftModel

from pollen.cli import main
from pollen.models import load_model
from tests.e2e.tiny import tiny_config

pytestmark = pytest.mark.slow


def test_simulation_writes_metrics_adapter_and_curves(tmp_path, capsys):
    cfg = tiny_config(tmp_path, rounds=2, clients=3)
    assert main(["simulate", "--config", str(cfg)]) == 0
    out = tmp_path / "out"
    rounds = json.loads((out / "metrics.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert rounds[0]["train_loss"] is None and rounds[0]["bytes_up"] == 0
    for r in rounds[1:]:
        assert r["clients"] == 3 and r["train_loss"] is not None
        # The same adapter travels both ways; only the small metric/config records differ.
        assert r["bytes_down"] > 0 and abs(r["bytes_up"] - r["bytes_down"]) < 0.01 * r["bytes_down"]
        assert set(r) >= {"eval_loss", "eval_accuracy", "seconds"}
    assert rounds[-1]["eval_loss"] < rounds[0]["eval_loss"]
    # Only LoRA (+ the classifier head) travels: a small fraction of the 22.7M-parameter model.
    per_client = rounds[1]["bytes_up"] / 3
    assert per_client < 0.05 * 22.7e6 * 4
    assert (out / "config.toml").is_file() and (out / "curves.png").stat().st_size > 1000
    base = load_model("minilm-l6", "seq-cls", num_labels=3, seed=0).model
    PeftModel.from_pretrained(base, out / "adapter")  # loadable with peft
    printed = capsys.readouterr().out
    assert "Pollen run summary" in printed
    # Where the time went: clients report training and loading, the server its evaluation and
    # aggregation; timing.json splits the CLI's wall time and the summary says it in one line.
    for r in rounds[1:]:
        assert r["train_s"] > 0 and r["aggregate_s"] > 0 and r["eval_s"] > 0
    assert rounds[0]["server_load_s"] > 0 and rounds[0]["eval_s"] > 0
    assert sum(r["load_s"] for r in rounds) > 0  # each actor loads the model once, in round 1
    timing = json.loads((out / "timing.json").read_text())
    parts = ("preflight", "startup", "server_load", "evaluation", "aggregation", "rounds", "finish")
    assert abs(sum(timing[k] for k in parts) - timing["wall"]) < 0.05 * timing["wall"]
    assert timing["train_sum"] == pytest.approx(sum(r["train_s"] for r in rounds), abs=0.01)
    assert timing["wall_per_train"] == pytest.approx(timing["wall"] / timing["train_sum"], rel=1e-3)
    assert "the clients' training" in printed
