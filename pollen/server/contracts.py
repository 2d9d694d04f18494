"""Each method family's reply contract: exactly what its honest clients send, nothing more.

Read with the client halves (pollen/client/peft_client.py, zo_client.py, frl_client.py): a change
to what a client replies with must change its contract here, or the server drops every reply
(the screening tests in tests/security/test_hostile_replies.py run the real client handlers).
A family names its contract in pollen/families.py (`Family.reply_contract`).
Replies are screened after MeteredGrid decoded compressed updates (`update` → `arrays`).
Pollen's strategies evaluate centrally and send no "evaluate" messages, so no family has an
"evaluate" contract: any evaluate reply is refused.
"""

from __future__ import annotations

from typing import Any

from pollen.server.inbound import (
    COUNT,
    INT,
    NUMBER,
    Arrays,
    Configs,
    Contracts,
    Metrics,
    ReplyContract,
)

IDENTITY = Configs({"partition-id": "int"})  # pollen.client.identity

PEFT: Contracts = {"train": ReplyContract(
    records={"arrays": Arrays(like="arrays"),
             "metrics": Metrics({"num-examples": COUNT, "train_loss": NUMBER, "seen": INT}),
             "client": IDENTITY},
    optional=frozenset({"client"}))}

ZO_SEEDS: Contracts = {"train": ReplyContract(
    records={"fedkseed": Configs({"pairs": "bytes"}),
             "metrics": Metrics({"num-examples": COUNT, "model-version": INT},
                                optional={"partition-id": INT, "train_loss": NUMBER,
                                          "skipped": INT})})}

SUPERMASK: Contracts = {"train": ReplyContract(
    records={"frl": Configs({"ranking": "bytes"}),
             "metrics": Metrics({"num-examples": COUNT},
                                optional={"train_loss": NUMBER, "train_accuracy": NUMBER,
                                          "partition-id": INT})})}


def peft(cfg: Any) -> Contracts:
    return PEFT


def zo_seeds(cfg: Any) -> Contracts:
    return ZO_SEEDS


def supermask(cfg: Any) -> Contracts:
    return SUPERMASK
