"""Pollen client package."""
