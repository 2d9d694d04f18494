"""The response-only loss is the model's own loss, with the same gradients, on less memory."""

import math

import pytest
import torch

from pollen.config import ModelSection
from pollen.data.tokenize import IGNORE
from pollen.models import apply_peft, load_model
from pollen.models.train import _decoder_and_head, evaluate, lm_loss


def _batch(vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # padding at the end of row 1
    labels = ids.clone()
    labels[:, :5] = IGNORE  # the prompt
    labels[1, 9:] = IGNORE
    labels[2, :] = IGNORE  # a row whose response was truncated away
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("peft", ["lora", "ia3", "bias-free"])
def test_response_only_loss_and_gradients_match_the_models_own(tiny_model_dir, peft):
    lm = load_model(str(tiny_model_dir), "causal-lm", seed=0)
    model = lm.model if peft == "bias-free" else apply_peft(lm.model, ModelSection(peft=peft), "causal-lm")
    if peft == "bias-free":  # a plain model: train the last layer's MLP
        for name, p in model.named_parameters():
            p.requires_grad_(".mlp." in name)
    assert _decoder_and_head(model) is not None
    batch = _batch(model.config.vocab_size)
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    ref = model(**batch).loss
    ref_grads = torch.autograd.grad(ref, params)
    loss, tokens = lm_loss(model, batch)
    grads = torch.autograd.grad(loss, params)
    assert tokens == 7 + 4
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-7)


def test_prompt_tuning_takes_the_models_own_path(tiny_model_dir):
    lm = load_model(str(tiny_model_dir), "causal-lm", seed=0)
    model = apply_peft(lm.model, ModelSection(peft="prompt", prompt_tokens=4), "causal-lm")
    assert _decoder_and_head(model) is None
    batch = _batch(model.config.vocab_size)
    loss, tokens = lm_loss(model, batch)
    assert tokens == 11 and math.isfinite(loss.item())


def test_evaluation_weights_by_response_tokens_and_skips_empty_batches(tiny_model_dir):
    model = load_model(str(tiny_model_dir), "causal-lm", seed=0).model
    batch = _batch(model.config.vocab_size)
    empty = {k: v[2:] for k, v in batch.items()}  # only the row without response tokens
    res = evaluate(model, [batch, empty], "causal-lm")
    with torch.no_grad():
        assert res.loss == pytest.approx(model(**batch).loss.item(), rel=1e-6)
    assert res.examples == 4


def test_gradient_checkpointing_trains_the_same_adapter_gradients(tiny_model_dir):
    from pollen.models.train import enable_gradient_checkpointing

    grads = []
    for checkpointing in (False, True):
        lm = load_model(str(tiny_model_dir), "causal-lm", seed=0)
        torch.manual_seed(0)
        model = apply_peft(lm.model, ModelSection(peft="lora", lora_dropout=0.0), "causal-lm")
        if checkpointing:
            enable_gradient_checkpointing(model)
            assert model.get_base_model().is_gradient_checkpointing
        model.train()
        loss, _ = lm_loss(model, _batch(model.config.vocab_size))
        grads.append(torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad]))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_gradient_checkpointing_is_a_boolean_config_key():
    from pollen.config import PollenConfig

    assert PollenConfig().train.gradient_checkpointing is False
    assert PollenConfig.load(None, {"train.gradient_checkpointing": "true"}).train.gradient_checkpointing
    with pytest.raises(Exception, match="train.gradient_checkpointing"):
        PollenConfig.load(None, {"train.gradient_checkpointing": "sometimes"})
