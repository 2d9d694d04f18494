"""The CLI's preflight loads the model to check it, then lets it go: the CLI only supervises the run."""

from __future__ import annotations

import gc
import weakref

from pollen.config import PollenConfig
from pollen.deploy.federation import preflight
from pollen.strategies.fedpeft import runtime


def test_preflight_leaves_no_model_in_the_cli(tmp_path, tiny_model_dir, tiny_data):
    cfg = PollenConfig.load(None, {"model.name": str(tiny_model_dir), "data.name": str(tiny_data),
                                   "data.partition": "iid", "federation.clients": 2,
                                   "data.eval_size": 4, "run.out": str(tmp_path)})
    model = weakref.ref(runtime.runtime(cfg).model)  # the copy preflight will use (cached)
    preflight(cfg)
    assert runtime._runtime.cache_info().currsize == 0 and runtime._encoded.cache_info().currsize == 0
    gc.collect()
    assert model() is None, "the preflight's model is still alive in the CLI process"
