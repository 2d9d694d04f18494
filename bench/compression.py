"""Benchmark the update codecs: ratio vs float32, relative error, encode/decode MB/s on one core.

    PYTHONPATH=. python bench/compression.py [--updates R1.safetensors ...] [--repeat 30] [--rounds 10]

Without --updates it synthesizes LoRA-like updates for smollm2-135m (r=8 on q_proj and v_proj:
shapes (8,576), (576,8), (8,576), (192,8) per layer x 30 layers = 460,800 parameters) with a
rank-2 structure plus Student-t(3) noise and log-normal row/column scales, and says so.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from pollen.compression import Codec, ErrorFeedback, decode_update

ROWS = [
    ("raw float32 (wire overhead only)", "none"),
    ("lossless: zstd", "zstd"),
    ("fp16 > zstd", "fp16 > zstd"),
    ("uniform 8-bit > zstd", "uniform:8 > zstd"),
    ("uniform 4-bit stochastic > zstd", "uniform:4:stochastic > zstd"),
    ("FedZip-style: top-z 20% + 3-means + lossless", "topz:0.2 > kmeans:3 > zstd"),
    ("ComPEFT: global top-k 20%, alpha=1, global sigma",
     "topz:0.2:global > ternary:1:global > zstd"),
    ("ours: top-z 5% + 16-means + zstd", "topz:0.05 > kmeans:16 > zstd"),
    ("ours: top-z 5% + ternary (per-tensor sigma) + zstd", "topz:0.05 > ternary:1:tensor > zstd"),
    ("ours: top-z 1% + 16-means + zstd", "topz:0.01 > kmeans:16 > zstd"),
]
EF_CODECS = ["topz:0.05 > kmeans:16 > zstd", "topz:0.05 > ternary:1:tensor > zstd"]


def lora_like(rng: np.random.Generator, shape: tuple[int, int], scale: float,
              basis: np.ndarray | None = None) -> np.ndarray:
    """Heavy-tailed update with low-rank structure (optionally a fixed per-run direction)."""
    r, c = shape
    low = basis if basis is not None else rng.standard_normal((r, 2)) @ rng.standard_normal((2, c))
    noise = rng.standard_t(3, size=shape)
    rows = rng.lognormal(0.0, 0.5, (r, 1))
    cols = rng.lognormal(0.0, 0.5, (1, c))
    return (scale * (0.7 * low + noise) * rows * cols).astype(np.float32)


def synth_shapes() -> dict[str, tuple[tuple[int, int], float]]:
    out = {}
    for layer in range(30):
        pre = f"base_model.model.model.layers.{layer}.self_attn"
        out[f"{pre}.q_proj.lora_A.weight"] = ((8, 576), 1e-3)
        out[f"{pre}.q_proj.lora_B.weight"] = ((576, 8), 3e-4)
        out[f"{pre}.v_proj.lora_A.weight"] = ((8, 576), 1e-3)
        out[f"{pre}.v_proj.lora_B.weight"] = ((192, 8), 3e-4)
    return out


def synth_rounds(rounds: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    shapes = synth_shapes()
    bases = {n: rng.standard_normal((s[0], 2)) @ rng.standard_normal((2, s[1]))
             for n, (s, _) in shapes.items()}
    return [{n: lora_like(rng, s, sc, bases[n]) for n, (s, sc) in shapes.items()}
            for _ in range(rounds)]


def load_updates(path: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return {k: v.astype(np.float32) for k, v in load_file(path).items()}


def timed(fn, repeat: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    out = fn()
    best = []
    for _ in range(repeat):
        t = time.thread_time()  # CPU time of this thread: robust to a shared, busy machine
        out = fn()
        best.append(time.thread_time() - t)
    return float(np.min(best)), out


def rel_err(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> float:
    num = sum(float(((ref[k] - got[k]) ** 2).sum()) for k in ref)
    den = sum(float((ref[k].astype(np.float64) ** 2).sum()) for k in ref)
    return float(np.sqrt(num / den)) if den else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--updates", nargs="+", metavar="PATH",
                    help="safetensors file(s) of update tensors, one per round (default: "
                         "synthetic); several files also give the error-feedback table")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--codecs", nargs="+", metavar="SPEC",
                    help="codec specs to compare (default: the FedZip/ComPEFT/ours rows); also "
                         "used for the error-feedback table")
    args = ap.parse_args()
    rows = [(spec, spec) for spec in args.codecs] if args.codecs else ROWS
    ef_codecs = args.codecs or EF_CODECS
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    if args.updates:
        rounds = [load_updates(p) for p in args.updates]
        first = rounds[0]
        print(f"updates: {', '.join(args.updates)}")
    else:
        rounds = synth_rounds(args.rounds)
        first = rounds[0]
        print("updates: SYNTHETIC LoRA-like (smollm2-135m shapes, r=8 on q/v, heavy-tailed); "
              "pass --updates PATH.safetensors for real ones")
    raw = 4 * sum(v.size for v in first.values())
    mb = raw / 1e6
    print(f"{len(first)} tensors, {raw // 4:,} parameters, {mb:.2f} MB float32; one core "
          f"(thread CPU time, best of {args.repeat})\n")
    expected = {k: (v.shape, "float32") for k, v in first.items()}
    print("| codec | spec | ratio | bits/param | rel. error | encode MB/s | decode MB/s "
          "| enc+dec MB/s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for label, spec in rows:
        codec = Codec.parse(spec)
        t_enc, blob = timed(lambda c=codec: c.encode(first), args.repeat)
        t_dec, dec = timed(lambda b=blob: decode_update(b, expected=expected), args.repeat)
        print(f"| {label} | `{codec.spec}` | {raw / len(blob):.1f}x | "
              f"{8 * len(blob) / (raw / 4):.3f} | {rel_err(first, dec):.3f} | {mb / t_enc:.0f} | "
              f"{mb / t_dec:.0f} | {mb / (t_enc + t_dec):.0f} |")
    if len(rounds) > 1:
        print(f"\nOver {len(rounds)} rounds (a fixed low-rank direction + fresh noise each round): "
              "effective ratio = float32 bytes / wire bytes summed over rounds; error of the "
              "summed decoded update vs the summed true update.\n")
        print("| codec | error feedback | effective ratio | rel. error of the sum |")
        print("|---|---|---:|---:|")
        truth = {k: sum(r[k] for r in rounds) for k in first}
        for spec in ef_codecs:
            for use_ef in (False, True):
                codec = Codec.parse(spec)
                ef = ErrorFeedback(codec)
                total = {k: np.zeros_like(v) for k, v in first.items()}
                wire = 0
                for upd in rounds:
                    blob = ef.encode(upd) if use_ef else codec.encode(upd)
                    wire += len(blob)
                    for k, v in decode_update(blob, expected=expected).items():
                        total[k] += v
                print(f"| `{codec.spec}` | {'yes' if use_ef else 'no'} | "
                      f"{raw * len(rounds) / wire:.1f}x | {rel_err(truth, total):.3f} |")


if __name__ == "__main__":
    main()
