"""Pollen models package."""
