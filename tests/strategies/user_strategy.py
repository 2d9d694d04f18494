"""A user's own Flower strategy, as `--strategy tests.strategies.user_strategy:make` finds it."""

from __future__ import annotations

from flwr.serverapp.strategy import FedAvg

SEEN: list[int] = []  # how many replies each aggregation saw


class CountingFedAvg(FedAvg):
    def aggregate_train(self, server_round, replies):  # type: ignore[no-untyped-def]
        replies = list(replies)
        SEEN.append(len(replies))
        return super().aggregate_train(server_round, replies)


def make(*, fraction_train: float, min_train_nodes: int, min_available_nodes: int,
         fraction_evaluate: float) -> CountingFedAvg:
    return CountingFedAvg(fraction_train=fraction_train, min_train_nodes=min_train_nodes,
                          min_available_nodes=min_available_nodes, fraction_evaluate=fraction_evaluate)


def not_a_strategy() -> int:
    return 3
