"""Bad input fails fast with a clear message and a non-zero exit, before any process starts."""

import pytest

from pollen.cli import main


@pytest.mark.parametrize("argv, fragment", [
    (["simulate", "--model", "gpt-17"], "unknown model 'gpt-17'"),
    (["simulate", "--dataset", "nope"], "unknown dataset 'nope'"),
    (["simulate", "--strategy", "fedmagic"], "unknown strategy 'fedmagic'"),
    (["simulate", "--config", "/no/such/run.toml"], "does not exist"),
    (["simulate", "--clients", "22"], "only 21 categories"),
    (["simulate", "--partition", "iid", "--clients", "5000"], "only 1179 training examples"),
    (["simulate", "--rounds", "-1"], "run.rounds: must be >= 1"),
    (["simulate", "--lr", "fast"], "train.lr: expected float"),
    (["simulate", "--set", "train.lr"], "--set expects SECTION.KEY=VALUE"),
    (["simulate", "--peft", "bias"], "has no bias terms"),
    (["server", "--insecure", "--host", "0.0.0.0"], "loopback only"),
    (["server"], "TLS by default"),
    (["server", "--insecure", "--resume"], "--resume: no checkpoint"),
    (["deploy", "local", "--clients", "0", "--config", "run.toml"], "need at least one client"),
    (["client", "--server", "127.0.0.1:9092", "--partition-id", "3", "--num-partitions", "3",
      "--insecure"], "--partition-id must be in [0, 3)"),
])
def test_bad_input_is_a_clear_error(argv, fragment, capsys, tmp_path):
    if argv[0] in ("simulate", "server"):
        argv = [*argv, "--out", str(tmp_path / "run")]
    code = main(argv)
    out = capsys.readouterr().out
    assert code != 0
    assert fragment in " ".join(out.split()), out
    assert "Traceback" not in out
    assert not (tmp_path / "run" / "logs").exists()  # nothing was started


@pytest.mark.parametrize("argv, fragment", [
    (["simulate", "--strategy", "fedpeftt"], "(did you mean 'fedpeft'?)"),
    (["simulate", "--model", "smollm2"], "(did you mean 'smollm2-135m'?)"),
    (["simulate", "--dataset", "chaterbot"], "(did you mean 'chatterbot'?)"),
    (["simulate", "--set", "train.lrr=1"], "(did you mean 'train.lr'?)"),
    (["simulate", "--set", "trian.lr=1"], "(did you mean 'train.lr'?)"),
    (["simulate", "--preset", "frl"], "(did you mean 'frl-fashion'?)"),
    (["simulate", "--preset", "default", "--config", "x.toml"], "not both"),
])
def test_typos_get_a_suggestion(argv, fragment, capsys, tmp_path):
    code = main([*argv, "--out", str(tmp_path / "run")])
    out = " ".join(capsys.readouterr().out.split())
    assert code != 0 and fragment in out, out


def test_bracketed_words_survive_in_errors(capsys, tmp_path):
    """Rich markup must not eat "[train]" or crash on a section named like a closing tag."""
    assert main(["simulate", "--set", "train.lrr=1", "--out", str(tmp_path / "r")]) != 0
    assert "[train] has:" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text('["/x"]\nk = 1\n')
    assert main(["simulate", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    out = capsys.readouterr().out
    assert "unknown config section [/x]" in out and "Traceback" not in out


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("pollen ")


def test_config_lists_every_key_with_help(capsys):
    from pollen.config import HELP, PollenConfig, all_keys

    keys = all_keys(PollenConfig())
    assert set(HELP) == set(keys), "pollen/config_help.py HELP must have exactly one line per key"
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "[train]" in out  # section headers survive Rich
    for key in keys:
        assert key in out


def test_config_write_is_a_starter_that_loads_back(tmp_path, capsys):
    from pollen.config import PollenConfig

    target = tmp_path / "run.toml"
    assert main(["config", "--preset", "classification", "--set", "train.lr=0.01",
                 "--write", str(target)]) == 0
    loaded = PollenConfig.load(target)
    assert loaded.model.name == "minilm-l6" and loaded.train.lr == 0.01
    assert loaded.run.out == "runs/latest"  # as written, not made absolute
    assert "# local learning rate" in target.read_text()
    assert main(["config", "--write", str(target)]) == 2  # never clobbers silently
    assert "--overwrite" in capsys.readouterr().out


def test_every_preset_is_a_valid_config_with_known_names():
    import pollen.data.load  # noqa: F401  (registers the built-in datasets)
    from pollen.attacks import ATTACKS
    from pollen.cli import PRESETS, preset_names
    from pollen.config import PollenConfig
    from pollen.data.registry import DATASETS
    from pollen.models.registry import MODELS
    from pollen.strategies.frl import runtime as frl_runtime
    from pollen.strategies.registry import STRATEGIES

    names = preset_names()
    assert {"default", "compressed", "classification", "fedkseed", "frl-fashion"} <= set(names)
    for name in names:
        cfg = PollenConfig.load(PRESETS / f"{name}.toml")
        assert cfg.strategy.name in STRATEGIES, name
        if cfg.strategy.name == "frl":  # supermask models and image data have their own names
            assert cfg.model.name in frl_runtime.model_names(), name
            assert cfg.data.name in frl_runtime.dataset_names(), name
        else:
            assert cfg.model.name in MODELS, name
            assert cfg.data.name in DATASETS, name
        assert not cfg.attack.name or cfg.attack.name in ATTACKS, name
    assert PollenConfig.load(PRESETS / "default.toml").to_dict() == PollenConfig.load(None).to_dict()
