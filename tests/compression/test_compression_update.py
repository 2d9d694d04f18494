import numpy as np
from flwr.app import Context, RecordDict

from pollen.compression import decode_update
from pollen.compression.update import RESIDUAL_KEY, compress_update
from pollen.config import PollenConfig


def test_error_feedback_residual_persists_in_context_state_and_tracks_the_true_sum():
    cfg = PollenConfig.load(None, {"compression.codec": "topz:0.1 > kmeans:4 > zstd"})
    ctx = Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})
    rng = np.random.default_rng(0)
    g = {"w": np.zeros((40, 25), np.float32)}
    true_sum = np.zeros((40, 25))
    sent_sum = np.zeros((40, 25))
    for _ in range(12):
        step = rng.normal(size=(40, 25)).astype(np.float32)
        rec = compress_update(cfg, ctx, g, {"w": g["w"] + step})
        sent_sum += decode_update(rec["blob"], expected={"w": ((40, 25), "float32")})["w"]
        true_sum += step
        assert RESIDUAL_KEY in ctx.state
    residual = ctx.state[RESIDUAL_KEY]["w"].numpy()
    # What was sent plus what is still owed is exactly what was trained.
    np.testing.assert_allclose(sent_sum + residual, true_sum, atol=1e-3)
    assert np.linalg.norm(true_sum - sent_sum) < 0.5 * np.linalg.norm(true_sum)


def test_without_error_feedback_no_state_is_kept():
    cfg = PollenConfig.load(None, {"compression.codec": "topz:0.1 > zstd",
                                   "compression.error_feedback": "false"})
    ctx = Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})
    g = {"w": np.zeros(100, np.float32)}
    compress_update(cfg, ctx, g, {"w": np.arange(100, dtype=np.float32)})
    assert RESIDUAL_KEY not in ctx.state
