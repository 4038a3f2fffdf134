"""A fast TFLite graph written op by op: the builtin UNIDIRECTIONAL_SEQUENCE_RNN over the real tokens.

An unrolled conversion runs every one of max_len time steps as separate small ops, padding
included. Here the graph is written directly with the flatbuffer schema:

    ids -> (ids outside [0, vocab) -> <UNKNOWN>) -> GATHER embedding (times the first layer's input
           kernel when that makes it no wider: model.export_weights) -> SLICE to the real length
        -> UNIDIRECTIONAL_SEQUENCE_RNN per layer (bidirectional: a second one over the REVERSE_V2
           of the real steps, reversed back and concatenated) -> last / mean / max over the real steps
        -> FULLY_CONNECTED -> SOFTMAX

The real length is the count of non-pad ids (the tokenizer post-pads), so SLICE yields a dynamic
tensor and the RNN kernel runs only as many steps as the text has tokens. Builtin ops only, one
subgraph, int32 [1, max_len] in: what LiteRT without Flex and MediaPipe accept.

The RNN kernel keeps its hidden state in a variable tensor that persists across invocations, and
MediaPipe's runtime refuses a graph in which an op writes a variable; _augmented_kernel explains
how each call still starts from h0 = 0.
"""
from __future__ import annotations

import numpy as np

from kerasrnn import pooling
from kerasrnn.export.tflite_graph import F32, I32, GraphBuilder, Op, Opt, T, options, token_prelude
from kerasrnn.export.tflite_head import classifier_head
from kerasrnn.model import export_weights


RESET_INPUT = 1.0e4  # pre-activation that drives tanh to exactly 1.0 in float32, whatever the old state


def _size(g: GraphBuilder, one_v: int, steps: int, last: int) -> int:
    """[1, steps, last] as a runtime int32 tensor, for SLICE."""
    size = g.tensor(f"size_{len(g.tensors)}", [3], I32)
    g.op(Op.CONCATENATION, [one_v, steps, g.tensor(f"dim_{len(g.tensors)}", [1], I32, np.array([last], np.int32))],
         [size], Opt.ConcatenationOptions, options(T.ConcatenationOptionsT, axis=0))
    return size


def _augmented_kernel(kernel: np.ndarray, recurrent: np.ndarray) -> np.ndarray:
    """Input weights [units, in + 2]: the layer's own, a reset row and a first-step correction row.

    The kernel's hidden state persists between invocations (a variable tensor that no op may
    write). So each call starts with one extra step whose reset channel (weight RESET_INPUT) drives
    every unit to tanh(1e4) = 1.0 exactly, whatever state the previous call left. On the first
    real step the correction channel subtracts what that all-ones state adds through the recurrent
    weights (1 @ R = column sums of R), which leaves x W + b: the h0 = 0 step that Keras computes.
    """
    units = kernel.shape[1]
    reset_row = np.full((1, units), RESET_INPUT, np.float32)
    correction_row = -recurrent.sum(axis=0, keepdims=True)
    return np.concatenate([kernel, reset_row, correction_row], axis=0).T


def _augment(g: GraphBuilder, x: int, flags: int, width: int, max_len: int, name: str) -> int:
    """[reset step; x with (0, first-step) channels]: shape [1, 1 + steps, width + 2]."""
    reset = np.zeros((1, 1, width + 2), np.float32)
    reset[0, 0, width] = 1.0
    with_flags = g.tensor(f"{name}/input_flags", [1, max_len, width + 2], signature=[1, -1, width + 2])
    g.op(Op.CONCATENATION, [x, flags], [with_flags], Opt.ConcatenationOptions, options(T.ConcatenationOptionsT, axis=2))
    out = g.tensor(f"{name}/input", [1, max_len + 1, width + 2], signature=[1, -1, width + 2])
    g.op(Op.CONCATENATION, [g.tensor(f"{name}/reset_step", reset.shape, F32, reset), with_flags], [out],
         Opt.ConcatenationOptions, options(T.ConcatenationOptionsT, axis=1))
    return out


