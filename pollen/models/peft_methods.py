"""PEFT wrapping by method name; what is trainable is exactly what travels."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pollen.config import ModelSection
from pollen.errors import ConfigError
from pollen.registry import Registry

PEFT_METHODS: Registry[Callable[[torch.nn.Module, ModelSection, str], torch.nn.Module]] = Registry(
    "PEFT method")

# Attention projections to adapt when the user names none, per architecture.
_LORA_TARGETS = {"llama": ["q_proj", "v_proj"], "bert": ["query", "value"]}


def _task_type(task: str):
    from peft import TaskType

    return TaskType.CAUSAL_LM if task == "causal-lm" else TaskType.SEQ_CLS


def _targets(model: torch.nn.Module, cfg: ModelSection) -> list[str] | None:
    if cfg.target_modules:
        return list(cfg.target_modules)
    return _LORA_TARGETS.get(getattr(model.config, "model_type", ""))


@PEFT_METHODS.register("lora")
def _lora(model: torch.nn.Module, cfg: ModelSection, task: str) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    conf = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=_targets(model, cfg), task_type=_task_type(task))
    return get_peft_model(model, conf)


@PEFT_METHODS.register("ia3")
def _ia3(model: torch.nn.Module, cfg: ModelSection, task: str) -> torch.nn.Module:
    from peft import IA3Config, get_peft_model

    kwargs = {}
    if cfg.target_modules:
        kwargs = {"target_modules": list(cfg.target_modules), "feedforward_modules": []}
    return get_peft_model(model, IA3Config(task_type=_task_type(task), **kwargs))


@PEFT_METHODS.register("prompt")
def _prompt(model: torch.nn.Module, cfg: ModelSection, task: str) -> torch.nn.Module:
    from peft import PromptTuningConfig, get_peft_model

    conf = PromptTuningConfig(task_type=_task_type(task), num_virtual_tokens=cfg.prompt_tokens)
    return get_peft_model(model, conf)


@PEFT_METHODS.register("bias")
def _bias(model: torch.nn.Module, cfg: ModelSection, task: str) -> torch.nn.Module:
    """BitFit: bias vectors (plus the task head for classification) train; nothing else."""
    head = ("classifier", "score") if task == "seq-cls" else ()
    n = 0
    for name, p in model.named_parameters():
        train = name.endswith(".bias") or name.split(".")[0] in head
        p.requires_grad_(train)
        n += int(name.endswith(".bias"))
    if n == 0:
        raise ConfigError(f"model.peft = 'bias': {getattr(model.config, 'model_type', 'this')} model "
                          "has no bias terms; use 'lora' or 'ia3', or a model with biases (minilm-l6)")
    return model


def apply_peft(model: torch.nn.Module, cfg: ModelSection, task: str) -> torch.nn.Module:
    """Freeze the backbone and make only the chosen PEFT parameters trainable."""
    method = PEFT_METHODS.get(cfg.peft)
    for p in model.parameters():
        p.requires_grad_(False)
    with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5
        warnings.simplefilter("ignore", FutureWarning)
        return method(model, cfg, task)


def trainable_state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """The parameters that travel, name-sorted so every party agrees on the order."""
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    return {n: named[n].detach().cpu().numpy().copy() for n in sorted(named)}


def load_trainable_state(model: torch.nn.Module, state: dict[str, np.ndarray]) -> None:
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(named) != set(state):
        missing, extra = sorted(set(named) - set(state)), sorted(set(state) - set(named))
        raise ConfigError(f"trainable state does not match the model (missing {missing[:3]}, "
                          f"unexpected {extra[:3]})")
    with torch.no_grad():
        for n, p in named.items():
            src = torch.from_numpy(np.asarray(state[n]))
            if tuple(src.shape) != tuple(p.shape):
                raise ConfigError(f"tensor {n}: shape {tuple(src.shape)} != model {tuple(p.shape)}")
            p.copy_(src)


# Exact LoRA aggregation (pollen/strategies/fedpeft/lora_exact.py) folds a residual into the frozen
# weights; it is saved beside the adapter in base-model parameter names, in weight units.
RESIDUAL_FILE = "lora_residual.safetensors"


def add_residual(model: torch.nn.Module, path: Path | str) -> None:
    """Add a saved `lora_residual.safetensors` to a plain (not yet PEFT-wrapped) model's weights."""
    from safetensors.torch import load_file

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, delta in load_file(str(path)).items():
            if name not in params or tuple(params[name].shape) != tuple(delta.shape):
                raise ConfigError(f"{path}: {name!r} does not match this model; load the residual "
                                  "into the base model the run was trained from")
            params[name].add_(delta.to(params[name].dtype))
