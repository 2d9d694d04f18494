"""Round checkpoints and `pollen server --resume`.

After every round the server writes OUT/checkpoint/: the global tensors (safetensors), then
state.json (round, ledger rows, RNG states, strategy state, config). state.json is written last and
atomically, so it is the commit point: a crash at any moment leaves the previous checkpoint intact.

Resuming restarts Flower's `strategy.start` for the remaining rounds; the round runner's `Rounds`
wrapper (pollen/server/runner.py) shifts the round numbers the strategy sees, so clients, the ledger
and evaluation count on from the checkpoint and no round is counted twice.
"""

from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from pollen.config import PollenConfig
from pollen.errors import ConfigError
from pollen.io_utils import atomic_write_json

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"
FORMAT = 1
# Keys of the strategy state that are tensors live in the safetensors file under this prefix.
_STRATEGY_PREFIX = "strategy/"


@dataclass
class Checkpoint:
    round: int
    arrays: dict[str, np.ndarray]
    rows: list[dict[str, Any]]
    rng: dict[str, Any]
    strategy_state: dict[str, Any] | None


def _comparable(cfg: PollenConfig) -> dict[str, Any]:
    """The config a resume must match; the number of rounds may grow, the out dir may move."""
    d = json.loads(cfg.to_json())
    d.get("run", {}).pop("rounds", None)
    d.get("run", {}).pop("out", None)
    d.get("run", {}).pop("round_timeout", None)
    d.get("run", {}).pop("allow_empty_rounds", None)
    return d


def rng_state() -> dict[str, Any]:
    """Python (Flower samples nodes with `random`), numpy and torch generator states, JSON-safe."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(internal), gauss],
            "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
            "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()}


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    raw = np.frombuffer(base64.b64decode(state["torch"]), dtype=np.uint8).copy()
    torch.set_rng_state(torch.from_numpy(raw))


def _split_strategy_state(state: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    tensors, rest = {}, {}
    for k, v in state.items():
        if isinstance(v, torch.Tensor):
            tensors[_STRATEGY_PREFIX + k] = v.detach().cpu().numpy()
        elif isinstance(v, np.ndarray):
            tensors[_STRATEGY_PREFIX + k] = v
        else:
            rest[k] = v
    return tensors, rest


def save_checkpoint(out: Path, cfg: PollenConfig, server_round: int, arrays: dict[str, np.ndarray],
                    rows: list[dict[str, Any]], strategy: Any = None) -> Path:
    """Tensors first (a new file per round), then state.json naming it, then drop older files.

    A strategy with `state_dict()` (a flat dict: tensors/arrays plus JSON values) is saved too;
    `load_state_dict()` gets the same dict back on resume.
    """
    ckpt = out / CHECKPOINT_DIR
    ckpt.mkdir(parents=True, exist_ok=True)
    sstate = strategy.state_dict() if hasattr(strategy, "state_dict") else None
    s_tensors, s_json = _split_strategy_state(sstate or {})
    tensors = {k: np.ascontiguousarray(v) for k, v in {**arrays, **s_tensors}.items()}
    name = f"round-{server_round:05d}.safetensors"
    tmp = ckpt / f".{name}.tmp"
    save_file(tensors, str(tmp))
    tmp.replace(ckpt / name)
    atomic_write_json(ckpt / STATE_FILE, {
        "format": FORMAT, "round": server_round, "tensors": name, "rows": rows, "rng": rng_state(),
        "strategy_state": None if sstate is None else s_json,
        "strategy_tensors": sorted(s_tensors), "config": _comparable(cfg)})
    for old in ckpt.glob("round-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)
    return ckpt


def has_checkpoint(out: Path) -> bool:
    return (out / CHECKPOINT_DIR / STATE_FILE).is_file()


def load_checkpoint(out: Path, cfg: PollenConfig) -> Checkpoint:
    """The last committed checkpoint; a missing one or a different config is a clear error."""
    ckpt = out / CHECKPOINT_DIR
    try:
        state = json.loads((ckpt / STATE_FILE).read_text())
    except FileNotFoundError:
        raise ConfigError(f"--resume: no checkpoint in {ckpt} (the run never finished a round, or "
                          "this is another out dir); start without --resume") from None
    except ValueError as e:
        raise ConfigError(f"--resume: {ckpt / STATE_FILE} is not valid JSON ({e})") from None
    if state.get("format") != FORMAT:
        raise ConfigError(f"--resume: checkpoint format {state.get('format')!r} is not {FORMAT}")
    if state["config"] != _comparable(cfg):
        raise ConfigError(f"--resume: the config differs from the checkpointed run in {ckpt}; "
                          "resume with the same config (only run.rounds may grow)")
    if state["round"] > cfg.run.rounds:
        raise ConfigError(f"--resume: the checkpoint is at round {state['round']} but run.rounds = "
                          f"{cfg.run.rounds}")
    tensors = load_file(str(ckpt / state["tensors"]))
    s_keys = set(state["strategy_tensors"])
    arrays = {k: v for k, v in tensors.items() if k not in s_keys}
    sstate = state["strategy_state"]
    if sstate is not None:
        sstate = {**sstate, **{k[len(_STRATEGY_PREFIX):]: torch.from_numpy(tensors[k].copy())
                               for k in s_keys}}
    return Checkpoint(round=int(state["round"]), arrays=arrays, rows=state["rows"], rng=state["rng"],
                      strategy_state=sstate)


def restore_strategy(strategy: Any, ckpt: Checkpoint) -> None:
    if ckpt.strategy_state is not None:
        if not hasattr(strategy, "load_state_dict"):
            raise ConfigError(f"--resume: the checkpoint holds strategy state but "
                              f"{type(strategy).__name__} has no load_state_dict()")
        strategy.load_state_dict(ckpt.strategy_state)
