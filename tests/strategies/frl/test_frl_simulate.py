"""`pollen simulate --strategy frl` end to end on Flower's simulation engine, with a tiny config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pollen.cli import main
from pollen.data.fashion_mnist import is_available
from pollen.models.supermask import build_supermask_model, layer_sizes
from pollen.strategies.frl.artifacts import load_frl_model
from pollen.strategies.frl.wire import encoded_size

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not is_available(),
                       reason="Fashion-MNIST absent: sudo apt-get install dataset-fashion-mnist"),
]


def test_frl_simulation_votes_rankings_and_reports_accuracy_and_bytes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = main(["simulate", "--strategy", "frl", "--dataset", "fashion-mnist", "--model", "conv4-supermask",
                 "--clients", "4", "--rounds", "2", "--out", str(out),
                 "--set", "data.max_client_examples=300", "--set", "simulation.client_cpus=1"])
    assert code == 0
    rounds = json.loads((out / "metrics.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert rounds[0]["bytes_up"] == 0 and rounds[0]["eval_accuracy"] < 0.2  # S⁰: chance level
    ranking = encoded_size(layer_sizes(build_supermask_model("conv4-supermask", seed=0)))
    for r in rounds[1:]:
        assert r["clients"] == 4 and r["train_loss"] is not None
        assert set(r) >= {"eval_loss", "eval_accuracy", "bytes_up", "bytes_down"}
        # each client sends one ranking plus a small MetricRecord; the server sends one ranking + config
        assert 4 * ranking < r["bytes_up"] < 4 * ranking + 4 * 200
        assert 4 * ranking < r["bytes_down"] < 4 * ranking + 4 * 200
    assert rounds[-1]["eval_accuracy"] > rounds[0]["eval_accuracy"] + 0.15
    manifest = json.loads((out / "frl" / "frl.json").read_text())
    assert manifest["model"] == "conv4-supermask" and manifest["final"]["round"] == 2
    assert load_frl_model(out / "frl") is not None
    assert (out / "curves.png").stat().st_size > 1000
