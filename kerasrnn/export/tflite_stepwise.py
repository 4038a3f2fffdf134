"""A fast TFLite graph written step by step: max_len steps of FULLY_CONNECTED, ADD, TANH.

The builtin sequence-RNN kernel (tflite_fused.py) skips the padding, but on x86 its float
matrix-vector products are scalar loops: each step costs as much as a naive unrolled step. This
graph runs every step, padding included, yet each step is three small ops that the default XNNPACK
delegate runs with vector kernels in one partition:

    ids -> GATHER from per-direction tables (embedding @ input kernel + bias, taken once per word)
        -> SPLIT into max_len steps -> h_1 = tanh(p_1); h_t = tanh(h_{t-1} @ R + p_t)
        -> CONCATENATION of the steps -> (bidirectional: the backward direction reads
           REVERSE_SEQUENCE of the real steps and is reversed back) -> next layer's input product
        -> last / mean / max over the real steps -> FULLY_CONNECTED -> SOFTMAX

No state is kept between calls (h_0 = 0 is simply the first step without a product), so nothing
needs resetting. Outputs at padded steps are computed and then masked: the tokenizer post-pads, so
they come after every real step and never feed one. Builtin ops only, one subgraph, int32
[1, max_len] in: what LiteRT without Flex and MediaPipe accept.
"""
from __future__ import annotations

import numpy as np

from kerasrnn import pooling
from kerasrnn.export.tflite_graph import BOOL, F32, I32, GraphBuilder, Op, Opt, T, options, token_prelude
from kerasrnn.export.tflite_head import classifier_head
from kerasrnn.model import input_product_table, rnn_weights

PAD_PENALTY = -4.0  # added to padded steps before max pooling: tanh outputs lie in (-1, 1)


def _fc(g: GraphBuilder, x: int, kernel: np.ndarray, bias: np.ndarray | None, rows: int, name: str) -> int:
    """x [rows, in] @ kernel [in, out] (+ bias) -> [rows, out]."""
    out = g.tensor(name, [rows, kernel.shape[1]])
    b = g.weight(name + "/bias", bias) if bias is not None else -1
    g.op(Op.FULLY_CONNECTED, [x, g.weight(name + "/kernel", kernel.T), b], [out],
         Opt.FullyConnectedOptions, T.FullyConnectedOptionsT())
    return out


def _reverse_real_steps(g: GraphBuilder, x: int, length: int, max_len: int, width: int, name: str) -> int:
    """[max_len, width] -> the first `length` rows in reverse order, the padded rows left in place."""
    as_3d, reversed_3d, out = (g.tensor(name + "/3d", [max_len, 1, width]), g.tensor(name + "/reversed_3d", [max_len, 1, width]),
                               g.tensor(name, [max_len, width]))
    g.op(Op.RESHAPE, [x, g.constant(name + "/shape_3d", np.array([max_len, 1, width], np.int32))], [as_3d],
         Opt.ReshapeOptions, options(T.ReshapeOptionsT, newShape=[max_len, 1, width]))
    g.op(Op.REVERSE_SEQUENCE, [as_3d, length], [reversed_3d], Opt.ReverseSequenceOptions,
         options(T.ReverseSequenceOptionsT, seqDim=0, batchDim=1))
    g.op(Op.RESHAPE, [reversed_3d, g.constant(name + "/shape_2d", np.array([max_len, width], np.int32))], [out],
         Opt.ReshapeOptions, options(T.ReshapeOptionsT, newShape=[max_len, width]))
    return out


