"""Flower ServerApp, checkpoint/resume, metrics ledger, TLS and node-auth helpers."""
