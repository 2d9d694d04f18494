"""Flower ClientApp and the local trainers of each method family."""
