import pytest

from pollen.config import PollenConfig
from pollen.errors import ConfigError


def test_defaults_are_valid_and_round_trip_through_toml_and_json(tmp_path):
    cfg = PollenConfig().validate()
    path = tmp_path / "run.toml"
    cfg.save(path)
    assert PollenConfig.load(path) == cfg
    assert PollenConfig.from_json(cfg.to_json()) == cfg


def test_file_then_overrides_with_type_coercion(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[run]\nrounds = 7\n[train]\nlr = 0.01\n[model]\ntarget_modules = ["q_proj"]\n')
    cfg = PollenConfig.load(path, {"train.lr": "1e-3", "federation.clients": "5"})
    assert (cfg.run.rounds, cfg.train.lr, cfg.federation.clients) == (7, 1e-3, 5)
    assert cfg.model.target_modules == ["q_proj"]


@pytest.mark.parametrize("overrides, fragment", [
    ({"train.lr": "abc"}, "train.lr: expected float"),
    ({"train.lr": "-1"}, "train.lr: must be > 0"),
    ({"train.lr": "nan"}, "finite"),
    ({"federation.clients": "0"}, "federation.clients"),
    ({"run.rounds": "2.5"}, "run.rounds: expected int"),
    ({"train.lrr": "1"}, "unknown config key 'train.lrr'"),
    ({"nosection.x": "1"}, "unknown config key"),
    ({"data.partition": "random"}, "data.partition"),
    ({"attack.name": "alie"}, "needs a fraction > 0"),
    ({"strategy.lora_aggregation": "fedex"}, "strategy.lora_aggregation: must be 'factors', 'svd' or"),
])
def test_bad_values_name_the_key(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        PollenConfig.load(None, overrides)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        PollenConfig.load(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\nrounds=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        PollenConfig.load(bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[wat]\nx = 1\n")
    with pytest.raises(ConfigError, match=r"unknown config section \[wat\]"):
        PollenConfig.load(unknown)


@pytest.mark.parametrize("mode", ["factors", "svd", "exact"])
def test_lora_aggregation_modes_are_accepted(mode):
    assert PollenConfig.load(None, {"strategy.lora_aggregation": mode}).strategy.lora_aggregation == mode
