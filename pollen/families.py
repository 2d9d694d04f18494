"""Method families: how a strategy's clients train and how its server evaluates and saves.

A strategy belongs to one family ("peft" first-order adapters, "zo-seeds" FedKSeed, "supermask"
FRL). The family decides the client trainer and the server runner; adding a family is one module
per side plus one `register_family` call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid

from pollen.config import PollenConfig
from pollen.registry import Registry

ClientTrain = Callable[[Message, Context, PollenConfig, int, int], RecordDict]
ServerRun = Callable[[Grid, PollenConfig, Path], dict[str, Any]]


@dataclass(frozen=True)
class Family:
    name: str
    # Import paths ("module:function") so a client never imports server code and vice versa.
    client_train: str
    server_run: str
    # Checks run before any process starts (data split, model load); raise PollenError.
    preflight: str = "pollen.runtime:preflight"
    # The server runner accepts `resume=True` (restart from OUT/checkpoint; see server/checkpoint.py).
    resumable: bool = False
    # What every reply must hold before a strategy sees it (pollen.server.inbound screens it):
    # "module:function" taking the config, returning {message type: ReplyContract}.
    reply_contract: str = "pollen.server.contracts:peft"
    # Each partition's training-example count (config -> list[int]); in simulation the largest
    # caps the `num-examples` a reply may claim (bounded influence).
    partition_sizes: str = "pollen.runtime:partition_sizes"


FAMILIES: Registry[Family] = Registry("method family")
_STRATEGY_FAMILY: dict[str, str] = {}

FAMILIES.add("peft", Family("peft", "pollen.client.peft_client:train", "pollen.server.peft_server:run",
                           resumable=True))
FAMILIES.add("supermask", Family("supermask", "pollen.client.frl_client:train",
                                 "pollen.server.frl_server:run",
                                 "pollen.frl_runtime:preflight",
                                 reply_contract="pollen.server.contracts:supermask",
                                 partition_sizes="pollen.frl_runtime:partition_sizes"))
FAMILIES.add("zo-seeds", Family("zo-seeds", "pollen.client.zo_client:train", "pollen.server.zo_server:run",
                                preflight="pollen.zo_runtime:preflight",
                                reply_contract="pollen.server.contracts:zo_seeds"))


def register_family(strategy: str, family: str) -> None:
    """Strategies outside the default "peft" family declare theirs where they are registered."""
    _STRATEGY_FAMILY[strategy] = family


def family_of(cfg: PollenConfig) -> Family:
    from pollen.strategies.registry import load_builtins

    load_builtins()
    return FAMILIES.get(_STRATEGY_FAMILY.get(cfg.strategy.name, "peft"))


def resolve(path: str) -> Any:
    import importlib

    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)
