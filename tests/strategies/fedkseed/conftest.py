"""A tiny full model (LLaMA shape, SmolLM2's tokenizer) saved to disk, for FedKSeed's Flower path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

try:  # Outside a ServerApp process Flower has no task identity; give tests one.
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
except ImportError:  # older Flower builds messages without it
    pass


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    from pollen.models.registry import MODELS

    out = tmp_path_factory.mktemp("tiny-llama")
    src = MODELS.get("smollm2-135m").locate()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (src / name).is_file():
            shutil.copy(src / name, out / name)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                      tie_word_embeddings=True, pad_token_id=2, bos_token_id=1, eos_token_id=2)
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out


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
