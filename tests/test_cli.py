"""Bad input fails fast with a clear message and a non-zero exit, before any process starts."""

import pytest

from pollen.cli import main


@pytest.mark.parametrize("argv, fragment", [
    (["simulate", "--model", "gpt-17"], "unknown model 'gpt-17'"),
    (["simulate", "--dataset", "nope"], "unknown dataset 'nope'"),
    (["simulate", "--strategy", "fedmagic"], "unknown strategy 'fedmagic'"),
    (["simulate", "--config", "/no/such/run.toml"], "does not exist"),
    (["simulate", "--clients", "22"], "only 21 categories"),
    (["simulate", "--partition", "iid", "--clients", "5000"], "only 1179 training examples"),
    (["simulate", "--rounds", "-1"], "run.rounds: must be >= 1"),
    (["simulate", "--lr", "fast"], "train.lr: expected float"),
    (["simulate", "--set", "train.lr"], "--set expects SECTION.KEY=VALUE"),
    (["simulate", "--peft", "bias"], "has no bias terms"),
    (["server", "--insecure", "--host", "0.0.0.0"], "loopback only"),
    (["server"], "TLS by default"),
    (["server", "--insecure", "--resume"], "--resume: no checkpoint"),
    (["deploy", "local", "--clients", "0", "--config", "run.toml"], "need at least one client"),
    (["client", "--server", "127.0.0.1:9092", "--partition-id", "3", "--num-partitions", "3",
      "--insecure"], "--partition-id must be in [0, 3)"),
])
def test_bad_input_is_a_clear_error(argv, fragment, capsys, tmp_path):
    if argv[0] in ("simulate", "server"):
        argv = [*argv, "--out", str(tmp_path / "run")]
    code = main(argv)
    out = capsys.readouterr().out
    assert code != 0
    assert fragment in " ".join(out.split()), out
    assert "Traceback" not in out
    assert not (tmp_path / "run" / "logs").exists()  # nothing was started
