"""`python -m kerasrnn <verb> [options]`: one entry point for every command.

The module entry points stay as they were (`python -m kerasrnn.train`, `python -m kerasrnn.predict`,
`python tools/export.py`, `python tools/check_parity.py`); a verb runs the same code. `bench` is a
tool of the source checkout (tools/bench.py), not of the installed package.
"""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

VERBS = {
    "train": ("kerasrnn.train", "train a classifier and write a run folder"),
    "predict": ("kerasrnn.predict", "classify texts with a run or an exported model"),
    "export": ("kerasrnn.export_cli", "export a run to SavedModel, ONNX, TFLite and a web page"),
    "parity": ("kerasrnn.parity_cli", "check every exported file against the Keras model"),
    "vocab": ("kerasrnn.vocab", "make a streamed corpus's vocabulary file once, for every worker (--vocab)"),
    "bench": (None, "benchmark training and inference (source checkout only: tools/bench.py)"),
}
BENCH_SCRIPT = Path(__file__).resolve().parent.parent / "tools" / "bench.py"


def usage() -> str:
    lines = ["usage: python -m kerasrnn <verb> [options]   (python -m kerasrnn <verb> --help for its options)",
             "", "verbs:"]
    lines += [f"  {verb:8} {what}" for verb, (_, what) in VERBS.items()]
    lines += ["", "python -m kerasrnn --data FILE ... (options without a verb) trains, as before."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from kerasrnn.errors import UserError, cli_main

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(usage())
        return 0
    if not argv:
        print(usage(), file=sys.stderr)
        return 2
    if argv[0].startswith("-"):  # before the verbs, `python -m kerasrnn` was train: options alone still are
        argv = ["train", *argv]
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"error: unknown verb {verb!r}; choose one of {', '.join(VERBS)} (python -m kerasrnn --help)",
              file=sys.stderr)
        return UserError.exit_code
    if verb == "bench":
        if not BENCH_SCRIPT.is_file():
            print("error: bench is a tool of the source checkout (tools/bench.py), not of the installed "
                  "package; clone the repository and run it there", file=sys.stderr)
            return UserError.exit_code
        sys.argv = [str(BENCH_SCRIPT), *rest]
        runpy.run_path(str(BENCH_SCRIPT), run_name="__main__")  # it exits with its own status
        return 0
    module = __import__(VERBS[verb][0], fromlist=["main"])
    return cli_main(module.main, rest)


if __name__ == "__main__":
    sys.exit(main())
