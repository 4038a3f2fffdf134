"""MediaPipe TextClassifier metadata, written straight into the .tflite flatbuffer.

mediapipe 1.2.3's metadata writer cannot be imported (its compiled helper is missing from the
wheel), but the generated flatbuffer schemas ship with it. We build the same structure the writer
would: one subgraph; the input tensor carries a RegexTokenizer process unit (delimiter regex +
vocabulary file); the output tensor carries the labels file; both files are zipped onto the end of
the model, which is how MediaPipe finds associated files. Reading them back: kerasrnn.artifacts.
"""
from __future__ import annotations

import io
import zipfile

import flatbuffers
import numpy as np
from mediapipe.tasks.metadata import metadata_schema_py_generated as md
from mediapipe.tasks.metadata import schema_py_generated as tfl

from kerasrnn.artifacts import METADATA_FIELD

# The RegexTokenizer process unit needs metadata parser 1.2.1 or newer.
MIN_PARSER_VERSION = b"1.2.1"


def _feature_content():
    content = md.ContentT()
    content.contentPropertiesType = md.ContentProperties.FeatureProperties
    content.contentProperties = md.FeaturePropertiesT()
    return content


def _file(name: str, kind: int, description: str):
    f = md.AssociatedFileT()
    f.name, f.type, f.description = name.encode(), kind, description.encode()
    return f


def build_metadata(delim_regex: str, labels: list[str], name: str, description: str, version: str) -> bytes:
    tokenizer = md.ProcessUnitT()
    tokenizer.optionsType = md.ProcessUnitOptions.RegexTokenizerOptions
    tokenizer.options = md.RegexTokenizerOptionsT()
    tokenizer.options.delimRegexPattern = delim_regex.encode("utf-8")
    tokenizer.options.vocabFile = [_file("vocab.txt", md.AssociatedFileType.VOCABULARY,
                                         "'token id' per line; <PAD>=0, <START>=1, <UNKNOWN>=2")]
    inp = md.TensorMetadataT()
    inp.name, inp.description = b"input_text", b"Raw text, tokenized by the regex tokenizer"
    inp.content = _feature_content()
    inp.processUnits = [tokenizer]

    out = md.TensorMetadataT()
    out.name, out.description = b"probability", b"Probability of each label"
    out.content = _feature_content()
    out.associatedFiles = [_file("labels.txt", md.AssociatedFileType.TENSOR_AXIS_LABELS, "Labels, one per line")]
    stats = md.StatsT()
    stats.max, stats.min = [1.0], [0.0]
    out.stats = stats

    subgraph = md.SubGraphMetadataT()
    subgraph.inputTensorMetadata, subgraph.outputTensorMetadata = [inp], [out]
    meta = md.ModelMetadataT()
    meta.name, meta.description, meta.version = name.encode(), description.encode(), version.encode()
    meta.author = b"kerasrnn"
    meta.subgraphMetadata = [subgraph]
    meta.minParserVersion = MIN_PARSER_VERSION
    builder = flatbuffers.Builder(0)
    builder.Finish(meta.Pack(builder), b"M001")
    return bytes(builder.Output())


def attach(model_bytes: bytes, metadata: bytes, files: dict[str, bytes]) -> bytes:
    """Insert the metadata buffer into the model and zip the associated files onto its end."""
    model = tfl.ModelT.InitFromObj(tfl.Model.GetRootAsModel(model_bytes, 0))
    buffer = tfl.BufferT()
    buffer.data = np.frombuffer(metadata, dtype=np.uint8)
    model.buffers.append(buffer)
    entry = tfl.MetadataT()
    entry.name, entry.buffer = METADATA_FIELD, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != METADATA_FIELD] + [entry]
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), b"TFL3")
    out = io.BytesIO()
    out.write(bytes(builder.Output()))
    with zipfile.ZipFile(out, "a") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return out.getvalue()

