"""FRL: federated rank learning; clients train supermask scores and vote with rankings."""
