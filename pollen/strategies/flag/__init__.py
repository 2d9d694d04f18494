"""FLAG: Byzantine-robust aggregation by the flag median (IRLS over subspaces) of PEFT updates.

Clients train and the server evaluates exactly as in FedPEFT; only the aggregation differs.
"""

from pollen.strategies.fedpeft import client, runtime, server, wire
from pollen.strategies.flag import strategy
from pollen.strategies.method import Method
from pollen.strategies.registry import register_method

register_method(Method("flag", ("flag",), train=client.train, server=server.PeftServer,
                       preflight=runtime.preflight, reply_contract=wire.reply_contract,
                       doc=strategy.__doc__ or ""))
