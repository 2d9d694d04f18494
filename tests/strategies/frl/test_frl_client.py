"""FRL client handler on a constructed Message/Context, the FRL preflight, data split and saved state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context, RecordDict

from pollen.cli import main
from pollen.config import PollenConfig
from pollen.data.fashion_mnist import is_available
from pollen.errors import ConfigError, DataError
from pollen.models.supermask import build_supermask_model, get_scores
from pollen.protocol.grid import InProcessGrid
from pollen.protocol.records import CONFIG_KEY
from pollen.strategies import StrategyContext, build_strategy
from pollen.strategies.frl.artifacts import load_frl_state, save_frl
from pollen.strategies.frl.core import FRLServerState, rank_scores
from pollen.strategies.frl.runtime import client_indices, frl_runtime, preflight
from pollen.strategies.frl.wire import RANKING, RECORD, decode_rankings

needs_data = pytest.mark.skipif(
    not is_available(), reason="Fashion-MNIST absent: sudo apt-get install dataset-fashion-mnist")


def _cfg(**over: object) -> PollenConfig:
    base = {"strategy.name": "frl", "data.name": "fashion-mnist", "model.name": "conv4-supermask",
            "federation.clients": 4, "data.max_client_examples": 64, "frl.batch_size": 32}
    return PollenConfig.load(None, {**base, **over})


@pytest.mark.parametrize("argv, fragment", [
    (["--model", "gpt-17", "--dataset", "fashion-mnist"], "unknown model 'gpt-17' for strategy 'frl'"),
    (["--model", "conv4-supermask", "--dataset", "nope"], "unknown dataset 'nope' for strategy 'frl'"),
    (["--model", "conv4-supermask", "--dataset", "tweets"], "needs an image dataset (fashion-mnist)"),
    (["--model", "minilm-l6", "--dataset", "fashion-mnist"], "needs a text classification dataset"),
    (["--model", "conv4-supermask", "--dataset", "fashion-mnist", "--attack", "alie",
      "--attack-fraction", "0.1"], "attack 'alie' does not apply to FRL"),
])
def test_frl_preflight_errors_are_clear(argv: list[str], fragment: str, capsys: pytest.CaptureFixture,
                                        tmp_path: Path) -> None:
    code = main(["simulate", "--strategy", "frl", *argv, "--out", str(tmp_path / "run")])
    out = " ".join(capsys.readouterr().out.split())
    assert code != 0 and fragment in out and "Traceback" not in out, out
    assert not (tmp_path / "run" / "logs").exists()


def test_missing_dataset_names_the_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLLEN_FASHION_MNIST_DIR", str(tmp_path / "absent"))
    with pytest.raises(DataError, match="sudo apt-get install dataset-fashion-mnist"):
        preflight(_cfg())


@needs_data
def test_auto_partition_is_seeded_dirichlet_and_non_empty() -> None:
    cfg = _cfg(**{"federation.clients": 20, "data.max_client_examples": 0})
    parts = [client_indices(cfg, p, 20) for p in range(20)]
    assert min(len(p) for p in parts) > 0 and sum(len(p) for p in parts) == 60_000
    assert len(np.unique(np.concatenate(parts))) == 60_000
    labels = frl_runtime(cfg).split.train_y
    # Dirichlet(0.5) over labels: clients' label histograms differ a lot (IID would be ~uniform)
    hist = np.stack([np.bincount(labels[p], minlength=10) / len(p) for p in parts])
    assert hist.max(axis=1).mean() > 0.3
    again = _cfg(**{"federation.clients": 20, "data.max_client_examples": 0, "run.seed": 0})
    assert np.array_equal(client_indices(again, 7, 20), parts[7])
    other = _cfg(**{"federation.clients": 20, "data.max_client_examples": 0, "run.seed": 1})
    assert not np.array_equal(client_indices(other, 7, 20), parts[7])
    with pytest.raises(DataError, match="only 10 categories"):
        preflight(_cfg(**{"data.partition": "natural", "federation.clients": 11}))


@needs_data
def test_client_handler_trains_and_replies_with_a_valid_ranking() -> None:
    import pollen.client.app as client_app

    cfg = _cfg()
    preflight(cfg)
    strategy = build_strategy(StrategyContext(cfg=cfg, tensor_names=[]))
    # the server's score multiset is the one a fresh model built from the seed has
    fresh = get_scores(build_supermask_model("conv4-supermask", seed=cfg.run.seed))
    assert all(torch.equal(strategy.state.sorted_scores[k], torch.sort(v.flatten()).values)
               for k, v in fresh.items())
    grid = InProcessGrid(4, lambda m, c: m)
    msg = list(strategy.configure_train(1, strategy.initial_arrays(), ConfigRecord(), grid))[2]
    ctx = Context(run_id=1, node_id=msg.metadata.dst_node_id,
                  node_config={"partition-id": 2, "num-partitions": 4}, state=RecordDict(),
                  run_config={CONFIG_KEY: cfg.to_json()})
    reply = client_app.train(msg, ctx)
    sizes = strategy.state.layer_sizes()
    mine = decode_rankings(reply.content[RECORD][RANKING], sizes, client="test")
    metrics = reply.content["metrics"]
    assert metrics["num-examples"] == 64 and metrics["partition-id"] == 2
    assert np.isfinite(metrics["train_loss"])
    # it trained: its ranking moved away from the broadcast one, most in the layers with most gradient
    moved = sum(int((mine[k] != strategy.state.rankings[k]).sum()) for k in sizes)
    assert moved > 0.1 * sum(sizes.values())
    # ...and it is the ranking of the client's trained scores, by SIGNED score
    trained = get_scores(frl_runtime(cfg).model)
    assert all(torch.equal(mine[k], rank_scores(trained[k].cpu())) for k in sizes)
    arrays, agg = strategy.aggregate_train(1, [reply])
    assert arrays is not None and agg["accepted"] == 1


def test_saved_state_round_trips(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    state = FRLServerState.from_scores({"a": torch.randn(3, 4, generator=g), "b": torch.randn(5, generator=g)})
    state.update([{"a": torch.randperm(12, generator=g), "b": torch.randperm(5, generator=g)}])
    cfg = _cfg()
    target = save_frl(tmp_path, state, cfg, {"note": 1})
    loaded, cfg2, manifest = load_frl_state(target)
    assert cfg2.to_dict() == cfg.to_dict() and manifest["note"] == 1
    assert manifest["layers"]["a"] == {"shape": [3, 4], "edges": 12, "kept": 6}
    assert all(torch.equal(loaded.rankings[k], state.rankings[k]) and
               torch.equal(loaded.sorted_scores[k], state.sorted_scores[k]) for k in ("a", "b"))
    assert not list(target.glob(".*"))  # atomic writes leave no temp files
    (target / "frl.json").write_text("{}")
    with pytest.raises(Exception, match="not a pollen-frl/1 manifest"):
        load_frl_state(target)


def test_unknown_strategy_params_are_rejected() -> None:
    with pytest.raises(ConfigError, match="has no parameter 'beta'"):
        build_strategy(StrategyContext(cfg=_cfg(**{"strategy.params": {"beta": 1.0}}), tensor_names=[]))
