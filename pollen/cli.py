"""`pollen simulate | server | client | config | generate | eval | export | certs | app-hash | deploy local`: parse, build the config, call."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from pollen.config import PollenConfig
from pollen.errors import PollenError, did_you_mean

# CLI flag -> dotted config key. Values go through the config's own type checks.
SIMULATE_FLAGS: dict[str, tuple[str, str]] = {
    "strategy": ("strategy.name", "aggregation strategy (fedpeft, fedavg, median, …)"),
    "model": ("model.name", "model name, local directory or Hugging Face id"),
    "dataset": ("data.name", "dataset name, local .json/.jsonl/.csv, or hf:NAME"),
    "peft": ("model.peft", "PEFT method: lora, ia3, prompt, bias"),
    "partition": ("data.partition", "auto, iid, dirichlet or natural"),
    "alpha": ("data.alpha", "Dirichlet concentration"),
    "clients": ("federation.clients", "number of clients"),
    "fraction": ("federation.fraction", "fraction of clients sampled per round"),
    "rounds": ("run.rounds", "federated rounds"),
    "out": ("run.out", "output directory"),
    "seed": ("run.seed", "seed for data splits, sampling and initialisation"),
    "local_steps": ("train.local_steps", "local optimizer steps per round"),
    "batch_size": ("train.batch_size", "local batch size"),
    "lr": ("train.lr", "local learning rate"),
    "lora_aggregation": ("strategy.lora_aggregation", "factors, svd or exact"),
    "codec": ("compression.codec", 'update codec, e.g. "topz:0.05 > kmeans:16 > zstd"'),
    "codec_down": ("compression.codec_down", 'down-link codec (PEFT family), e.g. "kmeans:16 > zstd"'),
    "attack": ("attack.name", "Byzantine attack for robustness studies (simulation)"),
    "attack_fraction": ("attack.fraction", "fraction of clients that attack"),
}


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="run configuration TOML (defaults apply where it is silent)")
    p.add_argument("--preset", help="a shipped recipe instead of --config: " + ", ".join(preset_names()))
    for flag, (_, help_text) in SIMULATE_FLAGS.items():
        p.add_argument(f"--{flag.replace('_', '-')}", dest=flag, help=help_text)
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any config key, e.g. --set train.lr=1e-3 (repeatable)")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for flag, (key, _) in SIMULATE_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            out[key] = value
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise PollenError(f"--set expects SECTION.KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def absolute(path: str | None) -> str | None:
    """A path from the command line, made absolute against the directory the user typed it in.

    Pollen's work happens in other processes with other working directories (the SuperLink, the
    ServerApp, Ray workers, `flwr` itself), so a relative path must not leave the CLI.
    """
    if path is None or not str(path).strip():
        return path
    return str(Path(path).expanduser().absolute())


_DATA_FILES = (".json", ".jsonl", ".csv")


def absolute_paths(cfg: PollenConfig) -> PollenConfig:
    """The config's filesystem paths made absolute: run.out, a local model directory, a data file."""
    from pollen.models.registry import MODELS

    cfg.run.out = str(absolute(cfg.run.out))
    if cfg.model.name not in MODELS and Path(cfg.model.name).expanduser().is_dir():
        cfg.model.name = str(absolute(cfg.model.name))
    if not cfg.data.name.startswith("hf:") and Path(cfg.data.name).suffix in _DATA_FILES:
        cfg.data.name = str(absolute(cfg.data.name))
    return cfg


PRESETS = Path(__file__).parent / "presets"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS.glob("*.toml"))


def config_path(args: argparse.Namespace) -> str | None:
    """--config FILE or --preset NAME (a TOML shipped in pollen/presets), never both."""
    preset = getattr(args, "preset", None)
    if preset is None:
        return absolute(args.config)
    if args.config is not None:
        raise PollenError("give --config or --preset, not both")
    if preset not in preset_names():
        raise PollenError(f"unknown preset {preset!r}{did_you_mean(preset, preset_names())}; "
                          f"choose one of: {', '.join(preset_names())}")
    return str(PRESETS / f"{preset}.toml")


def load_config(args: argparse.Namespace) -> PollenConfig:
    return absolute_paths(PollenConfig.load(config_path(args), _overrides(args)))


def cmd_simulate(args: argparse.Namespace, console: Console) -> int:
    from pollen.deploy.simulate import simulate

    simulate(load_config(args), console)
    return 0


def cmd_server(args: argparse.Namespace, console: Console) -> int:
    from pollen.deploy.server import serve

    serve(load_config(args), console, host=args.host, port=args.port, insecure=args.insecure,
          certs=absolute(args.certs), node_auth=not args.no_node_auth,
          health_address=os.environ.get("POLLEN_HEALTH_ADDRESS"), resume=args.resume,
          control_port=args.control_port, control_host=args.control_host)
    return 0


