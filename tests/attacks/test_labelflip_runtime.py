"""The real client data path (pollen.strategies.fedpeft.runtime.client_data, as the ClientApp calls it) under labelflip.

Separate file: it loads minilm-l6 (a few seconds), which the other attack tests do not need.
"""

from __future__ import annotations

import numpy as np

from pollen.attacks.poison import attacker_ids
from pollen.config import PollenConfig


def test_client_runtime_trains_attackers_on_flipped_labels():
    from pollen.strategies.fedpeft.runtime import client_data, client_indices, data_for

    cfg = PollenConfig.load(None, {"federation.clients": 4, "attack.name": "labelflip",
                                   "attack.fraction": 0.5, "attack.seed": 5,
                                   "model.name": "minilm-l6", "data.name": "tweets",
                                   "data.partition": "iid", "data.max_client_examples": 16})
    attackers = attacker_ids(cfg)
    labels = np.asarray(data_for(cfg).train.labels)
    for pid in (attackers[0], next(p for p in range(4) if p not in attackers)):
        honest = labels[client_indices(cfg, pid, 4)]
        got = np.asarray(client_data(cfg, pid, 4).labels)
        expected = 2 - honest if pid in attackers else honest
        np.testing.assert_array_equal(got, expected)
