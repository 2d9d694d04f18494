"""What server and client must agree on: Flower record keys and conversions, node identity,
flat layouts. Both sides import this package; neither imports the other."""
