"""The one table of export formats: name -> the module that writes it.

Every module listed exposes `export(context, folder) -> dict`: it writes its files into
`folder.path` (a staging folder the core gives it), names them in the manifest with `folder.rel`,
and returns its manifest entries. Modules are imported when used (each pulls in its converter).
"""
from __future__ import annotations

import importlib

EXPORTERS = {
    "savedmodel": "kerasrnn.export.savedmodel",
    "onnx": "kerasrnn.export.onnx_export",
    "tflite": "kerasrnn.export.tflite",
    "web": "kerasrnn.export.web",
}
FORMATS = tuple(EXPORTERS)


def exporter(fmt: str):
    """The module that exports `fmt` (KeyError: not a format; the CLI's choices come from FORMATS)."""
    return importlib.import_module(EXPORTERS[fmt])
