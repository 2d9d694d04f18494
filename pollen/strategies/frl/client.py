"""FRL clients: rebuild the global scores from the broadcast ranking, train scores, reply with a ranking.

The weights never change and never travel; the reply is this client's ranking of every layer's edges by
its trained SIGNED score (the mask itself uses |score|; spec §5.3, reproduced on purpose).
"""

from __future__ import annotations

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict

from pollen.config import PollenConfig
from pollen.errors import PayloadError
from pollen.models.supermask import get_scores, set_scores
from pollen.protocol.seeding import batch_seed, torch_seed
from pollen.strategies.frl.core import rank_scores, scores_from_ranking
from pollen.strategies.frl.runtime import client_examples, frl_runtime
from pollen.strategies.frl.train import TensorBatches, train_scores
from pollen.strategies.frl.wire import RANKING, RECORD, decode_rankings, encode_rankings


def _instruction(msg: Message) -> tuple[bytes, int, float, int]:
    """(ranking blob, server round, lr, local epochs) from the server's message, validated."""
    try:
        blob = msg.content[RECORD][RANKING]  # type: ignore[index]
        conf = msg.content["config"]
        server_round, lr, epochs = int(conf["server-round"]), float(conf["lr"]), int(conf["local-epochs"])
    except (KeyError, TypeError, ValueError) as e:
        raise PayloadError(f"FRL instruction lacks or mistypes {e}", client="server") from None
    if not isinstance(blob, bytes):
        raise PayloadError(f"{RECORD}.{RANKING} must be bytes", client="server")
    if not (lr > 0 and epochs >= 1):
        raise PayloadError(f"FRL instruction has lr={lr}, local-epochs={epochs}", client="server")
    return blob, server_round, lr, epochs


def train(msg: Message, context: Context, cfg: PollenConfig, pid: int, n_parts: int) -> RecordDict:
    blob, server_round, lr, epochs = _instruction(msg)
    rt = frl_runtime(cfg)
    ranking = decode_rankings(blob, rt.sizes, client="server", direction="down")
    set_scores(rt.model, {k: scores_from_ranking(ranking[k], rt.sorted_scores[k]) for k in rt.sizes})
    torch.manual_seed(torch_seed(cfg.run.seed, server_round, pid))
    x, y = client_examples(cfg, pid, n_parts)
    batches = TensorBatches(x, y, cfg.frl.batch_size, seed=batch_seed(cfg.run.seed, server_round, pid))
    m = train_scores(rt.model, batches, epochs=epochs, lr=lr, momentum=cfg.frl.momentum,
                     weight_decay=cfg.frl.weight_decay)
    mine = {k: rank_scores(v.cpu()) for k, v in get_scores(rt.model).items()}
    return RecordDict({
        RECORD: ConfigRecord({RANKING: encode_rankings(mine)}),
        "metrics": MetricRecord({"num-examples": int(y.shape[0]), "train_loss": m["loss"],
                                 "train_accuracy": m["accuracy"], "partition-id": pid}),
    })
