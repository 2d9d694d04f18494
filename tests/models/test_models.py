import numpy as np
import pytest
import torch

from pollen.config import ModelSection
from pollen.data import load_dataset
from pollen.data.tokenize import batches, encode
from pollen.errors import ConfigError, ModelError
from pollen.models import apply_peft, load_model, load_trainable_state, trainable_state
from pollen.models.train import evaluate, train_steps


@pytest.fixture(scope="module")
def smollm():
    return load_model("smollm2-135m", "causal-lm", seed=0)


def test_lora_payload_is_tiny_next_to_the_model_and_round_trips(smollm):
    model = apply_peft(smollm.model, ModelSection(), "causal-lm")
    state = trainable_state(model)
    total = sum(p.numel() for p in model.parameters())
    assert all(".lora_" in k for k in state)
    assert sum(v.size for v in state.values()) == 30 * 2 * (8 * 576 + 8 * 576) // 2 + 30 * (8 * 576 + 8 * 192)
    assert total / sum(v.size for v in state.values()) > 250
    perturbed = {k: v + 1.0 for k, v in state.items()}
    load_trainable_state(model, perturbed)
    assert all(np.allclose(trainable_state(model)[k], perturbed[k]) for k in state)
    with pytest.raises(ConfigError, match="shape"):
        load_trainable_state(model, {k: v[..., :1] for k, v in state.items()})
    load_trainable_state(model, state)


def test_local_lora_steps_lower_the_loss_on_response_tokens(smollm):
    torch.manual_seed(0)
    model = apply_peft(load_model("smollm2-135m", "causal-lm", seed=0).model, ModelSection(), "causal-lm")
    data = load_dataset("chatterbot", seed=0)
    enc = encode(data.eval.subset(np.arange(8)), smollm.tokenizer, 48)
    pad = smollm.tokenizer.pad_token_id
    before = evaluate(model, batches(enc, 8, pad, seed=0, shuffle=False), "causal-lm").loss
    train_steps(model, batches(enc, 8, pad, seed=0, steps=4), lr=3e-3)
    after = evaluate(model, batches(enc, 8, pad, seed=0, shuffle=False), "causal-lm").loss
    assert after < before - 0.3


def test_response_only_labels(smollm):
    data = load_dataset("chatterbot", seed=0)
    enc = encode(data.eval.subset(np.arange(4)), smollm.tokenizer, 64)
    for ids, labels in zip(enc.input_ids, enc.labels):
        supervised = [t for t, lab in zip(ids, labels) if lab != -100]
        text = smollm.tokenizer.decode(supervised)
        assert "user" not in text and text.endswith("<|im_end|>")


def test_minilm_classifier_heads_are_identical_for_the_same_seed_and_bias_tuning_trains_heads():
    a = load_model("minilm-l6", "seq-cls", num_labels=3, seed=5).model
    b = load_model("minilm-l6", "seq-cls", num_labels=3, seed=5).model
    assert torch.equal(a.classifier.weight, b.classifier.weight)
    m = apply_peft(a, ModelSection(peft="bias"), "seq-cls")
    names = list(trainable_state(m))
    assert "classifier.weight" in names and all(n.endswith("bias") or n.startswith("classifier") for n in names)


def test_bias_tuning_on_a_bias_free_model_and_unknown_models_are_clear_errors(smollm):
    with pytest.raises(ConfigError, match="has no bias terms"):
        apply_peft(smollm.model, ModelSection(peft="bias"), "causal-lm")
    with pytest.raises(ModelError, match="unknown model 'gpt-17'"):
        load_model("gpt-17", "causal-lm")
    with pytest.raises(ModelError, match="serves seq-cls"):
        load_model("minilm-l6", "causal-lm")