def _steps(g: GraphBuilder, inputs: int, recurrent: np.ndarray, max_len: int, name: str) -> int:
    """The recurrence over input products [max_len, units] (bias included) -> outputs [max_len, units]."""
    units = recurrent.shape[0]
    per_step = [g.tensor(f"{name}/input_{t}", [1, units]) for t in range(max_len)]
    g.op(Op.SPLIT, [g.constant(f"{name}/split_axis", np.array(0, np.int32)), inputs], per_step,
         Opt.SplitOptions, options(T.SplitOptionsT, numSplits=max_len))
    recurrent_w = g.weight(f"{name}/recurrent", recurrent.T)  # one tensor, shared by every step
    outputs, h = [], None
    for t, p in enumerate(per_step):
        if h is not None:  # h_0 = 0, so the first step is tanh(p_1)
            product, total = g.tensor(f"{name}/recurrent_{t}", [1, units]), g.tensor(f"{name}/sum_{t}", [1, units])
            g.op(Op.FULLY_CONNECTED, [h, recurrent_w, -1], [product], Opt.FullyConnectedOptions,
                 T.FullyConnectedOptionsT())
            g.op(Op.ADD, [product, p], [total], Opt.AddOptions, T.AddOptionsT())
            p = total
        h = g.tensor(f"{name}/h_{t}", [1, units])
        g.op(Op.TANH, [p], [h])
        outputs.append(h)
    stacked = g.tensor(f"{name}/outputs", [max_len, units])
    g.op(Op.CONCATENATION, outputs, [stacked], Opt.ConcatenationOptions, options(T.ConcatenationOptionsT, axis=0))
    return stacked


def build_stepwise_tflite(model, config: dict, weights=np.float32, int8_tables: bool = False) -> bytes:
    """The trained Keras model as a step-by-step TFLite flatbuffer (no metadata yet). weights: how
    the other weights are stored (float32, float16, or int8 for matrices, GraphBuilder.weight);
    int8_tables: the lookup tables stored as int8 (GraphBuilder.lookup)."""
    pool = pooling.choose(config["pooling"], _POOLS)  # an unknown pooling fails before any op is written
    g = GraphBuilder(weights, int8_tables)
    max_len, units, vocab = config["max_len"], config["units"], config["vocab_size"]
    layers = rnn_weights(model, config["num_layers"])
    tokens, ids, valid, length = token_prelude(g, max_len, vocab)
    flat_ids = g.tensor("ids_flat", [max_len], I32)
    g.op(Op.RESHAPE, [ids, g.constant("shape_steps", np.array([max_len], np.int32))], [flat_ids],
         Opt.ReshapeOptions, options(T.ReshapeOptionsT, newShape=[max_len]))
    embedding = model.get_layer("embedding").get_weights()[0]

    x = None  # the previous layer's outputs [max_len, width], in text order
    for i, directions in enumerate(layers):
        outputs = []  # per direction, in its own reading order
        for name, (kernel, recurrent, bias) in zip(["forward", "backward"], directions):
            prefix = f"rnn_{i}" if len(directions) == 1 else f"rnn_{i}/{name}"
            if i == 0:  # the input product of every word, taken once at export
                products = g.lookup(f"{prefix}/input_products", input_product_table(embedding, kernel, bias),
                                    flat_ids, [max_len, units])
            else:  # one matrix product over all steps
                products = _fc(g, x, kernel, bias, max_len, f"{prefix}/input_products")
            if name == "backward":
                products = _reverse_real_steps(g, products, length, max_len, units, f"{prefix}/reversed_input")
            outputs.append(_steps(g, products, recurrent, max_len, prefix))
        in_order = list(outputs)
        if len(outputs) == 2:
            in_order[1] = _reverse_real_steps(g, outputs[1], length, max_len, units, f"rnn_{i}/backward/outputs_in_order")
            x = g.tensor(f"rnn_{i}/outputs_concat", [max_len, 2 * units])
            g.op(Op.CONCATENATION, in_order, [x], Opt.ConcatenationOptions, options(T.ConcatenationOptionsT, axis=1))
        else:
            x = outputs[0]

    width = units * len(outputs)
    features = g.tensor("features", [1, width])
    features = pool(g, features, x, outputs, valid, length, max_len, width)
    probs = classifier_head(g, model, features, width, ids, valid, length)
    return g.finish([tokens], [probs], "kerasrnn stepwise SimpleRNN")


# Poolings of the outputs over the real steps -> features [1, width]: x, the last layer's outputs
# [max_len, width] in text order (padded steps computed but not real); outputs: per direction, in
# its own reading order; valid: bool [1, max_len]; length: int32 [1]. Each returns the features.

