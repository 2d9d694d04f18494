"""FLAG: Byzantine-robust aggregation by the flag median (IRLS over subspaces)."""
