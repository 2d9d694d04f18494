"""The final outputs of an FRL run: the vote state (safetensors) and a JSON manifest, written atomically.

`frl/state.safetensors` holds, per layer, the shape, the fixed sorted score multiset and the global
ranking (`FRLServerState.state_dict`); `frl/frl.json` holds the run config and per-layer sizes. Together
with the seed they rebuild the final model: same frozen weights, scores from the ranking, top-k |score|
masks (`load_frl_model`).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
import torch
from torch import nn

from pollen.config import PollenConfig
from pollen.errors import ModelError
from pollen.io_utils import atomic_write_bytes, atomic_write_json
from pollen.models.supermask import kept_count, set_scores, supermask_layers
from pollen.strategies.frl.core import FRLServerState

FORMAT = "pollen-frl/1"


def save_frl(out: Path, state: FRLServerState, cfg: PollenConfig, extra: dict[str, Any]) -> Path:
    target = out / "frl"
    target.mkdir(parents=True, exist_ok=True)
    tensors = {k: np.ascontiguousarray(v) for k, v in state.state_dict().items()}
    atomic_write_bytes(target / "state.safetensors", safetensors.numpy.save(tensors))
    k = cfg.frl.k if cfg.model.name.endswith("-supermask") else cfg.frl.pretrained_k
    layers = {name: {"shape": list(shape), "edges": int(np.prod(shape)),
                     "kept": kept_count(int(np.prod(shape)), k)} for name, shape in state.shapes.items()}
    atomic_write_json(target / "frl.json", {"format": FORMAT, "model": cfg.model.name, "seed": cfg.run.seed,
                                            "layers": layers, "config": cfg.to_dict(), **extra})
    return target


def load_frl_state(directory: str | Path) -> tuple[FRLServerState, PollenConfig, dict[str, Any]]:
    d = Path(directory)
    try:
        manifest = json.loads((d / "frl.json").read_text())
        tensors = safetensors.numpy.load((d / "state.safetensors").read_bytes())
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read the FRL result in {d}: {e}") from None
    if manifest.get("format") != FORMAT:
        raise ModelError(f"{d / 'frl.json'} is not a {FORMAT} manifest")
    cfg = PollenConfig.from_dict(manifest["config"])
    shapes = {k: tuple(v["shape"]) for k, v in manifest["layers"].items()}
    state = FRLServerState(shapes, {k: torch.from_numpy(tensors[f"{k}.sorted_scores"]) for k in shapes},
                           {k: torch.from_numpy(tensors[f"{k}.ranking"]) for k in shapes})
    return state, cfg, manifest


def load_frl_model(directory: str | Path) -> nn.Module:
    """Rebuild the final masked model from a run's `frl/` directory (checks the seed reproduces S⁰)."""
    from pollen.strategies.frl.runtime import frl_runtime

    state, cfg, _ = load_frl_state(directory)
    rt = frl_runtime(cfg)
    if set(rt.sorted_scores) != set(state.shapes) or any(
            not torch.equal(rt.sorted_scores[k], state.sorted_scores[k]) for k in state.shapes):
        raise ModelError("the saved score multiset does not match the model rebuilt from the seed")
    model = copy.deepcopy(rt.model)  # the runtime's model is this process's working copy
    set_scores(model, state.global_scores())
    if not supermask_layers(model):
        raise ModelError("rebuilt model has no supermask layers")
    return model.eval()
