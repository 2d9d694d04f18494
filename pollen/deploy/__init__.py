"""Running Pollen on real machines: Flower process command lines and local Docker deployments."""
