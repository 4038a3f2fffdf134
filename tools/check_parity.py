#!/usr/bin/env python
"""Check every exported file against the Keras model: python tools/check_parity.py [--exports DIR] [--data FILE]"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from kerasrnn.errors import cli_main  # noqa: E402
from kerasrnn.parity_cli import main  # noqa: E402

sys.exit(cli_main(main))
