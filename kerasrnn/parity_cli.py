"""`python tools/check_parity.py` / `kerasrnn-parity`: run the Keras model and every exported file on the
same inputs and fail unless each is within its tolerance."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kerasrnn.errors import UserError, cli_main


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python tools/check_parity.py", description=__doc__)
    p.add_argument("--exports", default="exports", help="exports folder (default exports/)")
    p.add_argument("--run", default=None, help="run folder of the Keras reference (default: manifest's source run)")
    p.add_argument("--data", default=None, help="labelled file to check on (default: the run's test split)")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--limit", type=int, default=None, help="check only the first N texts")
    p.add_argument("--no-mediapipe", action="store_true", help="skip the MediaPipe TextClassifier route")
    p.add_argument("--verify-manifest", action="store_true",
                   help="only check that every file in manifest.json exists with its recorded sha256")
    args = p.parse_args(argv)
    from kerasrnn import backends

    backends.use("tensorflow", "check_parity")  # the Keras reference runs where the exports were made
    exports = Path(args.exports)
    from kerasrnn.export import parity

    if not exports.is_dir():
        raise UserError(f"{exports}: no exports folder; run `python tools/export.py --format all` first")
    if args.verify_manifest:
        problems = parity.verify_manifest(exports)
        for line in problems:
            print(line)
        print(f"manifest: {'OK' if not problems else f'{len(problems)} problem(s)'}")
        return 1 if problems else 0
    manifest = parity.read_manifest(exports)  # what each file is (format, quantization) comes from here
    run = args.run or manifest["source_run"]
    artifacts = parity.artifacts_from_entries(exports, manifest.get("artifacts", {}))
    if not artifacts:
        raise UserError(f"{exports}: no exported files found; run `python tools/export.py --format all`")
    from kerasrnn.run import RunInfo

    info = RunInfo.load(run)
    if args.data:
        texts, labels = parity.load_texts(args.data, args.text_column, args.label_column)
    else:
        texts, labels = info.test_split()
    if args.limit:
        texts, labels = texts[: args.limit], labels[: args.limit]
    model = info.load_model()
    print(parity.HEADER)
    results = parity.check(model, info.tokenizer, info.labels, artifacts, texts, labels,
                           mediapipe=not args.no_mediapipe)
    parity.write_report(results, exports / "parity.json",
                        {"source_run": str(info.path), "texts": len(texts), "data": args.data or "run test split"})
    failed = [r for r in results if not r.passed]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed; wrote {exports / 'parity.json'}")
    if failed:
        raise parity.ParityFailed([f for r in failed for f in r.failures],
                                  lead=f"{len(failed)} check(s) out of tolerance: ")
    return 0


def cli() -> None:
    """Console-script entry point."""
    sys.exit(cli_main(main))


if __name__ == "__main__":
    cli()
