"""Client side: the Flower ClientApp and the local trainers per method family."""
