"""Local multi-client runs on Flower's simulation engine (Ray), and robustness-study tooling."""
