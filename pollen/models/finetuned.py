"""A finished run as a model: load it, talk to it, evaluate it, export it.

`pollen generate | eval | export --run DIR` read what a run saved: `adapter/` (FedPEFT, Flag and the
Flower baselines: a peft adapter over the run's base model) or `model/` (FedKSeed: the whole tuned
model). The base is rebuilt exactly as the run built it (the same registered name, directory or hub
id, and seed), so the adapter lands on the weights it was trained against.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pollen.config import PollenConfig
from pollen.errors import ModelError, PollenError
from pollen.models.loading import load_model
from pollen.models.peft_methods import RESIDUAL_FILE, add_residual
from pollen.models.registry import MODELS

ADAPTER_DIR = "adapter"
FULL_MODEL_DIR = "model"
CARD = "README.md"


@dataclass
class Finetuned:
    run: Path
    cfg: PollenConfig
    model: torch.nn.Module
    tokenizer: Any
    task: str
    kind: str  # "adapter" (peft over the base), "bitfit" (trainable tensors) or "full"


def base_identity(name: str) -> str:
    """What the adapter says its base is: a hub id for a registered model, else what the user gave.

    A registered model's weights are a local conversion (machine-specific cache path), so recording
    that path would make the adapter unusable anywhere else.
    """
    if name in MODELS:
        return MODELS.get(name).hub_id or name
    return name


def run_config(run: Path) -> PollenConfig:
    path = Path(run) / "config.toml"
    if not path.is_file():
        raise PollenError(f"{run} is not a Pollen run directory (no config.toml); pass the --out of a "
                          "finished `pollen simulate` or `pollen server` run")
    return PollenConfig.load(path)


def load_run(run: Path) -> Finetuned:
    """The run's final model, ready for inference (eval mode, no gradients)."""
    run = Path(run)
    cfg = run_config(run)
    adapter, full = run / ADAPTER_DIR, run / FULL_MODEL_DIR
    if (full / "config.json").is_file():
        return _load_full(run, cfg, full)
    if not adapter.is_dir():
        raise PollenError(f"{run} holds no {ADAPTER_DIR}/ or {FULL_MODEL_DIR}/: the run did not finish, "
                          f"or its method ({cfg.strategy.name}) saves no language model")
    from pollen.data.clients import data_for

    data = data_for(cfg)
    lm = load_model(cfg.model.name, data.train.task, num_labels=data.num_labels or None,
                    seed=cfg.run.seed)
    if (adapter / "adapter_config.json").is_file():
        from peft import PeftModel
        from safetensors import SafetensorError

        if (adapter / RESIDUAL_FILE).is_file():  # exact LoRA: the residual folded into the base
            add_residual(lm.model, adapter / RESIDUAL_FILE)
        try:
            model = PeftModel.from_pretrained(lm.model, str(adapter))
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as e:  # damaged/foreign
            raise ModelError(f"{adapter} is not a loadable adapter for {cfg.model.name!r}: "
                             f"{' '.join(str(e).split())[:300]}") from None
        kind = "adapter"
    elif (adapter / "trainable.safetensors").is_file():  # BitFit: the bias tensors themselves
        from safetensors.torch import load_file

        tensors = load_file(str(adapter / "trainable.safetensors"))
        model = lm.model
        missing = [k for k in tensors if k not in dict(model.named_parameters())]
        if missing:
            raise ModelError(f"{adapter}: tensors {missing[:3]} are not parameters of {cfg.model.name!r}")
        model.load_state_dict(tensors, strict=False)
        kind = "bitfit"
    else:
        raise PollenError(f"{adapter} holds neither a peft adapter nor trainable.safetensors")
    model.eval()
    return Finetuned(run=run, cfg=cfg, model=model, tokenizer=lm.tokenizer, task=lm.task, kind=kind)


def _load_full(run: Path, cfg: PollenConfig, path: Path) -> Finetuned:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
        task = "causal-lm"
    except ValueError:
        model = AutoModelForSequenceClassification.from_pretrained(str(path), dtype=torch.float32)
        task = "seq-cls"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.eval()
    return Finetuned(run=run, cfg=cfg, model=model, tokenizer=tok, task=task, kind="full")


@torch.inference_mode()
def generate(ft: Finetuned, prompt: str, *, max_new_tokens: int = 64,
             history: list[dict[str, str]] | None = None) -> str:
    """Greedy completion of `prompt` (as a chat turn where the tokenizer has a chat template).

    Classification models answer with the predicted label and its probability.
    """
    if ft.task == "seq-cls":
        enc = ft.tokenizer(prompt, return_tensors="pt", truncation=True,
                           max_length=ft.cfg.model.max_length)
        probs = ft.model(**enc).logits.softmax(-1)[0]
        label = int(probs.argmax())
        names = getattr(ft.model.config, "id2label", None) or {}
        return f"{names.get(label, label)} (p={float(probs[label]):.2f})"
    from pollen.data.tokenize import SYSTEM

    tok = ft.tokenizer
    if getattr(tok, "chat_template", None):
        msgs = [{"role": "system", "content": SYSTEM}, *(history or []),
                {"role": "user", "content": prompt}]
        ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt",
                                      return_dict=True)["input_ids"]
    else:
        ids = tok(f"Question: {prompt}\nAnswer: ", return_tensors="pt")["input_ids"]
    out = ft.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                            max_new_tokens=max_new_tokens, do_sample=False,
                            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    return str(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)).strip()


