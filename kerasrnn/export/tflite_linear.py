"""The linear TF-IDF path (kerasrnn.linear.TfidfLinear) as TFLite ops, for both hand-written graphs.

At batch 1 each op costs the interpreter a fixed overhead that dominates these small tensors, so
the path is written in as few ops as its arithmetic allows: 17 in the float32 file (28 before
HASHTABLE_LOOKUP found the word pairs, 37 before that), 21 in the float16 file and 24 in the 8-bit
ones (idf^2 apart, the kernel rows dequantized), 11 more above 46,340 words (a cuckoo lookup).
The batch is 1, so the terms are one row, 1-D: no op is spent on a batch axis.
"""
from __future__ import annotations

import numpy as np

from kerasrnn.export.tflite_graph import BOOL, I32, GraphBuilder, Op, Opt, T, options


def linear_scores(g: GraphBuilder, w: dict, ids: int) -> int:
    """[classes]: the linear path's scores without its bias (the head adds it to the Dense layer's):

    - terms: the ids, then each adjacent pair's term row (0, weightless, for a pair outside the
      bigram vocabulary; _pair_rows);
    - each term's count c in its text: an equality matrix of the terms, summed;
    - the sublinear factors f(c) = (1 + ln c) / c and g(c) = (1 + ln c)^2 / c looked up from tables
      of c, not computed, and idf folded into the kernel rows (kerasrnn.linear.folded_tables): the
      score is sum f(c_i) x (idf x kernel) row of term i, the squared norm sum g(c_i) x idf_i^2;
    - scores = that sum x rsqrt(norm^2), without a MAXIMUM guard: <PAD> and <START> carry an idf^2
      of 1e-24 (kerasrnn.linear.guarded_idf_sq says why that is exact).
    In the float32 file one gather of [idf x kernel row | idf^2] and one of [f(c) ... | g(c)] do it
    all, as in the ONNX graph; with 8- or 16-bit tables idf^2 is looked up apart, in float32 (float16
    rounds 1e-24 to 0, a NaN score for a text without words; a row's int8 scale would be idf^2's)."""
    from kerasrnn.linear import folded_tables, guarded_idf_sq

    max_len, classes = g.tensors[ids].shape[1], w["kernel"].shape[1]
    n = 2 * max_len - 1 if w["keys"] is not None else max_len  # the words, then their pairs
    tables = folded_tables(w, n)
    words = g.tensor("linear_words", [max_len], I32)
    _reshape(g, ids, [max_len], words)
    terms = words
    if w["keys"] is not None:
        terms = g.tensor("terms", [n], I32)
        g.op(Op.CONCATENATION, [words, _pair_rows(g, w, words)], [terms], Opt.ConcatenationOptions,
             options(T.ConcatenationOptionsT, axis=0))
    idf_sq = guarded_idf_sq(w["idf"])
    merged = g.weight_dtype == np.float32 and not g.int8_tables
    col, same, same_i, count, total, scores, norm_sq, rnorm = (
        g.tensor("term_col", [n, 1], I32), g.tensor("term_same", [n, n], BOOL), g.tensor("term_same_i", [n, n], I32),
        g.tensor("term_count", [n] if merged else [n, 1], I32), g.tensor("term_sum", [classes]),
        g.tensor("term_scores", [classes]), g.tensor("term_norm_sq", [1]), g.tensor("term_rnorm", [1]))
    _reshape(g, terms, [n, 1], col)
    g.op(Op.EQUAL, [col, terms], [same])  # [n, 1] against [n]: [n, n]
    g.op(Op.CAST, [same], [same_i], Opt.CastOptions, options(T.CastOptionsT, inDataType=BOOL, outDataType=I32))
    _reduce(g, Op.SUM, same_i, 1, count, not merged)
    if merged:
        rows = tables["rows"].copy()
        rows[:, classes] = idf_sq
        factors, both, sums = (g.tensor("term_count_factors", [n, classes + 1]),
                               g.tensor("term_products", [n, classes + 1]), g.tensor("term_sums", [classes + 1]))
        _gather(g, g.constant("term_count_table", tables["counts"]), count, factors)
        _mul(g, g.lookup("term_rows", rows, terms, [n, classes + 1]), factors, both)
        _reduce(g, Op.SUM, both, 0, sums, False)
        g.op(Op.SPLIT_V, [sums, g.constant("term_split", np.array([classes, 1], np.int32)),
                          g.constant("term_split_axis", np.array(0, np.int32))], [total, norm_sq],
             Opt.SplitVOptions, options(T.SplitVOptionsT, numSplits=2))
    else:
        # counts as [n, 1] (summed with keepDims): the factors looked up by them, and idf^2 looked
        # up by the [n, 1] terms, broadcast against the [n, classes] kernel rows as they are
        tf, tf_sq, term_idf_sq, sq, weighted = (
            g.tensor("term_tf", [n, 1]), g.tensor("term_tf_sq", [n, 1]), g.tensor("term_idf_sq", [n, 1]),
            g.tensor("term_sq", [n, 1]), g.tensor("term_weighted", [n, classes]))
        _gather(g, g.constant("term_tf_table", tables["counts"][:, 0].copy()), count, tf)
        _gather(g, g.constant("term_tf_sq_table", tables["counts"][:, classes].copy()), count, tf_sq)
        _gather(g, g.constant("linear/idf_sq", idf_sq), col, term_idf_sq)  # float32 in every variant
        _mul(g, term_idf_sq, tf_sq, sq)
        _reduce(g, Op.SUM, sq, 0, norm_sq, False)
        _mul(g, g.lookup("term_rows", tables["rows"][:, :classes], terms, [n, classes]), tf, weighted)
        _reduce(g, Op.SUM, weighted, 0, total, False)
    g.op(Op.RSQRT, [norm_sq], [rnorm])
    _mul(g, total, rnorm, scores)
    return scores


