"""Pollen as a Flower app: the repository's `[tool.flwr.app]`, the dotted run-config keys -> PollenConfig,
where a `flwr run` writes, and what `flwr build` ships (all in-process and fast)."""

from __future__ import annotations

import io
import json
import tomllib
import zipfile
from pathlib import Path

import pytest
from flwr.app import Context, RecordDict
from flwr.common.config import flatten_dict

from pollen.config import PollenConfig, all_keys
from pollen.errors import ConfigError
from pollen.protocol.records import CONFIG_KEY, config_from_context
from pollen.protocol.run_config import (
    config_from_run_config,
    prepare_out,
    pyproject_table_text,
    resolve_out,
    rewrite_pyproject,
    run_config_table,
)

ROOT = Path(__file__).resolve().parents[2]


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def flower_defaults() -> dict:
    """What Flower hands the apps when nothing is overridden: the flattened config table."""
    return flatten_dict(pyproject()["tool"]["flwr"]["app"]["config"])


def test_pyproject_table_equals_the_dataclass_defaults() -> None:
    # Fails when a config key is added, renamed or changes its default without regenerating:
    #   python -m pollen.protocol.run_config --write pyproject.toml
    again = "regenerate: python -m pollen.protocol.run_config --write pyproject.toml"
    assert flower_defaults() == run_config_table(), again
    assert list(flower_defaults()) == all_keys(PollenConfig()), again
    text = (ROOT / "pyproject.toml").read_text()
    assert rewrite_pyproject(text) == text, again  # the block is exactly what the generator writes


def test_pyproject_names_pollens_components() -> None:
    app = pyproject()["tool"]["flwr"]["app"]
    assert app["publisher"] == "pollen"
    assert app["components"] == {"serverapp": "pollen.server.app:app",
                                 "clientapp": "pollen.client.app:app"}


def test_defaults_give_the_default_config() -> None:
    assert config_from_run_config(flower_defaults()).to_dict() == PollenConfig.load(None).to_dict()


def test_overrides_lists_and_tables() -> None:
    rc = flower_defaults() | {"train.lr": 1e-3, "federation.clients": 8,
                              "model.target_modules": "q_proj, v_proj",
                              "strategy.params": '{"clip": 1.5}', "run.rounds": "5"}
    cfg = config_from_run_config(rc)
    assert cfg.train.lr == 1e-3 and cfg.federation.clients == 8 and cfg.run.rounds == 5
    assert cfg.model.target_modules == ["q_proj", "v_proj"]
    assert cfg.strategy.params == {"clip": 1.5}
    # The same values through Pollen's own JSON key: one config, two doors.
    assert PollenConfig.from_json(cfg.to_json()).to_dict() == cfg.to_dict()


def test_model_recipe_fills_only_keys_left_at_default() -> None:
    from pollen.models.registry import recipe_for

    recipe = recipe_for("minilm-l6")
    if not recipe:
        pytest.skip("minilm-l6 has no recipe")
    key, value = next(iter(recipe.items()))
    cfg = config_from_run_config(flower_defaults() | {"model.name": "minilm-l6"})
    assert PollenConfig.load(None, {"model.name": "minilm-l6"}).to_dict() == cfg.to_dict()
    mine = 0.125 if isinstance(value, float) else value
    cfg = config_from_run_config(flower_defaults() | {"model.name": "minilm-l6", key: mine})
    section, _, name = key.partition(".")
    assert getattr(getattr(cfg, section), name) == mine


@pytest.mark.parametrize(("key", "value", "says"), [
    ("train.lr", "fast", "config train.lr: expected float"),
    ("train.lr", -1.0, "config train.lr: must be > 0"),
    ("federation.clients", 0, "config federation.clients: must be >= 1"),
    ("run.allow_empty_rounds", "maybe", "config run.allow_empty_rounds"),
    ("strategy.params", "{clip: 1}", "config strategy.params: must be a JSON object"),
    ("attack.params", "[1, 2]", "config attack.params: must be a JSON object"),
    ("train.lrr", 1.0, "unknown config key 'train.lrr' (did you mean 'train.lr'"),
])
def test_a_bad_key_or_value_is_one_line_naming_it(key, value, says) -> None:
    with pytest.raises(ConfigError) as e:
        config_from_run_config(flower_defaults() | {key: value})
    assert says in str(e.value) and "\n" not in str(e.value)


def test_context_takes_either_door() -> None:
    cfg = PollenConfig.load(None, {"train.lr": 0.5})

    def ctx(run_config: dict) -> Context:
        return Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config=run_config)

    # Pollen's launcher: the JSON key (and the fixed FAB declares the dotted keys nowhere).
    assert config_from_context(ctx({CONFIG_KEY: cfg.to_json()})).train.lr == 0.5
    # `flwr run .`: the repository's FAB has no JSON key, only the dotted ones.
    assert config_from_context(ctx(flower_defaults() | {"train.lr": 0.5})).train.lr == 0.5
    with pytest.raises(ConfigError, match="neither 'pollen-config' nor Pollen's dotted keys"):
        config_from_context(ctx({"lr": 0.1}))


