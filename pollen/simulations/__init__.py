"""Local multi-client simulations and attack wrappers for robustness studies."""
