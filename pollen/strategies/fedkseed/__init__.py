"""FedKSeed: zeroth-order fine-tuning that ships (seed, scalar) pairs instead of weights."""
