"""A classification run small enough for CI: minilm-l6 + LoRA on a slice of tweets."""

from pathlib import Path

TINY = """
[run]
rounds = {rounds}
round_timeout = {round_timeout}
out = "{out}"
[model]
name = "minilm-l6"
max_length = 32
[data]
name = "tweets"
partition = "dirichlet"
alpha = 1.0
eval_size = 128
max_client_examples = 64
[federation]
clients = {clients}
[train]
local_steps = 3
batch_size = 16
lr = 0.003
[simulation]
client_cpus = 1
"""


def tiny_config(tmp: Path, *, rounds: int = 2, clients: int = 3, round_timeout: float = 600,
                name: str = "tiny") -> Path:
    path = tmp / f"{name}.toml"
    path.write_text(TINY.format(rounds=rounds, clients=clients, out=tmp / name / "out"
                                if name != "tiny" else tmp / "out", round_timeout=round_timeout))
    return path
