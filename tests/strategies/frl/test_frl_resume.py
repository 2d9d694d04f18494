"""FRL's strategy state survives a checkpoint: the global ranking and score multiset round-trip through
pollen/server/checkpoint.py, and a checkpoint of another run (other multiset, broken ranking) is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pollen.config import PollenConfig
from pollen.errors import ConfigError
from pollen.server.checkpoint import load_checkpoint, restore_strategy, save_checkpoint
from pollen.strategies import METHODS
from pollen.strategies.frl.core import FRLServerState
from pollen.strategies.frl.strategy import FRLStrategy


def _strategy(seed: int = 0) -> FRLStrategy:
    gen = torch.Generator().manual_seed(seed)
    scores = {"conv.scores": torch.randn(4, 3, generator=gen), "fc.scores": torch.randn(7, generator=gen)}
    return FRLStrategy(FRLServerState.from_scores(scores), lr=0.4, lr_decay=0.999, local_epochs=1)


def _voted(strategy: FRLStrategy, seed: int) -> None:
    """Move the global ranking away from S⁰ the way a round does: a vote over client rankings."""
    gen = torch.Generator().manual_seed(seed)
    votes = [{k: torch.randperm(n, generator=gen) for k, n in strategy.state.layer_sizes().items()}
             for _ in range(3)]
    strategy.state.update(votes)


def _cfg() -> PollenConfig:
    return PollenConfig.load(None, {"strategy.name": "frl", "run.rounds": 3})


def test_frl_is_resumable() -> None:
    assert METHODS.get("frl").resumable


def test_checkpoint_round_trips_the_global_ranking(tmp_path: Path) -> None:
    before = _strategy()
    _voted(before, 1)
    arrays = {k: r.numpy().copy() for k, r in before.state.rankings.items()}
    save_checkpoint(tmp_path, _cfg(), 2, arrays, [], before)
    after = _strategy()  # a fresh server: S⁰ ranking, same seed-derived multiset
    assert any(not torch.equal(after.state.rankings[k], before.state.rankings[k]) for k in arrays)
    ckpt = load_checkpoint(tmp_path, _cfg())
    restore_strategy(after, ckpt)
    assert ckpt.round == 2
    for k, ranking in arrays.items():
        assert torch.equal(after.state.rankings[k], before.state.rankings[k])
        assert after.state.rankings[k].dtype == torch.int64
        assert torch.equal(after.state.sorted_scores[k], before.state.sorted_scores[k])
        np.testing.assert_array_equal(ckpt.arrays[k], ranking)
    for k, v in before.state.global_scores().items():
        assert torch.equal(after.state.global_scores()[k], v)


def test_a_checkpoint_of_another_run_is_refused(tmp_path: Path) -> None:
    other = _strategy(seed=5)  # other seed: another score multiset
    save_checkpoint(tmp_path, _cfg(), 1, {}, [], other)
    with pytest.raises(ConfigError, match="score multiset"):
        restore_strategy(_strategy(), load_checkpoint(tmp_path, _cfg()))


def test_a_corrupt_ranking_is_refused(tmp_path: Path) -> None:
    s = _strategy()
    state = s.state_dict()
    state["fc.scores.ranking"] = np.zeros(7, dtype=np.int64)  # not a permutation
    with pytest.raises(ConfigError, match="permutation"):
        _strategy().load_state_dict(state)
    state = s.state_dict()
    del state["conv.scores.ranking"]
    with pytest.raises(ConfigError, match="keys differ"):
        _strategy().load_state_dict(state)
    state = {**s.state_dict(), "weighted": True}
    with pytest.raises(ConfigError, match="weighting"):
        _strategy().load_state_dict(state)
