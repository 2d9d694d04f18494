"""FedKSeed: zeroth-order fine-tuning that ships (seed, scalar) pairs instead of weights."""

from pollen.strategies.fedkseed import client, runtime, server, strategy, wire
from pollen.strategies.method import Method
from pollen.strategies.registry import register_method

register_method(Method("fedkseed", ("fedkseed", "fedkseed-pro"), train=client.train, server=server.ZOServer,
                       preflight=runtime.preflight, reply_contract=wire.reply_contract,
                       writes_base_weights=True, doc=strategy.__doc__ or ""))
