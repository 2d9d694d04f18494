"""The Flower ServerApp: run the rounds of the configured method, report failures."""

from __future__ import annotations

from logging import INFO
from pathlib import Path
from typing import Any

import torch
from flwr.app import Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from pollen.config import PollenConfig
from pollen.errors import PollenError
from pollen.protocol.records import CONFIG_KEY, OUT_KEY, RESUME_KEY, config_from_context
from pollen.protocol.run_config import match_supernodes, prepare_out
from pollen.server.ledger import record_failure
from pollen.server.runner import run_rounds
from pollen.strategies import method_for

app = ServerApp()


def run_server(grid: Grid, cfg: PollenConfig, out: Path, *, resume: bool = False) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.run.seed)
    return run_rounds(grid, cfg, out, method_for(cfg), resume=resume)


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = None
    if not context.run_config.get(CONFIG_KEY):  # `flwr run .`: dotted keys, OUT = run.out made absolute
        cfg = config_from_context(context)  # a bad key or value: one ConfigError, before any file
        note = match_supernodes(cfg, context.run_config, len(list(grid.get_node_ids())))
        out = prepare_out(cfg)
        for line in (note, f"pollen: writing this run to {out}"):
            if line:
                log(INFO, "%s", line)
    else:
        out = Path(str(context.run_config.get(OUT_KEY, "runs/latest")))
    try:
        run_server(grid, cfg or config_from_context(context), out,
                   resume=bool(context.run_config.get(RESUME_KEY, False)))
    except PollenError as e:
        record_failure(out, str(e))
        raise
    except BaseException as e:
        # A crash (a full disk, a bug, a signal): progress.json must not stay at "train". The
        # traceback goes to this process's log (Flower prints it); the file keeps one line.
        record_failure(out, f"{type(e).__name__}: {e}")
        raise