def _rnn(g: GraphBuilder, x: int, flags: int, kernel, recurrent, bias, max_len: int, prefix: str) -> int:
    """One UNIDIRECTIONAL_SEQUENCE_RNN over x's real steps; its outputs [1, steps, units]."""
    units = kernel.shape[1]
    x_aug = _augment(g, x, flags, kernel.shape[0], max_len, prefix)
    state = g.tensor(f"{prefix}/state", [1, units], variable=True)
    y = g.tensor(f"{prefix}/outputs", [1, max_len + 1, units], signature=[1, -1, units])
    g.op(Op.UNIDIRECTIONAL_SEQUENCE_RNN,
         # Not int8 (both are small): a row's reset weight 1e4 would swamp its scale, and the
         # correction row cancels the recurrent weights exactly only if both stay as they are.
         [x_aug, g.weight(f"{prefix}/kernel", _augmented_kernel(kernel, recurrent), int8=False),
          g.weight(f"{prefix}/recurrent", recurrent.T, int8=False), g.weight(f"{prefix}/bias", bias), state], [y],
         Opt.SequenceRNNOptions, options(T.SequenceRNNOptionsT, timeMajor=False,
                                          fusedActivationFunction=T.ActivationFunctionType.TANH))
    out = g.tensor(f"{prefix}/outputs_real", [1, max_len, units], signature=[1, -1, units])
    g.op(Op.SLICE, [y, g.tensor(f"{prefix}/drop_reset_begin", [3], I32, np.array([0, 1, 0], np.int32)),
                    g.tensor(f"{prefix}/drop_reset_size", [3], I32, np.array([-1, -1, -1], np.int32))],
         [out], Opt.SliceOptions, T.SliceOptionsT())
    return out


def build_fused_tflite(model, config: dict, weights=np.float32, int8_tables: bool = False) -> bytes:
    """The trained Keras model as a fused-RNN TFLite flatbuffer (no metadata yet). weights: how
    the other weights are stored (float32, float16, or int8 for matrices, GraphBuilder.weight);
    int8_tables: the lookup tables stored as int8 (GraphBuilder.lookup)."""
    pool = pooling.choose(config["pooling"], _POOLS)  # an unknown pooling fails before any op is written
    g = GraphBuilder(weights, int8_tables)
    max_len, units, vocab = config["max_len"], config["units"], config["vocab_size"]
    table, layers = export_weights(model, config["num_layers"])  # first layer folded into the table

    tokens, ids, valid, length = token_prelude(g, max_len, vocab)
    one_v = g.constant("one", np.array([1], np.int32))
    steps = g.tensor("steps", [1], I32)  # at least 1 step runs
    g.op(Op.MAXIMUM, [length, one_v], [steps])

    bidirectional = config.get("bidirectional", False)
    embed_dim = table.shape[1]
    x_all = g.lookup("embedded", table, ids, [1, max_len, embed_dim])
    x = g.tensor("embedded_real", [1, max_len, embed_dim], signature=[1, -1, embed_dim])
    g.op(Op.SLICE, [x_all, g.tensor("slice_begin", [3], I32, np.zeros(3, np.int32)), _size(g, one_v, steps, -1)],
         [x], Opt.SliceOptions, T.SliceOptionsT())

    # Each layer's input gets two extra channels and one extra first step (see _augment).
    first_flag = np.zeros((1, max_len, 2), np.float32)
    first_flag[0, 0, 1] = 1.0
    flags_all = g.tensor("first_step_flags", first_flag.shape, F32, first_flag)
    flags = g.tensor("first_step_flags_real", [1, max_len, 2], signature=[1, -1, 2])
    g.op(Op.SLICE, [flags_all, g.tensor("flags_begin", [3], I32, np.zeros(3, np.int32)), _size(g, one_v, steps, 2)],
         [flags], Opt.SliceOptions, T.SliceOptionsT())
    axis1 = g.constant("reverse_axis", np.array([1], np.int32))
    for i, directions in enumerate(layers):
        outputs = []  # per direction: outputs over the real steps, in that direction's reading order
        for name, (kernel, recurrent, bias) in zip(["forward", "backward"], directions):
            prefix = f"rnn_{i}" if not bidirectional else f"rnn_{i}/{name}"
            x_in = x
            if name == "backward":  # x holds only the real steps, so reversing reads the text backwards
                x_in = g.tensor(f"{prefix}/reversed_input", [1, max_len, kernel.shape[0]],
                                signature=[1, -1, kernel.shape[0]])
                g.op(Op.REVERSE_V2, [x, axis1], [x_in], Opt.ReverseV2Options, T.ReverseV2OptionsT())
            outputs.append(_rnn(g, x_in, flags, kernel, recurrent, bias, max_len, prefix))
        if not bidirectional:
            x = outputs[0]
            continue
        forward, backward = outputs
        backward_in_order = g.tensor(f"rnn_{i}/backward/outputs_in_order", [1, max_len, units], signature=[1, -1, units])
        g.op(Op.REVERSE_V2, [backward, axis1], [backward_in_order], Opt.ReverseV2Options, T.ReverseV2OptionsT())
        x = g.tensor(f"rnn_{i}/outputs_concat", [1, max_len, 2 * units], signature=[1, -1, 2 * units])
        g.op(Op.CONCATENATION, [forward, backward_in_order], [x], Opt.ConcatenationOptions,
             options(T.ConcatenationOptionsT, axis=2))

    width = units * len(outputs)
    features = g.tensor("features", [1, width])
    pool(g, features, x, outputs, steps, one_v, width)
    probs = classifier_head(g, model, features, width, ids, valid, length)
    return g.finish([tokens], [probs], "kerasrnn fused SimpleRNN")


