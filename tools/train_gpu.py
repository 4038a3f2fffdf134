#!/usr/bin/env python
"""GPU training throughput: Keras on KERAS_BACKEND=jax (no TensorFlow needed) next to PyTorch nn.RNN
(cuDNN, packed sequences) on the same GPU, same synthetic data and sizes, in one run.

    KERAS_BACKEND=jax python tools/train_gpu.py [--sizes 20000,256,128,256] [--batches 256,1024] [--pooling max,last]

Prints one JSON line per batch size and writes --out (default gpu_bench.json).
"""
import argparse
import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# tools/ itself, for the benchmarks package, however this script is started (runpy, python -m kerasrnn bench)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="20000,256,128,256", help="vocab,max_len,embed,units")
    p.add_argument("--batches", default="256,1024")
    p.add_argument("--examples", type=int, default=65536)
    p.add_argument("--pooling", default="max", help="comma list of max,last,mean (default: the default model's)")
    p.add_argument("--epochs", type=int, default=3, help="the first epoch (compilation) is not counted")
    p.add_argument("--out", default="gpu_bench.json")
    args = p.parse_args(argv)
    from benchmarks.training import gpu_training_bench

    vocab, max_len, embed, units = (int(v) for v in args.sizes.split(","))
    result = gpu_training_bench(vocab, max_len, embed, units, [int(b) for b in args.batches.split(",")],
                                args.examples, args.epochs, tuple(args.pooling.split(",")))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out} ({result['backend']} on {result['device']})")
    return 0


from kerasrnn.errors import cli_main  # noqa: E402

sys.exit(cli_main(main))
