"""Flower's baseline strategies (FedAvg, FedMedian, trimmed mean, (Multi-)Krum, Bulyan)."""
