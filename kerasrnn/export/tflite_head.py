"""The head both hand-written TFLite graphs end in: Dense, the bag-of-words and linear paths, softmax.

It sits above tflite_graph (the builder) and tflite_linear (the linear path's ops), so that neither
of those imports the other back.
"""
from __future__ import annotations

import numpy as np

from kerasrnn.export.tflite_graph import BOOL, F32, I32, GraphBuilder, Op, Opt, T, options
from kerasrnn.export.tflite_linear import linear_scores
from kerasrnn.model import head_weights, linear_weights


def classifier_head(g: GraphBuilder, model, features: int, width: int, ids: int, valid: int, length: int) -> int:
    """features [1, width] -> probabilities [1, classes]: Dense (+ the bag-of-words path's mean
    of per-word class scores, model.head_weights) (+ the linear TF-IDF path's scores,
    model.linear_weights) + softmax.

    A row without tokens (only possible for hand-made ids) pools to zeros first, as Keras does
    for an all-masked sequence.
    """
    has_tokens, has_tokens_1, has_tokens_f, gated = (
        g.tensor("has_tokens", [1], BOOL), g.tensor("has_tokens_1", [1]), g.tensor("has_tokens_f", [1, 1]),
        g.tensor("features_gated", [1, width]))
    g.op(Op.GREATER, [length, g.constant("zero_length", np.array(0, np.int32))], [has_tokens])
    g.op(Op.CAST, [has_tokens], [has_tokens_1], Opt.CastOptions, options(T.CastOptionsT, inDataType=BOOL, outDataType=F32))
    g.op(Op.RESHAPE, [has_tokens_1, g.constant("shape_11", np.array([1, 1], np.int32))], [has_tokens_f],
         Opt.ReshapeOptions, options(T.ReshapeOptionsT, newShape=[1, 1]))
    g.op(Op.MUL, [features, has_tokens_f], [gated], Opt.MulOptions, T.MulOptionsT())

    dense_w, dense_b, bag_table = head_weights(model)
    linear = linear_weights(model)
    if linear is not None:  # the linear path's bias joins the Dense layer's: one ADD fewer
        dense_b = (dense_b.astype(np.float64) + linear["bias"]).astype(np.float32)
    classes = dense_w.shape[1]
    logits, probs = g.tensor("logits_dense", [1, classes]), g.tensor("probabilities", [1, classes])
    g.op(Op.FULLY_CONNECTED, [gated, g.weight("dense/kernel", dense_w.T), g.weight("dense/bias", dense_b)],
         [logits], Opt.FullyConnectedOptions, T.FullyConnectedOptionsT())
    for name, extra in (("logits_bag", None if bag_table is None else lambda: _bag_mean(g, bag_table, ids, valid, length)),
                        ("logits_linear", None if linear is None else lambda: linear_scores(g, linear, ids))):
        if extra is not None:
            total = g.tensor(name, [1, classes])
            g.op(Op.ADD, [logits, extra()], [total], Opt.AddOptions, T.AddOptionsT())
            logits = total
    g.op(Op.SOFTMAX, [logits], [probs], Opt.SoftmaxOptions, options(T.SoftmaxOptionsT, beta=1.0))
    return probs


def _bag_mean(g: GraphBuilder, table: np.ndarray, ids: int, valid: int, length: int) -> int:
    """[1, classes]: the mean over the real tokens of each token's row of the bag path's folded
    [vocab, classes] table; 0 for a row without tokens (its count is taken as 1)."""
    max_len, classes = g.tensors[ids].shape[1], table.shape[1]
    valid_f, valid_3, real, total = (
        g.tensor("bag_valid", [1, max_len]),
        g.tensor("bag_valid_3", [1, max_len, 1]), g.tensor("bag_real", [1, max_len, classes]),
        g.tensor("bag_sum", [1, classes]))
    scores = g.lookup("bag_scores", table, ids, [1, max_len, classes])
    g.op(Op.CAST, [valid], [valid_f], Opt.CastOptions, options(T.CastOptionsT, inDataType=BOOL, outDataType=F32))
    g.op(Op.RESHAPE, [valid_f, g.constant("bag_shape_3", np.array([1, max_len, 1], np.int32))], [valid_3],
         Opt.ReshapeOptions, options(T.ReshapeOptionsT, newShape=[1, max_len, 1]))
    g.op(Op.MUL, [scores, valid_3], [real], Opt.MulOptions, T.MulOptionsT())
    g.op(Op.SUM, [real, g.constant("bag_axis_1", np.array([1], np.int32))], [total], Opt.ReducerOptions,
         options(T.ReducerOptionsT, keepDims=False))
    count, count_1, count_2, mean = (g.tensor("bag_count", [1]), g.tensor("bag_count_1", [1]),
                                     g.tensor("bag_count_2", [1, 1]), g.tensor("bag_mean", [1, classes]))
    g.op(Op.CAST, [length], [count], Opt.CastOptions, options(T.CastOptionsT, inDataType=I32, outDataType=F32))
    g.op(Op.MAXIMUM, [count, g.constant("bag_one", np.array([1.0], np.float32))], [count_1])
    g.op(Op.RESHAPE, [count_1, g.constant("bag_shape_11", np.array([1, 1], np.int32))], [count_2],
         Opt.ReshapeOptions, options(T.ReshapeOptionsT, newShape=[1, 1]))
    g.op(Op.DIV, [total, count_2], [mean], Opt.DivOptions, T.DivOptionsT())
    return mean