def _pool_last(g: GraphBuilder, features: int, x: int, outputs: list[int], valid: int, length: int,
               max_len: int, width: int) -> int:
    # Each direction's final output is the last real step in its own reading order.
    units = width // len(outputs)
    last_raw, last = g.tensor("last_index_raw", [1], I32), g.tensor("last_index", [1], I32)
    g.op(Op.SUB, [length, g.constant("one", np.array([1], np.int32))], [last_raw], Opt.SubOptions, T.SubOptionsT())
    g.op(Op.MAXIMUM, [last_raw, g.constant("zero_index", np.array([0], np.int32))], [last])
    picked = []
    for d, seq in enumerate(outputs):
        p = g.tensor(f"last_step_{d}", [1, units])
        g.op(Op.GATHER, [seq, last], [p], Opt.GatherOptions, options(T.GatherOptionsT, axis=0))
        picked.append(p)
    if len(picked) == 1:
        return picked[0]
    g.op(Op.CONCATENATION, picked, [features], Opt.ConcatenationOptions, options(T.ConcatenationOptionsT, axis=1))
    return features


def _valid_column(g: GraphBuilder, valid: int, max_len: int) -> tuple[int, int]:
    """valid as a bool [max_len, 1] column, and the axis-0 constant the reductions use."""
    valid_column = g.tensor("valid_column", [max_len, 1], BOOL)
    g.op(Op.RESHAPE, [valid, g.constant("shape_column", np.array([max_len, 1], np.int32))], [valid_column],
         Opt.ReshapeOptions, options(T.ReshapeOptionsT, newShape=[max_len, 1]))
    return valid_column, g.constant("axis_0", np.array([0], np.int32))


# mean and max: over the real steps only, which is what Keras's masked pooling computes
def _pool_max(g: GraphBuilder, features: int, x: int, outputs: list[int], valid: int, length: int,
              max_len: int, width: int) -> int:
    valid_column, axis0 = _valid_column(g, valid, max_len)
    penalty, lifted = g.tensor("pad_penalty", [max_len, 1]), g.tensor("outputs_pad_lowered", [max_len, width])
    g.op(Op.SELECT_V2, [valid_column, g.constant("no_penalty", np.array(0.0, np.float32)),
                        g.constant("penalty", np.array(PAD_PENALTY, np.float32))], [penalty])
    g.op(Op.ADD, [x, penalty], [lifted], Opt.AddOptions, T.AddOptionsT())
    g.op(Op.REDUCE_MAX, [lifted, axis0], [features], Opt.ReducerOptions, options(T.ReducerOptionsT, keepDims=True))
    return features


def _pool_mean(g: GraphBuilder, features: int, x: int, outputs: list[int], valid: int, length: int,
               max_len: int, width: int) -> int:
    valid_column, axis0 = _valid_column(g, valid, max_len)
    weight, masked, total = (g.tensor("valid_weight", [max_len, 1]), g.tensor("outputs_masked", [max_len, width]),
                             g.tensor("outputs_sum", [1, width]))
    count, count_f = g.tensor("count", [1], I32), g.tensor("count_f", [1])
    g.op(Op.CAST, [valid_column], [weight], Opt.CastOptions, options(T.CastOptionsT, inDataType=BOOL, outDataType=F32))
    g.op(Op.MUL, [x, weight], [masked], Opt.MulOptions, T.MulOptionsT())
    g.op(Op.SUM, [masked, axis0], [total], Opt.ReducerOptions, options(T.ReducerOptionsT, keepDims=True))
    g.op(Op.MAXIMUM, [length, g.constant("one", np.array([1], np.int32))], [count])
    g.op(Op.CAST, [count], [count_f], Opt.CastOptions, options(T.CastOptionsT, inDataType=I32, outDataType=F32))
    g.op(Op.DIV, [total, count_f], [features], Opt.DivOptions, T.DivOptionsT())
    return features


_POOLS = {"last": _pool_last, "max": _pool_max, "mean": _pool_mean}
