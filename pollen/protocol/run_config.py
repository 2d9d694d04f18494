"""Pollen's config as Flower run-config keys: what `flwr run . --run-config "train.lr=1e-3"` sets.

Why: a Flower user drives an app with `flwr run` and overrides its `[tool.flwr.app.config]` keys;
Pollen's own launcher (`pollen simulate/server`) sends the whole config as one JSON key instead
(`records.CONFIG_KEY`, kept: its fixed FAB's hash is what clients pin). This module is the other
door: every `PollenConfig` key as a flat dotted run-config key with its default, and the way back,
through the same `set_key` validation (a bad value is one `ConfigError` naming the key).

Flower run-config values are str, int, float or bool only, so:
* a list (`model.target_modules`) is a comma-separated string: `"q_proj,v_proj"`;
* a table (`strategy.params`, `attack.params`) is a JSON object string: `'{"clip": 1.0}'`.

The repository's pyproject.toml carries the table `run_config_table()` produces
(`python -m pollen.protocol.run_config --write pyproject.toml` regenerates it; a test fails when it
drifts from the dataclass defaults).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pollen.config import HELP, PollenConfig, all_keys, describe, set_key
from pollen.errors import ConfigError

FlowerValue = str | int | float | bool
# A relative `run.out` in a `flwr run` resolves under this directory (default ~/pollen): the
# ServerApp's working directory is wherever Flower's SuperLink was first started, so it is no anchor.
RUNS_ROOT_ENV = "POLLEN_HOME"
TABLE_BEGIN = "# >>> pollen run-config (generated: python -m pollen.protocol.run_config --write pyproject.toml)"
TABLE_END = "# <<< pollen run-config"


def to_flower_value(value: Any) -> FlowerValue:
    """One config value as a Flower run-config value (lists comma-joined, tables as JSON)."""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(", ", ": "))
    return value


def run_config_table(cfg: PollenConfig | None = None) -> dict[str, FlowerValue]:
    """Every Pollen key, dotted, with its value in `cfg` (default: the built-in defaults)."""
    return {row.key: to_flower_value(row.default) for row in describe(cfg)}


def is_dict_key(key: str) -> bool:
    return any(r.key == key and r.type == "table" for r in describe())


def config_from_run_config(run_config: Mapping[str, Any]) -> PollenConfig:
    """A validated `PollenConfig` from the dotted keys of a Flower run config.

    Keys that are not Pollen keys (Flower's own, Pollen's launcher keys) are ignored; a key under a
    Pollen section that Pollen does not know is refused with a "did you mean". A model's recipe
    (pollen.models.registry.recipe_for) fills only keys left at their default value, as a TOML file
    leaves them unset.
    """
    sections = {f.name for f in dataclasses.fields(PollenConfig)}
    defaults = run_config_table()
    overrides: dict[str, Any] = {}
    for key, value in run_config.items():
        if key.partition(".")[0] not in sections:
            continue
        if key not in defaults:
            set_key(PollenConfig(), key, value)  # raises: unknown key, with a suggestion
        if is_dict_key(key) and isinstance(value, str):
            value = _json_table(key, value)
        if to_flower_value(value) != defaults[key]:
            overrides[key] = value
    return PollenConfig.load(None, overrides)


def _json_table(key: str, text: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"config {key}: must be a JSON object string like '{{\"a\": 1}}', "
                          f"got {text!r} ({e.msg})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"config {key}: must be a JSON object string like '{{\"a\": 1}}', "
                          f"got {text!r}")
    return value


def has_pollen_keys(run_config: Mapping[str, Any]) -> bool:
    return "run.out" in run_config


def resolve_out(out: str, env: Mapping[str, str] | None = None) -> Path:
    """`run.out` of a `flwr run` as an absolute path: relative ones go under $POLLEN_HOME (~/pollen)."""
    env = os.environ if env is None else env
    path = Path(out).expanduser()
    if path.is_absolute():
        return path
    root = Path(env.get(RUNS_ROOT_ENV) or Path.home() / "pollen").expanduser()
    return (root / path).resolve()


def prepare_out(cfg: PollenConfig, env: Mapping[str, str] | None = None) -> Path:
    """OUT of a `flwr run`: `run.out` made absolute (and written back into `cfg`), refused in one
    line if it cannot be written, cleared of a previous run's results, with config.toml saved."""
    from pollen.io_utils import check_writable_dir

    out = resolve_out(cfg.run.out, env)
    check_writable_dir(out, "run.out")
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("metrics.json", "progress.json", "curves.png", "timing.json"):
        (out / stale).unlink(missing_ok=True)
    cfg.run.out = str(out)
    cfg.save(out / "config.toml")
    return out


def match_supernodes(cfg: PollenConfig, run_config: Mapping[str, Any], nodes: int) -> str | None:
    """`flwr run` sets the federation's size outside Pollen (`num-supernodes`, or the SuperNodes
    that connected), and each simulated client reads its partition count from its node config. So
    a `federation.clients` left at its default follows the connected nodes; an explicit one that
    more nodes than connected must reach gets a hint (the server waits for them). Returns the line
    to log, if any."""
    clients = cfg.federation.clients
    if nodes < 1 or nodes == clients:
        return None
    if run_config.get("federation.clients", clients) == run_config_table()["federation.clients"]:
        cfg.federation.clients = nodes
        cfg.federation.min_clients = min(cfg.federation.min_clients, nodes)
        return (f"pollen: federation.clients = {nodes}, the SuperNodes connected (set "
                f"federation.clients to wait for more)")
    if nodes < clients:
        return (f"pollen: federation.clients = {clients} but {nodes} SuperNodes are connected; the "
                f"server waits for the rest (a local simulation needs --federation-config "
                f"\"num-supernodes={clients}\")")
    return None


# -- the pyproject.toml table -------------------------------------------------------------------
def _toml_value(value: FlowerValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value) if "'" in value or "\n" in value else f"'{value}'"
    return repr(value)


def pyproject_table_text(cfg: PollenConfig | None = None) -> str:
    """`[tool.flwr.app.config]` with every key (dotted TOML keys), each under its help line."""
    lines = [TABLE_BEGIN, "[tool.flwr.app.config]"]
    table = run_config_table(cfg)
    section = ""
    for key in all_keys(PollenConfig()):
        if key.partition(".")[0] != section:
            section = key.partition(".")[0]
            lines.append("")
        lines.append(f"# {HELP.get(key, '')}".rstrip())
        lines.append(f"{key} = {_toml_value(table[key])}")
    lines.append(TABLE_END)
    return "\n".join(lines) + "\n"


def rewrite_pyproject(text: str) -> str:
    """`text` with its generated run-config block replaced (or appended)."""
    block = pyproject_table_text()
    pattern = re.compile(re.escape(TABLE_BEGIN) + r".*?" + re.escape(TABLE_END) + r"\n?", re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _m: block, text)
    return text.rstrip("\n") + "\n\n" + block


def main(argv: list[str] | None = None) -> int:
    """`--write FILE` rewrites the block in FILE; no argument prints it."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--write"] and len(args) == 2:
        path = Path(args[1])
        path.write_text(rewrite_pyproject(path.read_text()))
        return 0
    sys.stdout.write(pyproject_table_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
