"""Flower's baseline strategies (FedAvg, FedMedian, trimmed mean, (Multi-)Krum, Bulyan) on PEFT updates.

They train and evaluate exactly as FedPEFT does; only the aggregation differs.
"""

from pollen.strategies.baselines import strategy
from pollen.strategies.fedpeft import client, runtime, server, wire
from pollen.strategies.method import Method
from pollen.strategies.registry import register_method

register_method(Method("baselines", strategy.NAMES, train=client.train, server=server.PeftServer,
                       preflight=runtime.preflight, reply_contract=wire.reply_contract,
                       doc=strategy.__doc__ or ""))
