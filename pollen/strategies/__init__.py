"""Pollen strategies package."""
