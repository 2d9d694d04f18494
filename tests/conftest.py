"""Shared test settings: offline, quiet, and a private Pollen cache per session when asked."""

import os
from pathlib import Path

import pytest

from tests.tiny_llama import save_tiny_instructions, save_tiny_llama

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")


# A real (tiny) language model and instruction data on disk, for runs that must load a model from a
# directory (tests/strategies/fedkseed has its own 2-layer variant).
@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LLaMA-shaped model with SmolLM2's tokenizer."""
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), num_hidden_layers=1)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Instruction data in three categories of different sizes (6, 11, 19 examples)."""
    return save_tiny_instructions(tmp_path_factory.mktemp("tiny-data"))
