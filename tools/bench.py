#!/usr/bin/env python
"""Benchmark training and inference: python tools/bench.py [--run DIR | --synthetic V,L,E,H] [--long-texts] [--quick]"""
import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# tools/ itself, for the benchmarks package, however this script is started (runpy, python -m kerasrnn bench)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kerasrnn.errors import cli_main  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python tools/bench.py", description=__doc__)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--run", help="trained run folder (default runs/latest)")
    src.add_argument("--synthetic", metavar="V,L,E,H", help="untrained model of these sizes, e.g. 20000,200,64,64")
    p.add_argument("--quick", action="store_true", help="few repetitions (smoke test)")
    p.add_argument("--no-train", action="store_true", help="skip the training comparison")
    p.add_argument("--baseline-run", metavar="DIR",
                   help="another run (e.g. one trained with earlier defaults) whose ONNX and TFLite files are "
                        "timed in the same rounds on the same texts; the ratios compare the two")
    p.add_argument("--long-texts", action="store_true",
                   help="time texts that fill 25-100%% of max_len (joined test texts) instead of the texts as they are")
    p.add_argument("--out", default="bench", help="folder for bench.json, bench.md, bench.png")
    args = p.parse_args(argv)
    from benchmarks.inference import run_bench

    run_bench(args.run, args.synthetic, args.quick, Path(args.out), train=not args.no_train,
              baseline_run=args.baseline_run, long=args.long_texts)
    print(f"wrote {args.out}/bench.json, bench.md, bench.png")
    return 0


sys.exit(cli_main(main))
