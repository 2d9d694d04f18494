"""The Flower ServerApp: hand the run to its method family's server runner, report failures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from pollen.config import PollenConfig
from pollen.errors import ConfigError, PollenError
from pollen.families import family_of, resolve
from pollen.flower_glue import OUT_KEY, RESUME_KEY, config_from_context
from pollen.server.ledger import record_failure

app = ServerApp()


def run_server(grid: Grid, cfg: PollenConfig, out: Path, *, resume: bool = False) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.run.seed)
    family = family_of(cfg)
    if not resume:
        return resolve(family.server_run)(grid, cfg, out)
    if not family.resumable:
        raise ConfigError(f"--resume: the {family.name!r} family cannot resume yet")
    return resolve(family.server_run)(grid, cfg, out, resume=True)


@app.main()
def main(grid: Grid, context: Context) -> None:
    out = Path(str(context.run_config.get(OUT_KEY, "runs/latest")))
    try:
        run_server(grid, config_from_context(context), out,
                   resume=bool(context.run_config.get(RESUME_KEY, False)))
    except PollenError as e:
        record_failure(out, str(e))
        raise
    except BaseException as e:
        # A crash (a full disk, a bug, a signal): progress.json must not stay at "train". The
        # traceback goes to this process's log (Flower prints it); the file keeps one line.
        record_failure(out, f"{type(e).__name__}: {e}")
        raise
