"""Conversions between Pollen objects and Flower records, and the run-config contract."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, Context, RecordDict

from pollen.config import PollenConfig
from pollen.errors import ConfigError

# run_config keys every party reads: declared (empty) in Pollen's fixed app bundle
# (pollen.deploy.app_bundle), set per run by `flwr run --run-config` (pollen.deploy.launch).
CONFIG_KEY = "pollen-config"
OUT_KEY = "pollen-out"
# true when `pollen server --resume` restarts from OUT/checkpoint.
RESUME_KEY = "pollen-resume"
# the ConfigRecord key of a client's compressed update (pollen.v1 bytes) in a train reply.
UPDATE_KEY = "update"


def config_from_context(context: Context) -> PollenConfig:
    """Pollen's launcher sends the whole config as one JSON key; `flwr run .` sends the dotted keys
    of the repository's `[tool.flwr.app.config]` (pollen.protocol.run_config)."""
    raw = context.run_config.get(CONFIG_KEY)
    if isinstance(raw, str) and raw:
        return PollenConfig.from_json(raw)
    from pollen.protocol.run_config import config_from_run_config, has_pollen_keys

    if has_pollen_keys(context.run_config):
        return config_from_run_config(context.run_config)
    raise ConfigError(f"run config has neither {CONFIG_KEY!r} nor Pollen's dotted keys (run.out, "
                      "train.lr, ...); start runs with `pollen simulate/server` or `flwr run .` in "
                      "the Pollen repository")


def partition_of(context: Context) -> tuple[int, int]:
    try:
        return int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
    except KeyError as e:
        raise ConfigError(f"node config lacks {e.args[0]!r}; start clients with "
                          "`pollen client --partition-id I --num-partitions N`") from None


def to_arrays(state: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in state.items()})


def from_arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


def payload_bytes(content: RecordDict) -> int:
    """Serialized payload size, as Flower counts it (`count_bytes` of every record)."""
    return int(sum(record.count_bytes() for record in content.values()))