def test_relative_out_goes_under_pollen_home(tmp_path: Path) -> None:
    assert resolve_out("runs/a", {"POLLEN_HOME": str(tmp_path)}) == tmp_path / "runs/a"
    assert resolve_out(str(tmp_path / "x"), {}) == tmp_path / "x"
    assert resolve_out("runs/latest", {}) == Path.home() / "pollen" / "runs/latest"


def test_prepare_out_saves_the_config_and_refuses_an_unwritable_dir(tmp_path: Path) -> None:
    cfg = PollenConfig.load(None, {"run.out": "r1"})
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "metrics.json").write_text("{}")  # a previous run's results
    out = prepare_out(cfg, {"POLLEN_HOME": str(tmp_path)})
    assert out == tmp_path / "r1" and not (out / "metrics.json").exists()
    assert PollenConfig.load(out / "config.toml").run.out == str(out)
    (tmp_path / "file").write_text("")
    cfg.run.out = str(tmp_path / "file")
    with pytest.raises(ConfigError, match="run.out .* exists and is not a directory"):
        prepare_out(cfg)


def test_generated_table_reads_back_as_toml() -> None:
    table = tomllib.loads(pyproject_table_text())["tool"]["flwr"]["app"]["config"]
    assert flatten_dict(table) == run_config_table()
    assert json.loads(run_config_table()["strategy.params"]) == {}


def test_the_fab_ships_the_package_and_stays_small() -> None:
    from flwr.cli.build import build_fab_from_disk

    fab = build_fab_from_disk(ROOT)
    names = zipfile.ZipFile(io.BytesIO(fab)).namelist()
    assert "pollen/server/app.py" in names and "pollen/client/app.py" in names
    assert {n for n in names if not n.startswith("pollen/")} == {"pyproject.toml", ".info/CONTENT"}
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert len(fab) < 2 * 1024 * 1024, len(fab)


def test_default_clients_follow_the_connected_supernodes() -> None:
    from pollen.protocol.run_config import match_supernodes

    rc = flower_defaults()
    cfg = config_from_run_config(rc)
    assert "federation.clients = 2, the SuperNodes connected" in match_supernodes(cfg, rc, 2)
    assert cfg.federation.clients == 2
    rc = flower_defaults() | {"federation.clients": 8}
    cfg = config_from_run_config(rc)
    assert 'num-supernodes=8' in match_supernodes(cfg, rc, 4) and cfg.federation.clients == 8
    assert match_supernodes(cfg, rc, 8) is None


def test_server_main_runs_a_dotted_run_config_in_process(tmp_path: Path, tiny_model_dir: Path,
                                                         tiny_data: Path, monkeypatch) -> None:
    """The ServerApp's `flwr run` door end to end, with the ClientApp answering in-process."""
    import torch

    import pollen.client.app as client_app
    import pollen.server.app as server_app
    from pollen.protocol.grid import InProcessGrid

    torch.set_num_threads(1)
    rc = flower_defaults() | {
        "run.rounds": 1, "run.out": "dotted", "model.name": str(tiny_model_dir), "model.max_length": 24,
        "data.name": str(tiny_data), "data.eval_size": 6, "data.partition": "iid",
        "train.local_steps": 1, "train.batch_size": 2, "train.lr": 0.01, "tracking.tensorboard": False}
    grid = InProcessGrid(2, client_app.train, rc)  # 2 nodes; federation.clients left at its default
    ctx = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=rc)
    monkeypatch.setenv("POLLEN_HOME", str(tmp_path))  # the relative run.out goes under it
    server_app.main(grid, ctx)
    out = tmp_path / "dotted"
    rounds = json.loads((out / "metrics.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == [0, 1] and rounds[1]["clients"] == 2
    saved = PollenConfig.load(out / "config.toml")
    assert saved.run.out == str(out) and saved.federation.clients == 2 and saved.train.lr == 0.01


def test_pollen_app_writes_the_same_app_for_an_installed_package(tmp_path):
    """A wheel has no pyproject.toml: `pollen app --dir D` writes one `flwr run D` accepts."""
    import tomllib

    from flwr.cli.build import build_fab_from_files

    from pollen import cli
    from pollen.protocol.run_config import run_config_table

    assert cli.main(["app", "--dir", str(tmp_path / "app"), "--preset", "classification",
                     "--set", "train.lr=0.01"]) == 0
    text = (tmp_path / "app" / "pyproject.toml").read_text()
    app = tomllib.loads(text)["tool"]["flwr"]["app"]
    repo = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert app["components"] == repo["tool"]["flwr"]["app"]["components"]

    table = flatten_dict(app["config"])
    cfg = PollenConfig.load(None, {"model.name": "minilm-l6", "data.name": "tweets",
                                   "data.partition": "dirichlet", "federation.clients": 8,
                                   "run.rounds": 5, "train.lr": 0.01})
    assert table == run_config_table(cfg)
    build_fab_from_files({"pyproject.toml": text.encode()})  # Flower's own builder accepts it
    assert cli.main(["app", "--dir", str(tmp_path / "app")]) == 2  # never clobbers silently
