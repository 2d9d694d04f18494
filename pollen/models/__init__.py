"""Models by name (or any Hugging Face id / local directory) and their PEFT wrapping."""

from pollen.models.loading import LoadedModel, load_model
from pollen.models.peft_methods import (
    PEFT_METHODS,
    apply_peft,
    load_trainable_state,
    trainable_state,
)
from pollen.models.registry import MODELS, ModelSpec

__all__ = [
    "MODELS",
    "PEFT_METHODS",
    "LoadedModel",
    "ModelSpec",
    "apply_peft",
    "load_model",
    "load_trainable_state",
    "trainable_state",
]
