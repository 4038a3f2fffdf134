"""Classify texts: `python -m kerasrnn.predict --run DIR "text" ...` (or --model FILE).

--model accepts a run folder, a .keras file, a SavedModel folder, a .onnx or a .tflite file; the
labels and probabilities are the same whatever the format.
"""
from __future__ import annotations

import argparse
import json
import sys

from kerasrnn.errors import UserError, cli_main


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m kerasrnn.predict", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--run", help="run folder (default runs/latest)")
    src.add_argument("--model", help="run folder, .keras, SavedModel folder, .onnx or .tflite")
    p.add_argument("--json", action="store_true", help="one JSON object per text")
    p.add_argument("--top", type=int, default=1, help="how many labels to show per text")
    p.add_argument("texts", nargs="*", help="texts to classify; '-' reads one text per line from stdin")
    args = p.parse_args(argv)
    texts = args.texts
    if texts == ["-"]:
        texts = [line.rstrip("\n") for line in sys.stdin]
    if not texts:
        raise UserError("no texts given; pass them as arguments or '-' to read stdin")
    from kerasrnn.runtimes import open_model

    runtime = open_model(args.model or args.run or "runs/latest")
    probs = runtime.predict_texts(texts)
    labels = runtime.labels or [str(i) for i in range(probs.shape[1])]
    for text, row in zip(texts, probs):
        order = row.argsort()[::-1][: max(1, args.top)]
        if args.json:
            print(json.dumps({"text": text, "label": labels[order[0]], "probability": float(row[order[0]]),
                              "probabilities": {labels[i]: float(row[i]) for i in range(len(labels))}},
                             ensure_ascii=False))
        else:
            shown = "  ".join(f"{labels[i]} {row[i]:.4f}" for i in order)
            print(f"{shown}\t{text}")
    return 0


def cli() -> None:
    """Console-script entry point."""
    sys.exit(cli_main(main))


if __name__ == "__main__":
    cli()