def _pair_rows(g: GraphBuilder, w: dict, words: int) -> int:
    """[pairs] int32: each adjacent pair's term row, 0 for a pair outside the bigram vocabulary.

    Each pair's key first x vocab + second is looked up with HASHTABLE_LOOKUP (a builtin: a binary
    search over the sorted keys of the model's pairs; a key it misses reads 0; its comparison
    subtracts two keys in int32, safe as every key and the -1 sentinel lie in [-1, vocab^2)). A
    vocabulary too large for an int32 key (over 46,340 words) takes the export's cuckoo table
    instead (kerasrnn.linear.export_pair_table), comparing the two words one by one."""
    from kerasrnn.linear import export_pair_table

    vocab, pairs = int(w["vocab_size"]), g.tensors[words].shape[0] - 1
    first, second = np.arange(pairs, dtype=np.int32), np.arange(1, pairs + 1, dtype=np.int32)
    found = g.tensor("pair_rows", [pairs], I32)
    pair_words = g.tensor("pair_words", [2, pairs], I32)
    _gather(g, words, g.constant("pair_index", np.stack([first, second])), pair_words)  # (first, second)
    if vocab * vocab < 2 ** 31:
        keys, rows = np.asarray(w["keys"], np.int64), np.asarray(w["rows"], np.int32)
        stored = keys[0] >= 0
        # -1, which no pair's key is, reading row 0: the table is never empty (the kernel divides by its length)
        key_of = np.r_[-1, keys[0, stored] * vocab + keys[1, stored]]
        order = np.argsort(key_of)
        scaled, key = g.tensor("pair_key_parts", [2, pairs], I32), g.tensor("pair_key", [pairs], I32)
        _mul(g, pair_words, g.constant("pair_key_scale", np.array([[vocab], [1]], np.int32)), scaled)
        _reduce(g, Op.SUM, scaled, 0, key, False)
        g.op(Op.HASHTABLE_LOOKUP, [key, g.constant("bigram_keys_sorted", key_of[order].astype(np.int32)),
                                   g.constant("bigram_rows_sorted", np.r_[0, rows[stored]][order].astype(np.int32))],
             [found, g.tensor("pair_hits", [pairs], T.TensorType.UINT8)])
        return found
    table = export_pair_table(w)
    t = {name: g.tensor("pair_" + name, [2, pairs], dtype) for name, dtype in (
        ("swapped", I32), ("a_mul", I32), ("sum", I32), ("slot", I32), ("match", BOOL), ("row", I32),
        ("candidate", I32))}
    _gather(g, words, g.constant("pair_index_swapped", np.stack([second, first])), t["swapped"])
    _mul(g, pair_words, g.constant("pair_multipliers", np.array(table["multipliers"], np.int32)[:, None]), t["a_mul"])
    g.op(Op.ADD, [t["a_mul"], t["swapped"]], [t["sum"]], Opt.AddOptions, T.AddOptionsT())
    g.op(Op.FLOOR_MOD, [t["sum"], g.constant("pair_slots", np.array(table["slots"], np.int32))], [t["slot"]],
         Opt.FloorModOptions, T.FloorModOptionsT())
    keys = table["keys"]
    matches = []
    for name, positions, part in (("first", first, keys // vocab), ("second", second, keys % vocab)):
        word, stored, match = (g.tensor("pair_word_" + name, [pairs], I32), g.tensor("pair_stored_" + name, [2, pairs], I32),
                               g.tensor("pair_match_" + name, [2, pairs], BOOL))
        _gather(g, words, g.constant(f"pair_index_{name}", positions), word)
        _gather(g, g.constant(f"bigram_keys_{name}", np.where(keys < 0, -1, part).astype(np.int32)), t["slot"], stored)
        g.op(Op.EQUAL, [stored, word], [match])  # [2 (probes), pairs] against [pairs]
        matches.append(match)
    g.op(Op.LOGICAL_AND, matches, [t["match"]])
    _gather(g, g.constant("bigram_rows", table["rows"]), t["slot"], t["row"])
    g.op(Op.SELECT_V2, [t["match"], t["row"], g.constant("pair_none", np.array(0, np.int32))], [t["candidate"]])
    _reduce(g, Op.REDUCE_MAX, t["candidate"], 0, found, False)
    return found


def _reshape(g: GraphBuilder, x: int, shape: list[int], out: int) -> None:
    g.op(Op.RESHAPE, [x, g.constant(g.tensors[out].name.decode() + "_shape", np.array(shape, np.int32))], [out],
         Opt.ReshapeOptions, options(T.ReshapeOptionsT, newShape=shape))


def _gather(g: GraphBuilder, table: int, index: int, out: int, axis: int = 0) -> None:
    g.op(Op.GATHER, [table, index], [out], Opt.GatherOptions, options(T.GatherOptionsT, axis=axis))


def _mul(g: GraphBuilder, a: int, b: int, out: int) -> None:
    g.op(Op.MUL, [a, b], [out], Opt.MulOptions, T.MulOptionsT())


def _reduce(g: GraphBuilder, kind: int, x: int, axis: int, out: int, keep: bool) -> None:
    g.op(kind, [x, g.constant(g.tensors[out].name.decode() + "_axis", np.array([axis], np.int32))], [out],
         Opt.ReducerOptions, options(T.ReducerOptionsT, keepDims=keep))
