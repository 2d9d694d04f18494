"""Server side: the Flower ServerApp, the metrics ledger, checkpoints and process launchers."""
