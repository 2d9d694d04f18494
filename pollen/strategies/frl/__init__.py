"""FRL: federated rank learning; clients train supermask scores and vote with rankings."""

from pollen.strategies.frl import client, runtime, server, strategy, wire
from pollen.strategies.method import Method
from pollen.strategies.registry import register_method

register_method(Method("frl", ("frl",), train=client.train, server=server.FRLServer,
                       preflight=runtime.preflight, reply_contract=wire.reply_contract,
                       partition_sizes=runtime.partition_sizes, doc=strategy.__doc__ or ""))
