"""FedPEFT's messages (also FLAG's and the baselines'): plain Flower records, no custom bytes.

Down-link: the global trainable tensors as the ArrayRecord "arrays" plus the train config (lr,
local-steps); with `compression.codec_down`, pollen.v1.Downlink bytes under ConfigRecord "downlink"
instead of "arrays" (protos/pollen/v1/downlink.proto, downlink.py), and the reply then carries a
ConfigRecord "downlink" (version, fingerprint) that the down-link layer checks and removes before
screening; with `strategy.lora_aggregation = "exact"` also the ArrayRecord "lora-residual" (the
residual folded into the frozen weights, pollen/strategies/fedpeft/lora_exact.py). Up-link: the local tensors as "arrays", or with a codec the compressed update as pollen.v1
bytes under ConfigRecord "update" (protos/pollen/v1/update.proto), metrics "num-examples",
"train_loss", "seen", and the client's identity record "client" (pollen/protocol/identity.py).
`PEFT` is the reply contract the server screens every reply against (after decoding "update").
"""

from __future__ import annotations

from typing import Any

from pollen.protocol.contracts import (
    CLIENT_TIMING,
    COUNT,
    INT,
    NUMBER,
    Arrays,
    Configs,
    Contracts,
    Metrics,
    ReplyContract,
)

IDENTITY = Configs({"partition-id": "int"})  # pollen.protocol.identity

PEFT: Contracts = {"train": ReplyContract(
    records={"arrays": Arrays(like="arrays"),
             "metrics": Metrics({"num-examples": COUNT, "train_loss": NUMBER, "seen": INT,
                                 **CLIENT_TIMING}),
             "client": IDENTITY},
    optional=frozenset({"client"}))}


def reply_contract(cfg: Any) -> Contracts:
    return PEFT
