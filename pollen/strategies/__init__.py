"""Aggregation strategies (Flower strategies and their algorithmic cores)."""
