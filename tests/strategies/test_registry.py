"""Methods by name: every strategy belongs to exactly one method, unknown names list the choices."""

import pytest

from pollen.errors import ConfigError, UnknownNameError
from pollen.strategies import METHODS, STRATEGIES, Method, method_of, register_method
from pollen.strategies.fedpeft import client, runtime, server, wire


def test_every_strategy_belongs_to_one_method():
    owners = {s: method_of(s).name for s in STRATEGIES}
    assert owners["fedpeft"] == "fedpeft" and owners["flag"] == "flag" and owners["frl"] == "frl"
    assert owners["fedkseed"] == owners["fedkseed-pro"] == "fedkseed"
    assert {owners[s] for s in ("fedavg", "median", "krum", "bulyan")} == {"baselines"}
    assert sorted(METHODS) == ["baselines", "fedkseed", "fedpeft", "flag", "frl"]


def test_resumable_methods():
    assert {m for m in METHODS if METHODS.get(m).resumable} >= {"baselines", "fedkseed", "fedpeft", "flag",
                                                               "frl"}


def test_unknown_strategy_lists_the_choices():
    with pytest.raises(UnknownNameError, match="fedpeft"):
        method_of("fedsgd")


def test_a_method_must_name_registered_strategies_once():
    m = Method("twice", ("fedpeft",), train=client.train, server=server.PeftServer,
               preflight=runtime.preflight, reply_contract=wire.reply_contract)
    with pytest.raises(ConfigError, match="belongs to methods"):
        register_method(m)
    with pytest.raises(UnknownNameError):
        register_method(Method("ghost", ("no-such-strategy",), train=client.train,
                               server=server.PeftServer, preflight=runtime.preflight,
                               reply_contract=wire.reply_contract))
    assert "twice" not in METHODS and "ghost" not in METHODS
