"""FedPEFT: first-order PEFT adapters (LoRA, IA3, BitFit, ...) averaged by FedAvg or exact LoRA merging."""

from pollen.strategies.fedpeft import client, runtime, server, strategy, wire
from pollen.strategies.method import Method
from pollen.strategies.registry import register_method

register_method(Method("fedpeft", ("fedpeft",), train=client.train, server=server.PeftServer,
                       preflight=runtime.preflight, reply_contract=wire.reply_contract,
                       doc=strategy.__doc__ or ""))
