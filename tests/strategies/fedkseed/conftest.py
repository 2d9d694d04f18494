"""A tiny full model (LLaMA shape, SmolLM2's tokenizer) saved to disk, for FedKSeed's Flower path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.tiny_llama import save_tiny_llama

try:  # Outside a ServerApp process Flower has no task identity; give tests one.
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
except ImportError:  # older Flower builds messages without it
    pass


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), num_hidden_layers=2)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Instruction data in three categories of different sizes (natural split: unequal clients)."""
    rows = []
    for cat, n in (("greetings", 6), ("food", 11), ("science", 19)):
        for i in range(n):
            rows.append({"prompt": f"Tell me about {cat} number {i}.",
                         "response": f"Here is {cat} fact {i}: it is {i % 5} and {cat[::-1]}.",
                         "category": cat})
    path = tmp_path_factory.mktemp("tiny-data") / "tiny.json"
    path.write_text(json.dumps(rows))
    return path
