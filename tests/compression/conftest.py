from __future__ import annotations

import numpy as np
import pytest
from compression_helpers import lora_update


@pytest.fixture
def update() -> dict[str, np.ndarray]:
    return lora_update()
