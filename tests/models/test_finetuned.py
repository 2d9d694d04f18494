"""`pollen generate | eval | export` on a real run directory (the ServerApp and ClientApp in-process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pollen import cli
from pollen.config import PollenConfig
from pollen.errors import PollenError
from pollen.models.finetuned import base_identity, evaluate_run, export, generate, load_run


def _run(out: Path, model: Path, data: Path, **extra: object) -> Path:
    """A real run: Pollen's ServerApp and ClientApp in one process, as the CLI would lay it out."""
    import pollen.client.app as client_app
    from pollen.protocol.grid import InProcessGrid
    from pollen.protocol.records import CONFIG_KEY
    from pollen.server.app import run_server

    torch.set_num_threads(1)
    cfg = PollenConfig.load(None, {
        "run.rounds": 1, "run.out": str(out), "model.name": str(model), "model.max_length": 24,
        "data.name": str(data), "data.eval_size": 6, "data.partition": "iid",
        "federation.clients": 2, "train.local_steps": 2, "train.batch_size": 2, "train.lr": 0.01,
        "tracking.tensorboard": False, **extra})
    out.mkdir(parents=True)
    cfg.save(out / "config.toml")  # what the CLI writes before it starts the run
    run_server(InProcessGrid(2, client_app.train, {CONFIG_KEY: cfg.to_json()}), cfg, out)
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_data: Path) -> Path:
    return _run(tmp_path_factory.mktemp("run") / "out", tiny_model_dir, tiny_data)


def test_exact_lora_runs_load_with_their_residual(tmp_path: Path, tiny_model_dir: Path,
                                                  tiny_data: Path) -> None:
    out = _run(tmp_path / "exact", tiny_model_dir, tiny_data, **{
        "run.rounds": 2, "strategy.lora_aggregation": "exact"})
    assert (out / "adapter" / "lora_residual.safetensors").is_file()
    rows = json.loads((out / "metrics.json").read_text())["rounds"]
    assert evaluate_run(load_run(out))["eval_loss"] == pytest.approx(rows[-1]["eval_loss"], rel=1e-5)
    export(load_run(out), tmp_path / "a")
    assert (tmp_path / "a" / "lora_residual.safetensors").is_file()


def test_the_adapter_stands_alone(run_dir: Path, tiny_model_dir: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = run_dir / "adapter"
    conf = json.loads((adapter / "adapter_config.json").read_text())
    assert conf["base_model_name_or_path"] == str(tiny_model_dir)  # the user's directory, as given
    AutoTokenizer.from_pretrained(str(adapter))  # the tokenizer travels with it
    card = (adapter / "README.md").read_text()
    assert "base_model: " + str(tiny_model_dir) in card and "`fedpeft`" in card
    rows = json.loads((run_dir / "metrics.json").read_text())["rounds"]
    assert f"{sum(r['bytes_up'] for r in rows):,}" in card
    assert f"{rows[-1]['eval_loss']:.4f}" in card
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), str(adapter))
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) > 0


def test_registered_models_are_named_by_hub_id() -> None:
    assert base_identity("smollm2-135m") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert base_identity("minilm-l6") == "sentence-transformers/all-MiniLM-L6-v2"
    assert base_identity("org/model") == "org/model"


def test_eval_reproduces_the_servers_last_evaluation(run_dir: Path) -> None:
    rows = json.loads((run_dir / "metrics.json").read_text())["rounds"]
    got = evaluate_run(load_run(run_dir))
    assert got["eval_loss"] == pytest.approx(rows[-1]["eval_loss"], rel=1e-5)
    assert got["examples"] == 6


