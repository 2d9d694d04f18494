"""Load a model for a task from a registered name, a local directory or a Hugging Face hub id."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pollen.errors import ModelError, did_you_mean
from pollen.models.registry import MODELS

TASKS = ("causal-lm", "seq-cls")


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: Any
    task: str
    source: str


def resolve(name: str, task: str) -> str:
    """Registered name -> its directory; otherwise a local directory or hub id, as given."""
    if name in MODELS:
        spec = MODELS.get(name)
        if task not in spec.tasks:
            raise ModelError(f"model {name!r} serves {', '.join(spec.tasks)}, not {task!r}; "
                             f"pick a dataset of that task or another model")
        return str(spec.locate())
    if Path(name).is_dir():
        return name
    if "/" in name and not Path(name).exists():
        return name  # hub id: only works with network or a populated HF cache
    raise ModelError(f"unknown model {name!r}{did_you_mean(name, MODELS.names())}: not a registered name ({', '.join(MODELS.names())}), "
                     f"a local directory, or a Hugging Face id 'org/name'")


@contextlib.contextmanager
def _quiet_transformers():
    """Loading bars and deprecation chatter from transformers/peft bury Pollen's own output."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def load_model(name: str, task: str, *, num_labels: int | None = None, seed: int = 0) -> LoadedModel:
    """Every party calls this with the same seed so freshly initialised heads are identical."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    if task not in TASKS:
        raise ModelError(f"unknown task {task!r}; tasks are {', '.join(TASKS)}")
    source = resolve(name, task)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.manual_seed(seed)
    try:
        with _quiet_transformers():
            tok = AutoTokenizer.from_pretrained(source)
            if task == "causal-lm":
                model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
            else:
                if not num_labels:
                    raise ModelError("a classification model needs num_labels")
                model = AutoModelForSequenceClassification.from_pretrained(
                    source, num_labels=num_labels, dtype=torch.float32)
    except ModelError:
        raise
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load model {name!r} from {source!r}: {e}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tok.pad_token_id
    model.eval()
    return LoadedModel(model=model, tokenizer=tok, task=task, source=source)
