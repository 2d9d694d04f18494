import numpy as np
import pytest
from flwr.app import MetricRecord

from pollen.config import PollenConfig
from pollen.errors import ConfigError, UnknownNameError
from pollen.strategies import StrategyContext, build_strategy
from tests.strategies.helpers import TIMING, reply

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


def test_factor_mode_global_product_is_mean_b_times_mean_a():
    rng = np.random.default_rng(2)
    states, n = [_state(rng) for _ in range(3)], [10, 30, 60]
    arrays, _ = _strategy().aggregate_train(1, [reply(s, k, i + 1) for i, (s, k) in enumerate(zip(states, n))])
    w = np.array(n) / sum(n)
    mean = {k: sum(wi * s[k] for wi, s in zip(w, states)) for k in NAMES[:2]}
    got = arrays[NAMES[1]].numpy() @ arrays[NAMES[0]].numpy()
    np.testing.assert_allclose(got, mean[NAMES[1]] @ mean[NAMES[0]], rtol=1e-5, atol=1e-6)
    target = sum(wi * s[NAMES[1]] @ s[NAMES[0]] for wi, s in zip(w, states))
    assert np.linalg.norm(got - target) > 0.1 * np.linalg.norm(target)  # not the mean update


def test_svd_mode_merges_lora_products_and_averages_the_rest():
    rng = np.random.default_rng(1)
    states, n = [_state(rng) for _ in range(3)], [10, 30, 60]
    arrays, _ = _strategy(**{"strategy.lora_aggregation": "svd"}).aggregate_train(
        1, [reply(s, k, i + 1) for i, (s, k) in enumerate(zip(states, n))])
    w = np.array(n) / sum(n)
    merged = arrays[NAMES[1]].numpy() @ arrays[NAMES[0]].numpy()
    target = sum(wi * s[NAMES[1]] @ s[NAMES[0]] for wi, s in zip(w, states))
    s = np.linalg.svd(target, compute_uv=False)  # rank 2 of a rank<=6 mean: optimal truncation
    assert np.linalg.norm(merged - target) == pytest.approx(np.sqrt((s[2:] ** 2).sum()), rel=1e-4)
    np.testing.assert_allclose(arrays[NAMES[2]].numpy(), sum(wi * st[NAMES[2]] for wi, st in zip(w, states)),
                               rtol=1e-5)


def test_exact_mode_global_model_is_the_mean_of_client_models_over_rounds():
    """Through Flower's `start` on a LocalGrid: clients get (B̄, Ā) plus the residual record, train
    (here: random steps) and the global R + B̄Ā equals Σ wᵢ(R + BᵢAᵢ) each round (BA units)."""
    from flwr.app import RecordDict

    from pollen.protocol.grid import LocalGrid
    from pollen.protocol.records import from_arrays, to_arrays
    from pollen.strategies.fedpeft.lora_exact import (
        RESIDUAL_RECORD,
        residual_key,
        residual_matrix,
        residual_of,
    )

    rng = np.random.default_rng(3)
    sizes, key = [10, 30, 60], residual_key(NAMES[0])
    seen: dict[int, list[tuple[np.ndarray, int]]] = {}
    sent_residual: list[bool] = []

    def client(msg, pid):
        rnd = int(msg.content["config"]["server-round"])
        glob = from_arrays(msg.content["arrays"])
        assert set(glob) == set(NAMES)  # the residual never rides in "arrays" (reply contract, codec)
        res = from_arrays(msg.content[RESIDUAL_RECORD]) if RESIDUAL_RECORD in msg.content else {}
        sent_residual.append(bool(res))
        local = {k: (v + 0.5 * rng.normal(size=v.shape)).astype(np.float32) for k, v in glob.items()}
        R = residual_matrix(residual_of(res, key)) if res else 0.0
        seen.setdefault(rnd, []).append((R + local[NAMES[1]].astype(np.float64) @ local[NAMES[0]], sizes[pid]))
        return RecordDict({"arrays": to_arrays(local),
                           "metrics": MetricRecord({**TIMING, "num-examples": sizes[pid], "train_loss": 1.0})})

    strategy = _strategy(**{"strategy.lora_aggregation": "exact"})
    init = _state(rng)
    globals_: list[dict[str, np.ndarray]] = []
    result = strategy.start(grid=LocalGrid(client, 3, seed=0), initial_arrays=to_arrays(init), num_rounds=3,
                            evaluate_fn=lambda rnd, arrays: globals_.append(from_arrays(arrays)))
    assert sent_residual == [False] * 3 + [True] * 6  # round 1 has no residual yet
    for rnd in (1, 2, 3):
        g = globals_[rnd]
        want = sum(n * prod for prod, n in seen[rnd]) / sum(sizes)
        got = residual_matrix(residual_of(g, key)) + g[NAMES[1]].astype(np.float64) @ g[NAMES[0]]
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-6, rnd
    assert set(from_arrays(result.arrays)) == set(globals_[3])


def test_unknown_strategy_and_params_are_clear_errors():
    with pytest.raises(UnknownNameError, match="unknown strategy 'nope'"):
        _strategy(**{"strategy.name": "nope"})
    cfg = PollenConfig.load(None, {"strategy.name": "trimmedmean"})
    cfg.strategy.params = {"betta": 0.1}
    with pytest.raises(ConfigError, match="has no parameter 'betta'"):
        build_strategy(StrategyContext(cfg=cfg, tensor_names=NAMES))
