"""A tiny LLaMA-shaped model with SmolLM2's real tokenizer: real HF loading, seconds to train."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch


def save_tiny_llama(out: Path, num_hidden_layers: int) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    from pollen.models.registry import MODELS

    src = MODELS.get("smollm2-135m").locate()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (src / name).is_file():
            shutil.copy(src / name, out / name)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=16, intermediate_size=32,
                      num_hidden_layers=num_hidden_layers, num_attention_heads=2, num_key_value_heads=1,
                      max_position_embeddings=64, tie_word_embeddings=True, pad_token_id=2,
                      bos_token_id=1, eos_token_id=2)
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out


def save_tiny_instructions(out: Path) -> Path:
    """Instruction data in three categories of different sizes (6, 11, 19): an unequal natural split."""
    import json

    rows = [{"prompt": f"Tell me about {cat} number {i}.",
             "response": f"Here is {cat} fact {i}: it is {i % 5}.", "category": cat}
            for cat, n in (("greetings", 6), ("food", 11), ("science", 19)) for i in range(n)]
    path = out / "tiny.json"
    path.write_text(json.dumps(rows))
    return path