def evaluate_run(ft: Finetuned, dataset: str | None = None) -> dict[str, float]:
    """Held-out loss (and accuracy) exactly as the server measured it, or on another dataset's held-out split."""
    from pollen.data.load import load_dataset
    from pollen.data.tokenize import batches, encode
    from pollen.models.train import evaluate

    cfg = ft.cfg
    if dataset is None:
        from pollen.data.clients import data_for

        held = data_for(cfg).eval
    else:
        held = load_dataset(dataset, eval_size=cfg.data.eval_size, seed=cfg.run.seed).eval
    if held.task != ft.task:
        raise PollenError(f"dataset {dataset or cfg.data.name!r} is a {held.task} dataset but the run's "
                          f"model is {ft.task}")
    enc = encode(held, ft.tokenizer, cfg.model.max_length)
    res = evaluate(ft.model, batches(enc, 16, int(ft.tokenizer.pad_token_id), seed=0, shuffle=False),
                   ft.task)
    return {**res.metrics(), "examples": float(res.examples)}


def export(ft: Finetuned, out: Path, *, merge: bool = False, overwrite: bool = False) -> Path:
    """A standalone Hugging Face directory: the adapter + tokenizer + card, or (merge) a full model."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise PollenError(f"{out} exists and is not empty; pass --overwrite or choose another --out")
    tmp = out.with_name(f".{out.name}.export")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if ft.kind == "adapter" and not merge:
            ft.model.save_pretrained(str(tmp))
        elif ft.kind == "adapter":
            ft.model.merge_and_unload().save_pretrained(str(tmp))
        elif ft.kind == "bitfit" or ft.kind == "full":
            ft.model.save_pretrained(str(tmp))  # the tensors are in place: this is the whole model
        ft.tokenizer.save_pretrained(str(tmp))
        for extra in (CARD, RESIDUAL_FILE):  # the residual only as an adapter: --merge folded it in
            src = ft.run / ADAPTER_DIR / extra
            if src.is_file() and (extra == CARD or (ft.kind == "adapter" and not merge)):
                shutil.copyfile(src, tmp / extra)
        if ft.kind == "adapter" and not merge:
            _set_base(tmp, base_identity(ft.cfg.model.name))
        if out.exists():
            shutil.rmtree(out)
        tmp.replace(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _set_base(adapter_dir: Path, base: str) -> None:
    import json

    path = adapter_dir / "adapter_config.json"
    conf = json.loads(path.read_text())
    conf["base_model_name_or_path"] = base
    path.write_text(json.dumps(conf, indent=2, sort_keys=True) + "\n")


def model_card(cfg: PollenConfig, rows: list[dict[str, Any]], *, method: str) -> str:
    """The adapter's README.md: what it is, how it was trained, how well, and how to use it."""
    base = base_identity(cfg.model.name)
    last = next((r for r in reversed(rows) if r.get("eval_loss") is not None), {})
    first = rows[0] if rows else {}
    up = sum(int(r.get("bytes_up", 0) or 0) for r in rows)
    down = sum(int(r.get("bytes_down", 0) or 0) for r in rows)
    rounds = max((int(r.get("round", 0)) for r in rows), default=0)
    note = ""
    if cfg.model.name in MODELS and MODELS.get(cfg.model.name).weights_note:
        note = f"\n> Base weights: {MODELS.get(cfg.model.name).weights_note}\n"
    metrics = [f"| eval_loss | {_f(first.get('eval_loss'))} | {_f(last.get('eval_loss'))} |"]
    if last.get("eval_accuracy") is not None:
        metrics.append(f"| eval_accuracy | {_f(first.get('eval_accuracy'))} | "
                       f"{_f(last.get('eval_accuracy'))} |")
    return f"""---
base_model: {base}
library_name: peft
tags: [pollen, federated-learning, flower, {cfg.model.peft}]
---

# {cfg.model.peft.upper()} adapter for {base}, federated with Pollen
{note}
Trained with Pollen, federated fine-tuning on Flower ({method}), on `{cfg.data.name}`, split over
{cfg.federation.clients} clients ({cfg.data.partition} partition), without pooling their data.

| | |
|---|---|
| method / strategy | {method} / `{cfg.strategy.name}` (LoRA aggregation: {cfg.strategy.lora_aggregation}) |
| clients per round | {cfg.federation.clients} × fraction {cfg.federation.fraction} |
| rounds | {rounds} |
| local training | {cfg.train.local_steps} steps, batch {cfg.train.batch_size}, lr {cfg.train.lr} |
| PEFT | {cfg.model.peft}, r={cfg.model.lora_r}, alpha={cfg.model.lora_alpha}, targets {cfg.model.target_modules or "model default"} |
| update codec | `{cfg.compression.codec or "none (fp32)"}` |
| bytes up / down (all clients, all rounds) | {up:,} / {down:,} |

| metric | round 0 | final |
|---|---|---|
{chr(10).join(metrics)}

## Use it

```python
from transformers import AutoModelForCausalLM
from peft import PeftModel
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{base}"), "PATH/TO/THIS/DIR")
```

or with Pollen: `pollen generate --run RUN_DIR --prompt "Hello"`, `pollen eval --run RUN_DIR`,
`pollen export --run RUN_DIR --out DIR [--merge]`.

## Reproduce

`pollen simulate --config config.toml` with the run's resolved `config.toml` (next to `adapter/`).
"""


def _f(v: Any) -> str:
    return "—" if v is None else f"{float(v):.4f}"
