#!/usr/bin/env python
"""Accuracy of the default configuration on every shared dataset vs TF-IDF + LinearSVC."""
import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# tools/ itself, for the benchmarks package, however this script is started (runpy, python -m kerasrnn bench)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kerasrnn.errors import UserError, cli_main  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python tools/benchmark_accuracy.py", description=__doc__)
    p.add_argument("--datasets", default=os.environ.get("KERASRNN_DATASETS", "../shared/datasets"))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--only", default=None, help="comma-separated dataset names")
    p.add_argument("--out", default="bench/accuracy")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training option (e.g. --set epochs=2), for smoke runs and experiments")
    args = p.parse_args(argv)
    datasets = Path(args.datasets)
    if not datasets.is_dir():
        raise UserError(f"{datasets}: no datasets folder; pass --datasets DIR")
    import json

    extra = {}
    for item in args.set:
        key, _, value = item.partition("=")
        extra[key.replace("-", "_")] = json.loads(value) if value[:1] in "0123456789-[{tfn" else value
    from benchmarks.accuracy import run

    run(datasets, [int(s) for s in args.seeds.split(",")], args.only.split(",") if args.only else None,
        Path(args.out), extra)
    print(f"wrote {args.out}/accuracy.json, accuracy.md, accuracy.png")
    return 0


sys.exit(cli_main(main))
