"""Pollen data package."""