def cmd_client(args: argparse.Namespace, console: Console) -> int:
    from pollen.deploy.client import run_client

    if args.server is None or args.partition_id is None or args.num_partitions is None:
        raise PollenError("pollen client needs --server, --partition-id and --num-partitions "
                          "(or POLLEN_SERVER, POLLEN_PARTITION_ID, POLLEN_NUM_PARTITIONS)")
    return run_client(server=args.server, partition_id=args.partition_id,
                      num_partitions=args.num_partitions, insecure=args.insecure,
                      certs=absolute(args.certs), node_key=absolute(args.node_key),
                      max_wait=args.max_wait,
                      health_address=os.environ.get("POLLEN_HEALTH_ADDRESS"),
                      trusted_app_hash_pin=args.trusted_app_hash)


def cmd_config(args: argparse.Namespace, console: Console) -> int:
    """List every key (type, value, help) for the given config, or write it as a starter TOML."""
    from pollen.config import describe, starter_toml

    cfg = PollenConfig.load(config_path(args), _overrides(args))  # paths as written, not absolute
    if args.write:
        target = Path(str(absolute(args.write)))
        if target.exists() and not args.overwrite:
            raise PollenError(f"{target} exists; pass --overwrite to replace it")
        target.write_text(starter_toml(cfg))
        console.print(f"wrote {target}; run it with: pollen simulate --config {target}",
                      markup=False, highlight=False)
        return 0
    section = ""
    for r in describe(cfg):
        if r.key.partition(".")[0] != section:
            section = r.key.partition(".")[0]
            console.print(escape(f"[{section}]"), style="bold", highlight=False)
        value = repr(r.default) if isinstance(r.default, str) else str(r.default)
        console.print(f"  [cyan]{escape(r.key)}[/] ({r.type}) = {escape(value)}", highlight=False,
                      soft_wrap=True)
        console.print(f"      {escape(r.help)}", style="dim", highlight=False)
    return 0


