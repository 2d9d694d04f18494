"""FRL: federated rank learning; clients train supermask scores and vote with rankings."""

from pollen.strategies.frl import client, runtime, server, strategy
from pollen.strategies.method import Method
from pollen.strategies.registry import register_method

register_method(Method("frl", ("frl",), train=client.train, server=server.FRLServer,
                       preflight=runtime.preflight, doc=strategy.__doc__ or ""))
