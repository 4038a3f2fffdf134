#!/usr/bin/env python
"""Export a trained run: python tools/export.py --format {savedmodel,onnx,tflite,all} [--run DIR] [--out DIR]"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from kerasrnn.errors import cli_main  # noqa: E402
from kerasrnn.export_cli import main  # noqa: E402

sys.exit(cli_main(main))
