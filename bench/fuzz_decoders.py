"""Long fuzz run of every Pollen decoder (issue 10): the CI fuzz (tests/security/test_decoder_fuzz.py)
at 100,000+ inputs.

Inputs are spread round-robin over the decoders (update wire per codec, FedKSeed pairs / down-link /
probabilities, FRL rankings): random bytes, and mutations of valid payloads (tests/security/hostile.py).
Per decoder it counts inputs, PayloadError refusals, crashes (any other exception), hangs (over
--time-limit seconds, interrupted by SIGALRM), acceptances of valid payloads that decode to the
original, acceptances of mutated payloads whose values pass every invariant (legitimate: the formats
carry no checksum, see the test's docstring) and invalid acceptances (must be 0), and the process's
peak RSS.

    PYTHONPATH=$PWD python bench/fuzz_decoders.py --inputs 100000 --seed 0
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import signal
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pollen.errors import PayloadError
from tests.security import hostile


class Hang(Exception):
    """Raised by SIGALRM when one input runs past the time limit."""


def _alarm(signum: int, frame: object) -> None:
    raise Hang


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--inputs", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-limit", type=float, default=5.0, help="seconds per input")
    ap.add_argument("--json", type=Path, help="also write the counts here")
    args = ap.parse_args()

    targets = hostile.targets(seed=args.seed)
    rng = random.Random(args.seed)
    signal.signal(signal.SIGALRM, _alarm)
    rows = {t.name: Counter() for t in targets}
    crashes: list[str] = []
    slowest = 0.0
    t0 = time.monotonic()
    for i in range(args.inputs):
        target = targets[i % len(targets)]
        row = rows[target.name]
        originals = [b for b, _ in target.corpus]
        if i // len(targets) % 50 == 0 and i // len(targets) // 50 < len(originals):
            kind, blob = "valid", originals[i // len(targets) // 50]
        else:
            kind, blob = hostile.mutate(rng, target)
        row["inputs"] += 1
        start = time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, args.time_limit)
        try:
            out = target.decode(blob)
        except PayloadError:
            row["refused"] += 1
            continue
        except Hang:
            row["hangs"] += 1
            continue
        except Exception:  # noqa: BLE001  (a crash: counted and shown)
            row["crashes"] += 1
            if len(crashes) < 5:
                crashes.append(f"{target.name} {kind} {blob[:64]!r}\n{traceback.format_exc()}")
            continue
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            slowest = max(slowest, time.monotonic() - start)
        if blob in originals:
            same = hostile.same(out, target.corpus[originals.index(blob)][1])
            row["accepted_original" if same and target.valid(out) else "accepted_invalid"] += 1
        elif target.valid(out):
            row["accepted_mutated_valid"] += 1
        else:
            row["accepted_invalid"] += 1
            if len(crashes) < 5:
                crashes.append(f"{target.name} {kind}: accepted invalid {blob[:64]!r}")
    seconds = time.monotonic() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    cols = ["inputs", "refused", "crashes", "hangs", "accepted_original", "accepted_mutated_valid",
            "accepted_invalid"]
    total = Counter()
    print(f"{'decoder':<52}" + "".join(f"{c:>12}" for c in ("inputs", "refused", "crashes", "hangs",
                                                            "ok_orig", "ok_mutated", "ok_invalid")))
    for name, row in rows.items():
        total.update(row)
        print(f"{name:<52}" + "".join(f"{row[c]:>12}" for c in cols))
    print(f"{'TOTAL':<52}" + "".join(f"{total[c]:>12}" for c in cols))
    print(f"seed {args.seed}; {seconds:.0f} s; slowest input {slowest * 1000:.0f} ms "
          f"(limit {args.time_limit:.0f} s); peak RSS {peak_mb:.0f} MB")
    for c in crashes:
        print("\n" + c)
    if args.json:
        args.json.write_text(json.dumps({"seed": args.seed, "seconds": round(seconds, 1),
                                         "slowest_ms": round(slowest * 1000, 1),
                                         "peak_rss_mb": round(peak_mb, 1), "total": dict(total),
                                         "rows": {k: dict(v) for k, v in rows.items()}}, indent=1))
    sys.exit(1 if total["crashes"] or total["hangs"] or total["accepted_invalid"] else 0)


if __name__ == "__main__":
    main()