def test_generate_is_deterministic_and_the_cli_prints_it(run_dir: Path, capsys, monkeypatch) -> None:
    ft = load_run(run_dir)
    a = generate(ft, "Tell me about food number 3.", max_new_tokens=8)
    assert isinstance(a, str) and a == generate(ft, "Tell me about food number 3.", max_new_tokens=8)
    assert cli.main(["generate", "--run", str(run_dir), "--prompt", "Tell me about food number 3.",
                     "--max-new-tokens", "8"]) == 0
    assert capsys.readouterr().out.strip() == a
    answers = iter(["Tell me about food number 3.", ""])
    monkeypatch.setattr("builtins.input", lambda _prompt="": next(answers))
    assert cli.main(["generate", "--run", str(run_dir), "--max-new-tokens", "8"]) == 0
    assert f"model> {a}" in capsys.readouterr().out


def test_export_adapter_and_merged_model_give_the_same_logits(run_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ft = load_run(run_dir)
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    with torch.no_grad():
        want = ft.model(input_ids=ids).logits
    assert cli.main(["export", "--run", str(run_dir), "--out", str(tmp_path / "a")]) == 0
    assert cli.main(["export", "--run", str(run_dir), "--out", str(tmp_path / "m"), "--merge"]) == 0
    assert (tmp_path / "a" / "tokenizer_config.json").is_file()
    assert (tmp_path / "m" / "README.md").is_file() and not (tmp_path / "m" / "adapter_config.json").exists()
    base = json.loads((tmp_path / "a" / "adapter_config.json").read_text())["base_model_name_or_path"]
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(tmp_path / "a"))
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "m"))
    with torch.no_grad():
        assert torch.allclose(adapter(input_ids=ids).logits, want, atol=1e-5)
        assert torch.allclose(merged(input_ids=ids).logits, want, atol=1e-4)
    with pytest.raises(PollenError, match="not empty"):
        export(ft, tmp_path / "a")


def test_not_a_run_is_one_clear_line(tmp_path: Path, capsys) -> None:
    assert cli.main(["eval", "--run", str(tmp_path)]) == 2
    assert "is not a Pollen run directory (no config.toml)" in capsys.readouterr().out
    PollenConfig.load(None, {"strategy.name": "frl"}).save(tmp_path / "config.toml")
    assert cli.main(["export", "--run", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "saves no language model" in " ".join(capsys.readouterr().out.split())


def test_round_adapters_load_with_peft_and_keep_the_last_n(run_dir: Path, tiny_model_dir: Path,
                                                           tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from pollen.strategies.fedpeft.artifacts import save_round_adapter
    from pollen.strategies.fedpeft.runtime import runtime

    rounds = run_dir / "rounds"
    assert [p.name for p in rounds.iterdir()] == ["round-00001"]  # the run's one round
    final = load_run(run_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)),
                                      str(rounds / "round-00001"))
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    with torch.no_grad():  # round 1 is the last round: the same model as adapter/
        assert torch.allclose(model(input_ids=ids).logits, final.model(input_ids=ids).logits, atol=1e-6)
    names = json.loads((rounds / "round-00001" / "adapter_config.json").read_text())
    assert names["base_model_name_or_path"] == str(tiny_model_dir)
    rt = runtime(PollenConfig.load(run_dir / "config.toml"))
    for r in range(2, 6):
        save_round_adapter(rt, tmp_path, r, keep=2)
    assert sorted(p.name for p in (tmp_path / "rounds").iterdir()) == ["round-00004", "round-00005"]


def test_a_damaged_run_directory_is_one_clear_error(run_dir: Path, tmp_path: Path, capsys) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(run_dir, bad)
    (bad / "adapter" / "adapter_model.safetensors").write_bytes(b"not safetensors")
    assert cli.main(["eval", "--run", str(bad)]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "is not a loadable adapter" in out and "Traceback" not in out
    (bad / "config.toml").write_text("[train]\nlr = 'fast'\n")  # a tampered config
    assert cli.main(["generate", "--run", str(bad), "--prompt", "hi"]) == 2
    assert "train.lr: expected float" in " ".join(capsys.readouterr().out.split())
