"""Export a run: one module per format (savedmodel, onnx_export, tflite, web), found in one table
(formats.py), over a small core (core.py) that stages, checks parity and swaps files in.

    from kerasrnn.export import export_run
    export_run("runs/latest", "exports", ["onnx", "tflite"], quantize=["float16"])
"""
from __future__ import annotations

from kerasrnn.export.core import MANIFEST, PARITY_SAMPLE, ExportContext, ExportFolder, export_run, remove_stale_staging
from kerasrnn.export.formats import FORMATS

__all__ = ["FORMATS", "MANIFEST", "PARITY_SAMPLE", "ExportContext", "ExportFolder", "export_run",
           "remove_stale_staging"]
