"""Readers of exported files: what a .tflite flatbuffer holds, and the tokenizer and labels each
artifact carries with it (SavedModel assets, ONNX metadata, the files zipped onto a .tflite).

Below both `runtimes` (which opens the files) and `export` (which checks what it wrote), so that
neither imports the other to read a file. Writing is export's business (export/mediapipe_metadata).
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from kerasrnn.tokenizer import Tokenizer

METADATA_FIELD = b"TFLITE_METADATA"  # the model metadata entry MediaPipe reads


def _schemas():
    from mediapipe.tasks.metadata import metadata_schema_py_generated as md
    from mediapipe.tasks.metadata import schema_py_generated as tfl

    return md, tfl


def _metadata_root(model_bytes: bytes):
    md, tfl = _schemas()
    model = tfl.Model.GetRootAsModel(model_bytes, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == METADATA_FIELD:
            data = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
            return md.ModelMetadataT.InitFromObj(md.ModelMetadata.GetRootAsModelMetadata(data, 0))
    return None


def read_tokenizer_options(model_bytes: bytes) -> str:
    """The delimiter regex stored in a .tflite's metadata."""
    meta = _metadata_root(model_bytes)
    if meta is None:
        raise ValueError("no MediaPipe metadata in this .tflite file")
    unit = meta.subgraphMetadata[0].inputTensorMetadata[0].processUnits[0]
    return unit.options.delimRegexPattern.decode("utf-8")


def describe(model_bytes: bytes) -> dict:
    """Facts about a .tflite file that MediaPipe depends on (checked after every conversion)."""
    _, tfl = _schemas()
    model = tfl.Model.GetRootAsModel(model_bytes, 0)
    ops = set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == tfl.BuiltinOperator.CUSTOM:
            ops.add("CUSTOM:" + (code.CustomCode() or b"?").decode())
        else:
            ops.add(next(k for k, v in vars(tfl.BuiltinOperator).items() if v == builtin))
    sub = model.Subgraphs(0)

    def tensor(idx):
        t = sub.Tensors(idx)
        return {"name": t.Name().decode(), "shape": t.ShapeAsNumpy().tolist(),
                "dtype": next(k for k, v in vars(tfl.TensorType).items() if v == t.Type()).lower()}
    return {
        "subgraphs": model.SubgraphsLength(),
        "ops": sorted(ops),
        "inputs": [tensor(sub.Inputs(i)) for i in range(sub.InputsLength())],
        "outputs": [tensor(sub.Outputs(i)) for i in range(sub.OutputsLength())],
        "has_metadata": _metadata_root(model_bytes) is not None,
    }


def zip_members(data: bytes) -> dict[str, bytes]:
    """Files packed after a .tflite flatbuffer (MediaPipe's associated files)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return {name: zf.read(name) for name in zf.namelist()}
    except zipfile.BadZipFile:
        return {}


def read_lines(path: Path) -> list[str]:
    return [line for line in Path(path).read_text(encoding="utf-8").split("\n") if line]


def savedmodel_extras(path: Path) -> tuple[list[str], Tokenizer | None]:
    """Labels and tokenizer from a SavedModel folder's assets (what export writes beside the graph)."""
    assets = Path(path) / "assets"
    labels = read_lines(assets / "labels.txt") if (assets / "labels.txt").is_file() else []
    tokenizer = None
    if (assets / "tokenizer.json").is_file():
        spec = json.loads((assets / "tokenizer.json").read_text(encoding="utf-8"))
        tokenizer = Tokenizer.load(assets / "vocab.txt", spec["max_len"], spec["delim_regex"])
    return labels, tokenizer


def onnx_extras(meta: dict[str, str], path: Path) -> tuple[list[str], Tokenizer | None]:
    """Labels and tokenizer from an ONNX model's metadata_props."""
    labels = json.loads(meta["labels"]) if "labels" in meta else []
    tokenizer = None
    if "tokenizer" in meta and "vocab" in meta:
        spec = json.loads(meta["tokenizer"])
        tokenizer = Tokenizer.from_vocab_text(meta["vocab"], spec["max_len"], spec["delim_regex"],
                                              source=f"{path} (metadata 'vocab')")
    return labels, tokenizer


def tflite_extras(data: bytes, max_len: int, path: Path) -> tuple[list[str], Tokenizer | None]:
    """Labels and tokenizer from the files zipped onto a .tflite and its metadata's delimiter regex."""
    files = zip_members(data)
    labels = [line for line in files["labels.txt"].decode("utf-8").split("\n") if line] if "labels.txt" in files else []
    tokenizer = None
    if "vocab.txt" in files:
        tokenizer = Tokenizer.from_vocab_text(files["vocab.txt"].decode("utf-8"), max_len,
                                              read_tokenizer_options(data), source=f"{path} (vocab.txt)")
    return labels, tokenizer
