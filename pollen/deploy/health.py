"""Container HEALTHCHECK: ask a SuperLink/SuperNode's gRPC health server (`--health-server-address`,
plaintext, standard grpc.health.v1) whether it is SERVING.

`python -m pollen.deploy.health [HOST:PORT]` exits 0 when serving, 1 otherwise; the address
defaults to $POLLEN_HEALTH_ADDRESS so the image's exec-form HEALTHCHECK needs no shell.
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ENV = "POLLEN_HEALTH_ADDRESS"
DEFAULT_ADDRESS = "127.0.0.1:9098"


def check(address: str, timeout: float = 3.0) -> bool:
    """True when the health service at `address` answers SERVING within `timeout` seconds."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    address = args[0] if args else os.environ.get(ENV, DEFAULT_ADDRESS)
    ok = check(address)
    print(f"{address}: {'SERVING' if ok else 'NOT SERVING'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
