"""TFLite for phones: builtin ops only, one subgraph, int32 [1, max_len] in, MediaPipe metadata.

Keras's own LiteRT export keeps SimpleRNN's while loop, which needs Flex TensorList ops that the
standard interpreter refuses. Every variant is written directly, as one of two graphs: stepwise
(tflite_stepwise.py: every step as three small vectorised ops) or fused (tflite_fused.py: the
builtin sequence-RNN op over the real tokens only); `choose_graph` picks by how much of max_len the
texts fill, and STORAGE says how each variant stores its weights. `--tflite-impl unroll` instead
runs the TFLite converter (and its quantizers) on an unrolled copy of the model with a static batch
of 1 (same weights). `from_keras_model` is used because a converter fed `from_concrete_functions`
on a wrapped Keras 3 model was seen to return a constant output without any error; the parity
check after export is what guards against such routes.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np

from kerasrnn.artifacts import describe
from kerasrnn.errors import InternalError, UserError
from kerasrnn.export import mediapipe_metadata as mpm

QUANTIZATIONS = ("float16", "dynamic", "int8")
IMPLS = ("auto", "stepwise", "fused", "unroll")
GRAPHS = {"stepwise": "stepwise: FULLY_CONNECTED, ADD, TANH per step over max_len steps",
          "fused": "fused UNIDIRECTIONAL_SEQUENCE_RNN over the real tokens",
          "unroll": "converter on the unrolled Keras model"}
# How each variant of the hand-written graphs stores its weights: (other weights, int8 lookup
# tables). The lookup tables (embedding times input kernel, bag-of-words scores) are nearly all of
# a file's bytes; storing them as int8 rows with one scale each and scaling the looked-up rows back
# keeps every product in float. Full-integer arithmetic (the converter's int8, --tflite-impl unroll)
# compounds rounding over the recurrence: 81.1% agreement with Keras on a 20k-word 20 Newsgroups
# model (README), so the default int8 file keeps the arithmetic in float and only the storage in 8 bits.
STORAGE = {"float32": (np.float32, False), "float16": (np.float16, False),
           "dynamic": (np.float32, True), "int8": (np.int8, True)}
WEIGHTS = {"float32": "float32",
           "float16": "float16, dequantized to float32 in the graph",
           "dynamic": "lookup tables int8 (one scale per row, scaled after the lookup); other weights float32",
           "int8": "every weight matrix int8 (one scale per row; tables scaled after the lookup, the rest "
                   "dequantized in the graph; the fused RNN operator's own weights float32); arithmetic float32"}
CONVERTER_WEIGHTS = {"float32": "float32", "float16": "float16 (converter)",
                     "dynamic": "converter dynamic-range: int8 weights, hybrid kernels",
                     "int8": "converter full integer: int8 weights and activations, float32 in/out"}
# Measured with LiteRT on x86 at 64 units (README, performance): a stepwise step costs about 1 us
# whether it holds a token or padding; a fused step about 2.5 us, but only real tokens are run.
# So stepwise is faster while max_len is under about 2.5 x the mean number of real tokens.
STEPWISE_MAX_FILL_RATIO = 2.5


def choose_graph(impl: str, max_len: int, ids: np.ndarray | None) -> str:
    """The graph for every .tflite file: `impl` itself, or for "auto" the one expected to be faster on
    these ids (the run's test texts): stepwise unless the texts fill little of max_len."""
    if impl != "auto":
        return impl
    if ids is None or not len(ids):
        return "stepwise"
    mean_tokens = float((np.asarray(ids) != 0).sum(axis=1).mean())
    return "stepwise" if max_len <= STEPWISE_MAX_FILL_RATIO * max(mean_tokens, 1.0) else "fused"


def _convert(model_b1, variant: str, calibration_ids: np.ndarray | None) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model_b1)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]

        def representative():
            for row in calibration_ids:
                yield [row[None, :].astype(np.int32)]

        converter.representative_dataset = representative
        # Integer kernels inside; the int32 token input and float32 probabilities stay as they are,
        # which MediaPipe's TextClassifier requires.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    # The converter prints Keras's export summary to stdout; keep the CLI output readable.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        return converter.convert()