def cmd_generate(args: argparse.Namespace, console: Console) -> int:
    """Talk to a run's model: one answer with --prompt, else a chat on stdin (empty line or EOF ends)."""
    from pollen.models.finetuned import generate, load_run

    ft = load_run(Path(str(absolute(args.run))))
    if args.prompt is not None:
        print(generate(ft, args.prompt, max_new_tokens=args.max_new_tokens))
        return 0
    history: list[dict[str, str]] = []
    console.print(f"chatting with {escape(str(ft.run))} ({ft.kind}); empty line or Ctrl-D ends",
                  style="dim", highlight=False)
    while True:
        try:
            prompt = input("you> ").strip()
        except EOFError:
            break
        if not prompt:
            break
        answer = generate(ft, prompt, max_new_tokens=args.max_new_tokens,
                          history=history if args.keep_history else None)
        print(f"model> {answer}")
        history += [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    return 0


def cmd_eval(args: argparse.Namespace, console: Console) -> int:
    import json

    from pollen.models.finetuned import evaluate_run, load_run

    ft = load_run(Path(str(absolute(args.run))))
    dataset = args.dataset
    if dataset is not None and Path(dataset).suffix in _DATA_FILES:
        dataset = absolute(dataset)
    print(json.dumps(evaluate_run(ft, dataset), sort_keys=True))
    return 0


def cmd_export(args: argparse.Namespace, console: Console) -> int:
    from pollen.models.finetuned import export, load_run

    ft = load_run(Path(str(absolute(args.run))))
    out = export(ft, Path(str(absolute(args.out))), merge=args.merge, overwrite=args.overwrite)
    what = "merged model" if args.merge or ft.kind != "adapter" else "adapter"
    console.print(f"wrote the {what} with its tokenizer and model card to {out}", markup=False,
                  highlight=False)
    return 0


def cmd_app(args: argparse.Namespace, console: Console) -> int:
    from pollen.deploy.app_bundle import write_user_app

    cfg = PollenConfig.load(config_path(args), _overrides(args))
    out = write_user_app(Path(str(absolute(args.dir))), cfg, overwrite=args.overwrite)
    console.print(f"wrote a Flower app to {out}; run it with: flwr run {out} "
                  '[--run-config "train.lr=1e-3 run.rounds=5"]', markup=False, highlight=False)
    return 0


def cmd_app_hash(args: argparse.Namespace, console: Console) -> int:
    from pollen.deploy.app_bundle import bundle_hash

    print(bundle_hash())  # plain stdout, so scripts can capture it
    return 0


def cmd_certs(args: argparse.Namespace, console: Console) -> int:
    from pathlib import Path

    from pollen.deploy.certs import generate_certs

    hosts = [h.strip() for h in args.hosts.split(",") if h.strip()]
    bundle = generate_certs(Path(str(absolute(args.out))), hosts, args.nodes, days=args.days,
                            overwrite=args.overwrite)
    console.print(f"wrote CA, server certificate for {', '.join(bundle.hosts)} and {bundle.n_nodes} "
                  f"node keys to {bundle.dir}. Give client I: ca.crt and node-I.key.",
                  markup=False, highlight=False)
    return 0


def cmd_deploy_local(args: argparse.Namespace, console: Console) -> int:
    from pollen.deploy.local import deploy_local

    certs, out = absolute(args.certs), absolute(args.out)
    res = deploy_local(args.clients, cpus=args.cpus, memory=args.memory,
                       config_path=Path(str(absolute(args.config))),
                       certs_dir=None if certs is None else Path(certs), rounds=args.rounds,
                       out_dir=None if out is None else Path(out), timeout=args.timeout,
                       image_tag=args.tag)
    console.print(f"server exited with {res.exit_code} after {res.duration_s:.0f} s; "
                  f"logs and results in {res.out_dir}", markup=False, highlight=False)
    return res.exit_code


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pollen-fl")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown (not installed)"


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value and value.strip().lstrip("-").isdigit() else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pollen", description=__doc__)
    parser.add_argument("--version", action="version", version=f"pollen {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="run a local federation on Flower's simulation engine")
    _add_run_flags(sim)
    sim.set_defaults(func=cmd_simulate)

    srv = sub.add_parser("server", help="start the coordinator (Flower SuperLink + the Pollen run)")
    _add_run_flags(srv)
    srv.add_argument("--host", default="127.0.0.1",
                     help="address the Fleet API (gRPC, the only public API) listens on")
    srv.add_argument("--port", type=int, default=9092, help="Fleet API port clients connect to")
    srv.add_argument("--control-port", type=int, default=None,
                     help="loopback port of the Control API (run submission, node registration); "
                          "default: --port + 1")
    srv.add_argument("--control-host", default="127.0.0.1",
                     help="loopback address of the Control API (never public; ::1 with TLS needs "
                          "::1 in `pollen certs --hosts`)")
    srv.add_argument("--insecure", action="store_true", help="no TLS (loopback only)")
    srv.add_argument("--certs", default=os.environ.get("POLLEN_CERTS"),
                     help="directory from `pollen certs` (TLS + node authentication)")
    srv.add_argument("--no-node-auth", action="store_true",
                     help="TLS only: accept any client that trusts the CA")
    srv.add_argument("--resume", action="store_true",
                     help="restart from OUT/checkpoint after a crash (same config and out dir)")
    srv.set_defaults(func=cmd_server)

    cli = sub.add_parser("client", help="start one client (a Flower SuperNode running Pollen)")
    cli.add_argument("--server", default=os.environ.get("POLLEN_SERVER"),
                     help="HOST:PORT of the server (env POLLEN_SERVER)")
    cli.add_argument("--partition-id", type=int, default=_env_int("POLLEN_PARTITION_ID"),
                     help="this client's data partition (env POLLEN_PARTITION_ID)")
    cli.add_argument("--num-partitions", type=int, default=_env_int("POLLEN_NUM_PARTITIONS"),
                     help="total partitions = clients (env POLLEN_NUM_PARTITIONS)")
    cli.add_argument("--insecure", action="store_true", help="no TLS (loopback only)")
    cli.add_argument("--certs", default=os.environ.get("POLLEN_CERTS"),
                     help="directory with ca.crt (and node-I.key) from `pollen certs`")
    cli.add_argument("--node-key", help="this node's private key (default: CERTS/node-I.key)")
    cli.add_argument("--trusted-app-hash", default=None, metavar="SHA256",
                     help="run only the Flower app (FAB) with this SHA-256; default: "
                          "$POLLEN_TRUSTED_APP_HASH, else this Pollen's own app (`pollen app-hash`). "
                          "Any other app the server sends is refused and the client exits with 4")
    cli.add_argument("--max-wait", type=float, default=None,
                     help="exit after this many seconds without a server (default: wait forever)")
    cli.set_defaults(func=cmd_client)

    conf = sub.add_parser("config", help="list every config key with type, value and help, "
                                          "or write a starter TOML (--write FILE)")
    _add_run_flags(conf)
    conf.add_argument("--write", metavar="FILE", help="write the (resolved) configuration as a "
                                                      "commented TOML to FILE")
    conf.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    conf.set_defaults(func=cmd_config)

    gen = sub.add_parser("generate", help="complete or chat with a finished run's model")
    gen.add_argument("--run", required=True, help="the run's output directory (its --out)")
    gen.add_argument("--prompt", help="one prompt; without it, an interactive chat on stdin")
    gen.add_argument("--max-new-tokens", type=int, default=64, help="longest answer, in tokens")
    gen.add_argument("--keep-history", action="store_true",
                     help="interactive: send earlier turns with each prompt")
    gen.set_defaults(func=cmd_generate)

    ev = sub.add_parser("eval", help="held-out loss/accuracy of a finished run's model (JSON on stdout)")
    ev.add_argument("--run", required=True, help="the run's output directory (its --out)")
    ev.add_argument("--dataset", help="another dataset's held-out split (default: the run's own)")
    ev.set_defaults(func=cmd_eval)

    exp = sub.add_parser("export", help="a standalone Hugging Face directory from a finished run")
    exp.add_argument("--run", required=True, help="the run's output directory (its --out)")
    exp.add_argument("--out", required=True, help="directory to write")
    exp.add_argument("--merge", action="store_true",
                     help="fold the adapter into the base weights: a full model, no peft needed")
    exp.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    exp.set_defaults(func=cmd_export)

    fa = sub.add_parser("app", help="write a Flower app directory for `flwr run` (every config key "
                                    "as a run-config key; for a pip-installed Pollen)")
    _add_run_flags(fa)
    fa.add_argument("--dir", required=True, help="directory to write the app to")
    fa.add_argument("--overwrite", action="store_true", help="replace a non-empty --dir")
    fa.set_defaults(func=cmd_app)

    ah = sub.add_parser("app-hash", help="print the SHA-256 of this Pollen's Flower app, the one "
                                         "`pollen client` trusts by default")
    ah.set_defaults(func=cmd_app_hash)

    crt = sub.add_parser("certs", help="make a CA, a server certificate and node keys for TLS + auth")
    crt.add_argument("--out", required=True, help="directory to write (kept private: keys are 0600)")
    crt.add_argument("--hosts", default="127.0.0.1,localhost",
                     help="comma-separated names/IPs clients use to reach the server")
    crt.add_argument("--nodes", type=int, default=4, help="number of client node keys")
    crt.add_argument("--days", type=int, default=365, help="certificate validity")
    crt.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    crt.set_defaults(func=cmd_certs)

    dep = sub.add_parser("deploy", help="run a deployment on this machine")
    dep_sub = dep.add_subparsers(dest="target", required=True)
    loc = dep_sub.add_parser("local", help="1 server + N client containers on this Docker engine "
                                           "(images from docker/bootstrap.sh)")
    loc.add_argument("--clients", type=int, required=True, help="number of client containers")
    loc.add_argument("--config", required=True, help="run configuration TOML")
    loc.add_argument("--cpus", type=float, default=0.5, help="CPU cap per client container")
    loc.add_argument("--memory", default="1g", help="memory cap per client container, e.g. 512m")
    loc.add_argument("--rounds", type=int, default=None, help="override run.rounds")
    loc.add_argument("--certs", default=None,
                     help="bundle from `pollen certs --hosts pollen-server` (default: a throw-away one)")
    loc.add_argument("--out", default=None, help="directory for logs and the server's results")
    loc.add_argument("--timeout", type=float, default=3600.0, help="seconds before giving up")
    loc.add_argument("--tag", default="0.1.0", help="image tag of pollen-server/pollen-client")
    loc.set_defaults(func=cmd_deploy_local)
    return parser


def fail(console: Console, message: str, details: str | None = None) -> None:
    """Details (process logs) first, then exactly one line: `error: MESSAGE`.

    Everything is printed as text, never as Rich markup: an error can quote a log, a path or a
    client's field, and "[/]" in any of them must neither vanish nor restyle the terminal.
    """
    head, _, rest = str(message).strip().partition("\n")
    extra = "\n".join(x for x in (rest.strip(), (details or "").strip()) if x)
    if extra:
        console.print(escape(extra), style="dim", highlight=False, soft_wrap=True)
    console.print(f"[bold red]error:[/] {escape(' '.join(head.split()))}", highlight=False,
                  soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    console = Console()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args, console) or 0)
    except PollenError as e:
        fail(console, str(e), e.details)
        return e.exit_code
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return 130
    except OSError as e:  # a disk, a permission, a missing file: the system's words, one line
        where = f"{e.filename}: " if e.filename else ""
        fail(console, f"{where}{e.strerror or e}")
        return 1
    except Exception as e:  # a bug: still one line; the traceback on request
        if os.environ.get("POLLEN_DEBUG"):
            raise
        fail(console, f"unexpected {type(e).__name__}: {e} (set POLLEN_DEBUG=1 for the traceback)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
