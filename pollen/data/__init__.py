"""Datasets by name (or a HF dataset / local file), tokenisation, and client partitioners."""

from pollen.data import flower_partitioners  # noqa: F401  (registers the flwr-* partitioners)
from pollen.data.load import load_dataset
from pollen.data.partition import PARTITIONERS, partition
from pollen.data.registry import DATASETS, FederatedData, TextDataset

__all__ = ["DATASETS", "PARTITIONERS", "FederatedData", "TextDataset", "load_dataset", "partition"]