def check_mobile_ready(data: bytes, max_len: int, num_classes: int, name: str) -> dict:
    """Fail the export unless the file is what LiteRT without Flex and MediaPipe accept. A file that
    is not is a fault in our graphs or converter settings, never in the user's input."""
    info = describe(data)
    problems = []
    if info["subgraphs"] != 1:
        problems.append(f"{info['subgraphs']} subgraphs (need 1)")
    custom = [op for op in info["ops"] if op.startswith("CUSTOM") or op in ("WHILE", "CALL_ONCE")]
    if custom:
        problems.append(f"non-builtin or control-flow ops {custom}")
    if len(info["inputs"]) != 1 or info["inputs"][0]["shape"] != [1, max_len] or info["inputs"][0]["dtype"] != "int32":
        problems.append(f"inputs {info['inputs']} (need one int32 [1, {max_len}])")
    if len(info["outputs"]) != 1 or info["outputs"][0]["dtype"] not in ("float32", "uint8") \
            or info["outputs"][0]["shape"] != [1, num_classes]:
        problems.append(f"outputs {info['outputs']} (need one float32/uint8 [1, {num_classes}])")
    if problems:
        raise InternalError(f"{name}: not mobile-ready: {'; '.join(problems)}")
    return info


def export(context, folder) -> dict:
    """The format entry point (see export/formats.py): model.tflite, one model_<variant>.tflite per
    quantized variant, and the tokenizer files; one manifest entry per .tflite."""
    files = export_tflite(context.model, context.config, context.tokenizer, context.labels, folder.path,
                          context.quantize, context.texts, context.source_run, context.tflite_impl)
    context.write_tokenizer_files(folder.path)
    return {name: {"path": folder.rel(name), **entry} for name, entry in files.items()}


def export_tflite(model, config: dict, tokenizer, labels: list[str], out_dir: Path, variants: list[str],
                  calibration_texts: list[str], source_run: str, impl: str = "auto") -> dict:
    """Write the .tflite files into out_dir; returns per file name its facts (also used by the benchmark).

    Every variant uses the graph `choose_graph` names (stepwise, fused or unroll), its weights
    stored as STORAGE says; with unroll every variant comes from the converter (int8: calibrated
    full integer on the first 200 test texts)."""
    from kerasrnn.export.tflite_fused import build_fused_tflite
    from kerasrnn.export.tflite_stepwise import build_stepwise_tflite
    from kerasrnn.model import rebuild

    if impl not in IMPLS:
        raise UserError(f"--tflite-impl: unknown graph {impl!r}; choose from {', '.join(IMPLS)}")

    calibration = tokenizer.encode(calibration_texts[:200]) if calibration_texts else None
    graph = choose_graph(impl, config["max_len"], calibration)
    builders = {"stepwise": build_stepwise_tflite, "fused": build_fused_tflite}
    vocab = ("\n".join(tokenizer.vocab_lines()) + "\n").encode("utf-8")
    label_file = ("\n".join(labels) + "\n").encode("utf-8")
    metadata = mpm.build_metadata(
        tokenizer.delim_regex, labels, name="kerasrnn text classifier",
        description=f"SimpleRNN text classifier ({len(labels)} labels) trained by kerasrnn; run {source_run}",
        version="1")
    files, unrolled = {}, None
    out_dir.mkdir(parents=True, exist_ok=True)
    for variant in ["float32", *variants]:
        if graph in builders:
            weights, int8_tables = STORAGE[variant]
            raw = builders[graph](model, config, weights, int8_tables)
        else:  # --tflite-impl unroll: the converter's input, built once and only when asked for
            if variant == "int8" and calibration is None:
                raise UserError("int8 needs calibration texts: the run folder has no test_split.jsonl")
            if unrolled is None:
                # no dropout: its random state is nothing the converter can hold (nor needs)
                unrolled = rebuild(model, {**config, "dropout": 0.0}, unroll=True, batch_size=1, sanitize_ids=True)
            raw = _convert(unrolled, variant, calibration)
        name = "model.tflite" if variant == "float32" else f"model_{variant}.tflite"
        info = check_mobile_ready(raw, config["max_len"], len(labels), name)
        data = mpm.attach(raw, metadata, {"vocab.txt": vocab, "labels.txt": label_file})
        (out_dir / name).write_bytes(data)
        files[name] = {"quantization": variant, "ops": info["ops"],
                       "graph": GRAPHS[graph],
                       "weights": WEIGHTS[variant] if graph in builders else CONVERTER_WEIGHTS[variant],
                       "inputs": {"input": {"dtype": "int32", "shape": [1, config["max_len"]]}},
                       "outputs": {"probabilities": {"dtype": info["outputs"][0]["dtype"],
                                                     "shape": [1, len(labels)]}}}
    return files