# Poolings of the RNN outputs over the real steps -> features [1, width]. x: the last layer's
# outputs [1, steps, width] in text order; outputs: per direction, in its own reading order.

def _pool_last(g: GraphBuilder, features: int, x: int, outputs: list[int], steps: int, one_v: int, width: int):
    # Each direction's final output is its last step in its own reading order.
    units = width // len(outputs)
    last = g.tensor("last_index", [1], I32)
    g.op(Op.SUB, [steps, one_v], [last], Opt.SubOptions, T.SubOptionsT())
    picked = []
    for d, seq in enumerate(outputs):
        p = g.tensor(f"last_step_{d}", [1, 1, units])
        g.op(Op.GATHER, [seq, last], [p], Opt.GatherOptions, options(T.GatherOptionsT, axis=1))
        picked.append(p)
    if len(picked) > 1:
        both = g.tensor("last_steps", [1, 1, width])
        g.op(Op.CONCATENATION, picked, [both], Opt.ConcatenationOptions, options(T.ConcatenationOptionsT, axis=2))
        picked = [both]
    g.op(Op.RESHAPE, [picked[0], g.tensor("shape_1h", [2], I32, np.array([1, width], np.int32))], [features],
         Opt.ReshapeOptions, options(T.ReshapeOptionsT, newShape=[1, width]))


# mean and max: over the real steps only (x holds no others), which is what Keras's masked pooling computes
def _pool_mean(g: GraphBuilder, features: int, x: int, outputs: list[int], steps: int, one_v: int, width: int):
    g.op(Op.MEAN, [x, one_v], [features], Opt.ReducerOptions, options(T.ReducerOptionsT, keepDims=False))


def _pool_max(g: GraphBuilder, features: int, x: int, outputs: list[int], steps: int, one_v: int, width: int):
    g.op(Op.REDUCE_MAX, [x, one_v], [features], Opt.ReducerOptions, options(T.ReducerOptionsT, keepDims=False))


_POOLS = {"last": _pool_last, "max": _pool_max, "mean": _pool_mean}
