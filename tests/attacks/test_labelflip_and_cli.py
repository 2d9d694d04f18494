"""Data-side attacks on the client path, and attack config errors from the CLI before any process."""

from __future__ import annotations

import numpy as np
import pytest

from pollen.attacks import select_attackers
from pollen.attacks.poison import attacker_ids, poison_client_data, poison_dataset
from pollen.config import PollenConfig
from pollen.data.registry import TextDataset
from pollen.errors import ConfigError


def _cfg(name: str = "labelflip", clients: int = 6, fraction: float = 0.5, **extra) -> PollenConfig:
    return PollenConfig.load(None, {"federation.clients": clients, "attack.name": name,
                                    "attack.fraction": fraction, "attack.seed": 5, **extra})


def _cls(n: int = 40) -> TextDataset:
    y = np.random.default_rng(0).integers(0, 3, n)
    return TextDataset(task="seq-cls", prompts=[f"t{i}" for i in range(n)], labels=y, groups=y)


def test_labelflip_flips_only_the_attackers_labels():
    cfg, ds = _cfg(), _cls()
    attackers = select_attackers(6, 0.5, 5)
    assert attacker_ids(cfg) == attackers and len(attackers) == 3
    for pid in range(6):
        got = poison_client_data(cfg, pid, ds, num_labels=3)
        if pid in attackers:
            np.testing.assert_array_equal(got.labels, 2 - ds.labels)
            assert got.prompts == ds.prompts
        else:
            assert got is ds
    assert (ds.labels == np.random.default_rng(0).integers(0, 3, 40)).all()  # input untouched


def test_update_attacks_leave_client_data_alone():
    ds = _cls()
    for pid in range(6):
        assert poison_client_data(_cfg("alie"), pid, ds, 3) is ds
        assert poison_client_data(PollenConfig(), pid, ds, 3) is ds


def test_causal_lm_responses_are_shuffled_with_no_fixed_point():
    ds = TextDataset(task="causal-lm", prompts=[f"q{i}" for i in range(9)],
                     responses=[f"a{i}" for i in range(9)])
    got = poison_dataset(ds, 0, seed=1)
    assert sorted(got.responses) == sorted(ds.responses)
    assert all(r != f"a{i}" for i, r in enumerate(got.responses))
    assert got.prompts == ds.prompts
    assert poison_dataset(ds, 0, seed=1).responses == got.responses  # seeded
    with pytest.raises(ConfigError, match="num_classes"):
        poison_dataset(_cls(), 1, seed=0)


def test_cli_rejects_an_unknown_attack_before_starting_anything(tmp_path, capsys, monkeypatch):
    from pollen.cli import main
    from pollen.deploy import federation as runner

    def boom(*a, **k):  # pragma: no cover - reaching it is the failure
        raise AssertionError("a process was started")

    monkeypatch.setattr(runner, "start_superlink", boom)
    out = tmp_path / "run"
    code = main(["simulate", "--attack", "nope", "--attack-fraction", "0.2", "--out", str(out)])
    text = capsys.readouterr().out
    assert code != 0
    assert "unknown attack 'nope'" in text and "signflip" in text and "minmax" in text
    assert not out.exists()


def test_cli_rejects_a_fraction_that_selects_nobody(capsys, tmp_path):
    from pollen.cli import main

    code = main(["simulate", "--attack", "ipm", "--attack-fraction", "0.1", "--clients", "4",
                 "--out", str(tmp_path / "r")])
    assert code != 0 and "selects no attacker" in capsys.readouterr().out
