import numpy as np
import pytest

from pollen.config import PollenConfig
from pollen.errors import ConfigError, UnknownNameError
from pollen.strategies import StrategyContext, build_strategy
from tests.strategies.helpers import reply

NAMES = ["m.lora_A.default.weight", "m.lora_B.default.weight", "head.weight"]


def _state(rng):
    return {NAMES[0]: rng.normal(size=(2, 6)).astype(np.float32),
            NAMES[1]: rng.normal(size=(5, 2)).astype(np.float32),
            NAMES[2]: rng.normal(size=(3,)).astype(np.float32)}


def _strategy(**over):
    cfg = PollenConfig.load(None, {"federation.clients": "3", **over})
    return build_strategy(StrategyContext(cfg=cfg, tensor_names=NAMES))


def test_factor_mode_is_sample_weighted_fedavg_of_every_tensor():
    rng = np.random.default_rng(0)
    states, n = [_state(rng) for _ in range(3)], [10, 30, 60]
    arrays, metrics = _strategy().aggregate_train(1, [reply(s, k, i + 1, train_loss=float(i))
                                                      for i, (s, k) in enumerate(zip(states, n))])
    w = np.array(n) / sum(n)
    for name in NAMES:
        np.testing.assert_allclose(arrays[name].numpy(), sum(wi * s[name] for wi, s in zip(w, states)),
                                   rtol=1e-5, atol=1e-6)
    assert metrics["train_loss"] == pytest.approx(w @ np.arange(3.0))


def test_exact_mode_merges_lora_products_and_averages_the_rest():
    rng = np.random.default_rng(1)
    states, n = [_state(rng) for _ in range(3)], [10, 30, 60]
    arrays, _ = _strategy(**{"strategy.lora_aggregation": "exact"}).aggregate_train(
        1, [reply(s, k, i + 1) for i, (s, k) in enumerate(zip(states, n))])
    w = np.array(n) / sum(n)
    merged = arrays[NAMES[1]].numpy() @ arrays[NAMES[0]].numpy()
    target = sum(wi * s[NAMES[1]] @ s[NAMES[0]] for wi, s in zip(w, states))
    s = np.linalg.svd(target, compute_uv=False)  # rank 2 of a rank<=6 mean: optimal truncation
    assert np.linalg.norm(merged - target) == pytest.approx(np.sqrt((s[2:] ** 2).sum()), rel=1e-4)
    np.testing.assert_allclose(arrays[NAMES[2]].numpy(), sum(wi * st[NAMES[2]] for wi, st in zip(w, states)),
                               rtol=1e-5)


def test_unknown_strategy_and_params_are_clear_errors():
    with pytest.raises(UnknownNameError, match="unknown strategy 'nope'"):
        _strategy(**{"strategy.name": "nope"})
    cfg = PollenConfig.load(None, {"strategy.name": "trimmedmean"})
    cfg.strategy.params = {"betta": 0.1}
    with pytest.raises(ConfigError, match="has no parameter 'betta'"):
        build_strategy(StrategyContext(cfg=cfg, tensor_names=NAMES))
