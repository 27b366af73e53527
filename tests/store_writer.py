"""One writer process of a shared results store, for ``tests/test_store_concurrency.py``.

    python tests/store_writer.py STORE --name W --keys N [--seed S] [--sleep SEC] [--go FILE]
    python tests/store_writer.py STORE --name W --keys N --hold M
    python tests/store_writer.py STORE --name W --keys N --no-claim [--go FILE]

The first form loops over cell keys ``k0..k{N-1}`` in a shuffled order and, for each key it
manages to claim, sleeps ``--sleep`` seconds (the "computation") and adds a record; it prints
one JSON line ``{"name": W, "added": [...], "skipped": n}``. With ``--go`` it first creates
``FILE.ready-W`` and waits until ``FILE`` exists, so several writers start together. With
``--no-claim`` it adds a record for every key without claiming (the store must still keep one
record per key).

The second form claims the first ``M`` keys it can, prints ``{"held": [...]}`` and sleeps
until it is killed (a writer dying while it holds claims).

Only :mod:`ttc.results` is imported (no JAX), so a writer starts in a fraction of a second.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from ttc.results import ResultsStore


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("--name", required=True)
    ap.add_argument("--keys", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sleep", type=float, default=0.005)
    ap.add_argument("--go", default=None)
    ap.add_argument("--hold", type=int, default=0)
    ap.add_argument("--no-claim", action="store_true", help="add every key without claiming")
    args = ap.parse_args()
    keys = [f"k{i}" for i in range(args.keys)]
    store = ResultsStore(args.store)
    if args.hold:
        held = []
        for k in keys:
            if len(held) < args.hold and store.claim(k):
                held.append(k)
        print(json.dumps({"held": held}), flush=True)
        time.sleep(3600)
        return
    if args.go:
        Path(f"{args.go}.ready-{args.name}").touch()
        while not Path(args.go).exists():
            time.sleep(0.002)
    random.Random(args.seed).shuffle(keys)
    added, skipped = [], 0
    for k in keys:
        if args.no_claim or store.claim(k):
            time.sleep(args.sleep)
            store.add({"key": k, "writer": args.name})
            added.append(k)
        else:
            skipped += 1
    print(json.dumps({"name": args.name, "added": added, "skipped": skipped}), flush=True)


if __name__ == "__main__":
    main()
