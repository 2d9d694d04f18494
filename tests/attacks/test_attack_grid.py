"""AttackGrid: exactly the selected attackers' updates are replaced, by the catalogue's rules,
deterministically by seed; benign replies pass untouched; the config is checked up front."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Message, RecordDict

from pollen.attacks import ATTACKS, check_attack, select_attackers
from pollen.config import PollenConfig
from pollen.errors import ConfigError, UnknownNameError
from pollen.protocol.grid import LocalGrid
from pollen.server.attack_grid import AttackGrid
from tests.attacks.flower_msgs import (
    flat,
    global_record,
    make_round,
    reply_content,
    state_from_flat,
)

N = 10


def _cfg(name: str, fraction: float = 0.3, seed: int = 7, **params) -> PollenConfig:
    cfg = PollenConfig.load(None, {"federation.clients": N, "attack.name": name,
                                   "attack.fraction": fraction, "attack.seed": seed})
    cfg.attack.params = params
    return cfg


def _honest_deltas(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    d = flat(global_record()).size
    return (rng.normal(size=d) + 0.3 * rng.normal(size=(N, d))).astype(np.float32)


class _Replay(LocalGrid):
    """Hands back prebuilt replies, so the test controls every byte the AttackGrid sees."""

    def __init__(self, replies: list[Message]) -> None:
        super().__init__(lambda m, p: RecordDict(), N)
        self.replies = replies

    def send_and_receive(self, messages, *, timeout=None):
        return list(self.replies)


def _attack_round(cfg: PollenConfig, deltas: np.ndarray, server_round: int = 1):
    glob = global_record()
    states = [state_from_flat(flat(glob) + deltas[i]) for i in range(N)]
    sent, replies = make_round(glob, states, server_round=server_round)
    grid = AttackGrid(_Replay(replies), cfg)
    out = list(grid.send_and_receive(sent))
    got = np.stack([flat(r.content["arrays"]) - flat(glob) for r in out])
    untouched = [i for i in range(N) if np.array_equal(flat(out[i].content["arrays"]),
                                                       flat(glob) + deltas[i])]
    return got, grid, untouched


@pytest.mark.parametrize("name", ["signflip", "gaussian", "alie", "ipm", "minmax", "uniform"])
def test_exactly_the_selected_attackers_are_replaced(name: str):
    cfg = _cfg(name)
    deltas = _honest_deltas()
    got, grid, untouched = _attack_round(cfg, deltas)
    attackers = select_attackers(N, 0.3, 7)
    assert len(attackers) == 3 and grid.history[0].replaced == attackers
    benign = [i for i in range(N) if i not in attackers]
    assert untouched == benign  # benign replies are bit-identical; every attacker's changed
    for i in attackers:
        assert not np.allclose(got[i], deltas[i], atol=1e-3)
    if ATTACKS.get(name).collusive:  # the catalogue's vector, computed from the benign updates
        expected = ATTACKS.get(name)(torch.from_numpy(deltas[attackers[0]]),
                                     torch.from_numpy(deltas[benign]), N, 3, torch.Generator())
        for i in attackers:
            np.testing.assert_allclose(got[i], expected.numpy(), rtol=1e-5, atol=1e-5)


def test_signflip_sends_the_negated_own_update():
    deltas = _honest_deltas(1)
    got, grid, _ = _attack_round(_cfg("signflip", c=2.0), deltas)
    for i in grid.history[0].replaced:
        np.testing.assert_allclose(got[i], -2.0 * deltas[i], rtol=1e-5, atol=1e-5)


def test_noise_attacks_are_reproducible_by_seed_and_vary_by_round():
    deltas = _honest_deltas(2)
    a, _, _ = _attack_round(_cfg("gaussian", seed=3), deltas)
    b, _, _ = _attack_round(_cfg("gaussian", seed=3), deltas)
    c, _, _ = _attack_round(_cfg("gaussian", seed=3), deltas, server_round=2)
    _, grid_d, _ = _attack_round(_cfg("gaussian", seed=4), deltas)
    np.testing.assert_array_equal(a, b)
    att = select_attackers(N, 0.3, 3)
    assert not np.allclose(a[att], c[att])
    assert select_attackers(N, 0.3, 4) == grid_d.history[0].replaced != att


def test_replies_without_identity_or_with_errors_are_left_alone():
    glob = global_record()
    deltas = _honest_deltas(3)
    sent, replies = make_round(glob, [state_from_flat(flat(glob) + deltas[i]) for i in range(N)])
    attackers = select_attackers(N, 0.3, 7)
    anon = attackers[0]  # an attacker's reply that does not declare its partition
    replies[anon] = Message(reply_content(state_from_flat(flat(glob) + deltas[anon])),
                            reply_to=sent[anon])
    grid = AttackGrid(_Replay(replies), _cfg("ipm"))
    out = list(grid.send_and_receive(sent))
    assert grid.history[0].replaced == attackers[1:]
    np.testing.assert_allclose(flat(out[anon].content["arrays"]) - flat(glob), deltas[anon], atol=1e-6)


def test_attack_config_is_checked_up_front():
    with pytest.raises(UnknownNameError, match="unknown attack 'nope'; choose one of: .*alie"):
        check_attack(_cfg("nope"))
    with pytest.raises(ConfigError, match="no parameter.*zz"):
        check_attack(_cfg("ipm", zz=1))
    with pytest.raises(ConfigError, match="selects no attacker"):
        check_attack(_cfg("ipm", fraction=0.05))
    assert check_attack(_cfg("scaling", base="global")).name == "scaling"
    assert check_attack(PollenConfig()) is None


def test_scaling_with_global_base_follows_frl():
    deltas = _honest_deltas(4)
    got, grid, _ = _attack_round(_cfg("scaling", factor=10.0, base="global"), deltas)
    g = flat(global_record())
    for i in grid.history[0].replaced:
        np.testing.assert_allclose(got[i], 10.0 * g, rtol=1e-5, atol=1e-4)
