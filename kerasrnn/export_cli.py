"""`python tools/export.py` / `kerasrnn-export`: parse arguments, call kerasrnn.export."""
from __future__ import annotations

import argparse
import sys

from kerasrnn.errors import UserError, cli_main


def main(argv=None) -> int:
    from kerasrnn.export import FORMATS
    from kerasrnn.export.tflite import IMPLS, QUANTIZATIONS, STEPWISE_MAX_FILL_RATIO

    p = argparse.ArgumentParser(prog="python tools/export.py",
                                description="Export a run to SavedModel, ONNX, TFLite and/or a web page; "
                                            "each file is parity-checked before it replaces the old one.")
    p.add_argument("--format", required=True, choices=[*FORMATS, "all"])
    p.add_argument("--run", default="runs/latest", help="run folder (default runs/latest)")
    p.add_argument("--out", default="exports", help="exports folder (default exports/)")
    p.add_argument("--quantize", default=None,
                   help="TFLite variants besides float32, comma-separated from: none," + ",".join(QUANTIZATIONS)
                        + " (default with --format all: all of them)")
    p.add_argument("--onnx-impl", choices=["rnn", "loop"], default="rnn",
                   help="rnn: native ONNX RNN operator (fast); loop: tf2onnx's Loop graph")
    p.add_argument("--tflite-impl", choices=IMPLS, default="auto",
                   help="graph of every .tflite file. stepwise: three small ops per step over all "
                        "max_len steps; fused: the builtin sequence-RNN op over the real tokens only; auto "
                        f"(default): stepwise unless max_len exceeds {STEPWISE_MAX_FILL_RATIO} x the test texts' "
                        "mean token count; unroll: the TFLite converter on an unrolled graph, for every "
                        "variant (int8 then is the converter's calibrated full-integer file)")
    p.add_argument("--web-assets", default="cdn", metavar="cdn|FOLDER",
                   help="where the web page (--format web) loads MediaPipe Tasks Text from: cdn (default, "
                        "jsDelivr at the checked version) or the folder of a local copy of the npm package "
                        "(node_modules/@mediapipe/tasks-text), copied in so the page runs offline")
    args = p.parse_args(argv)
    formats = list(FORMATS) if args.format == "all" else [args.format]
    if args.quantize is None:
        variants = list(QUANTIZATIONS) if args.format == "all" else []
    else:
        variants = [v.strip() for v in args.quantize.split(",") if v.strip() and v.strip() != "none"]
        bad = [v for v in variants if v not in QUANTIZATIONS]
        if bad:
            raise UserError(f"--quantize: unknown variant(s) {', '.join(bad)}; choose from none,{','.join(QUANTIZATIONS)}")
    from kerasrnn.export import export_run

    manifest = export_run(args.run, args.out, formats, variants, args.onnx_impl, args.tflite_impl,
                          args.web_assets)
    print(f"wrote {args.out}/manifest.json (source run {manifest['source_run']})")
    for rel, entry in manifest["files"].items():
        if rel.endswith((".onnx", ".tflite", "saved_model.pb")):
            print(f"  {rel:32} {entry['size']:>10} bytes")
    return 0


def cli() -> None:
    """Console-script entry point."""
    sys.exit(cli_main(main))


if __name__ == "__main__":
    cli()
