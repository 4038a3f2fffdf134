"""ONNX export: the native ONNX `RNN` operator by default, tf2onnx's Loop graph on request.

Native: the graph is written from the Keras weights with onnx.helper: the ids cut at the batch's
last real token -> Gather (embedding, folded with the first layer's input kernel when no wider:
model.export_weights) -> the recurrence -> pooling -> MatMul/Add (+ the linear TF-IDF path) ->
Softmax. The recurrence: the RNN operator per layer with `sequence_lens` = number of non-pad tokens
(one kernel for the whole recurrence: the fast path at batch 1); for one forward layer, an If on
the batch size runs batches of SCAN_FROM_BATCH or more through a Scan of MatMul, Add, Tanh per step
instead, which onnxruntime runs 3-4x faster than its RNN operator on a batch. Both match Keras
exactly when padding is at the end, which our tokenizer guarantees (<START> first, <PAD>=0 after
the text); ids sent by hand must follow that layout too. Ids outside [0, vocab) are read as
<UNKNOWN> (documented mapping; the other formats raise an error for them).

Loop: tf2onnx converts the Keras graph as traced by TensorFlow (a Loop op over time steps).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kerasrnn import pooling as pooling_mod
from kerasrnn.export.onnx_recurrence import (PAST_END, POOLS, SCAN_FROM_BATCH, SCAN_POOLINGS, is_identity,
                                             rnn_operator_layers, scan_layer)
from kerasrnn.model import export_weights, head_weights, linear_weights
from kerasrnn.tokenizer import PAD_ID, UNKNOWN_ID

OPSET = 17
# The lowest IR version opset 17 needs. onnx writes its newest by default (14 with onnx 1.23), which
# onnxruntime 1.20 (max IR 10) and onnxruntime-web 1.30 (max IR 13) refuse to load.
IR_VERSION = 8
# The linear path's pairs are terms by their hash slot when the kernel rows that takes (one per
# slot, not per pair) add at most this much to the file; else by their row id, one Gather more.
SLOT_ROWS_MAX_BYTES = 1 << 20
INPUT, OUTPUT = "tokens", "probabilities"


def build_native(model, config: dict):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    max_len, units, pooling = config["max_len"], config["units"], config["pooling"]
    pool = pooling_mod.choose(pooling, POOLS)  # an unknown pooling fails before any node is written
    emb, layers = export_weights(model, config["num_layers"])  # first layer folded into the table
    dense_w, dense_b, bag_table = head_weights(model)
    linear = linear_weights(model)
    if linear is not None:  # the linear path's bias joins the Dense layer's: one Add fewer
        dense_b = (dense_b.astype(np.float64) + linear["bias"]).astype(np.float32)
    bidirectional = config.get("bidirectional", False)
    with_scan = len(layers) == 1 and not bidirectional and pooling in SCAN_POOLINGS
    kernel, recurrent, bias = layers[0][0]
    # A folded table (kernel the identity) feeding the max-pooling Scan takes the bias into its rows,
    # as Keras adds it (x K + b, then h R), and <PAD>'s row becomes PAST_END: the Scan then needs no
    # mask (onnx_recurrence.scan_layer); the RNN operator ignores steps past sequence_lens.
    padding_saturates = with_scan and pooling == "max" and is_identity(kernel)
    if padding_saturates:
        emb = (emb.astype(np.float64) + bias).astype(np.float32)
        emb[PAD_ID] = PAST_END
        layers[0][0] = (kernel, recurrent, np.zeros_like(bias))
    inits = [numpy_helper.from_array(emb, "embedding"),
             numpy_helper.from_array(dense_w, "dense_kernel"), numpy_helper.from_array(dense_b, "dense_bias"),
             numpy_helper.from_array(np.array([0], np.int64), "axis0"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(np.array(0, np.int32), "zero_i32"),
             numpy_helper.from_array(np.array(emb.shape[0], np.int32), "vocab_i32"),
             numpy_helper.from_array(np.array(UNKNOWN_ID, np.int32), "unknown_i32"),
             numpy_helper.from_array(np.arange(1, max_len + 1, dtype=np.int32), "positions"),
             numpy_helper.from_array(np.array([1], np.int32), "one_i32_1")]
    nodes = [
        # Ids outside [0, vocab) read as <UNKNOWN>: ONNX Gather would wrap negative ids silently.
        helper.make_node("GreaterOrEqual", [INPUT, "zero_i32"], ["id_ge0"]),
        helper.make_node("Less", [INPUT, "vocab_i32"], ["id_ltv"]),
        helper.make_node("And", ["id_ge0", "id_ltv"], ["id_ok"]),
        helper.make_node("Where", ["id_ok", INPUT, "unknown_i32"], ["ids_full"]),
        # sequence_lens: tokens are post-padded with 0, so the valid length is the non-zero count.
        helper.make_node("Greater", ["ids_full", "zero_i32"], ["valid_full"]),
        helper.make_node("Cast", ["valid_full"], ["valid_full_i32"], to=TensorProto.INT32),
        helper.make_node("ReduceSum", ["valid_full_i32", "axis1"], ["seq_lens"], keepdims=0),
        # Every step past the batch's last real token is cut off: the graph runs on [B, T'] with
        # T' that token's position + 1 (at least 1), not on max_len. Short texts, or a batch of
        # them, skip the padding in the recurrence, the pooling and the linear path alike.
        helper.make_node("Mul", ["valid_full_i32", "positions"], ["real_ends"]),      # position + 1 or 0
        helper.make_node("ReduceMax", ["real_ends"], ["steps_raw"], keepdims=0),        # over all: a scalar
        helper.make_node("Max", ["steps_raw", "one_i32_1"], ["steps"]),                 # [1]
        helper.make_node("Cast", ["steps"], ["steps_i64"], to=TensorProto.INT64),
        helper.make_node("Slice", ["ids_full", "axis0", "steps_i64", "axis1"], ["ids"]),      # [B, T']
        helper.make_node("Slice", ["valid_full", "axis0", "steps_i64", "axis1"], ["valid"]),  # [B, T']
        helper.make_node("Gather", ["embedding", "ids"], ["embedded"]),               # [B, T, E]
    ]
    rnn_nodes, rnn_inits = rnn_operator_layers(layers, units, bidirectional)
    inits += rnn_inits
    pooled_nodes, pooled_inits = pool(f"x_{len(layers)}", f"Yh_{len(layers) - 1}", bidirectional)
    inits += pooled_inits
    if with_scan:
        # onnxruntime's RNN operator is the fast path at batch 1 and slow on a batch (its cost per
        # row grows: 1.6 ms for 64 SMS-length texts where a Scan of MatMul, Add, Tanh takes 0.5);
        # an If on the batch size picks one (batches of 8 or more: the Scan), one file.
        scan_nodes, scan_inits = scan_layer(layers[0][0], units, pooling, padding_saturates)
        inits += scan_inits
        inits.append(numpy_helper.from_array(np.array([SCAN_FROM_BATCH - 1], np.int64), "scan_batch_floor"))
        rnn_graph = helper.make_graph(rnn_nodes + pooled_nodes, "rnn_operator", [],
                                      [helper.make_tensor_value_info("features", TensorProto.FLOAT, None)])
        scan_graph = helper.make_graph(scan_nodes, "scan", [],
                                       [helper.make_tensor_value_info("features_scan", TensorProto.FLOAT, None)])
        features = "features_chosen"
        nodes += [helper.make_node("Shape", ["ids"], ["batch_size"], end=1),
                  helper.make_node("Greater", ["batch_size", "scan_batch_floor"], ["large_batch"]),
                  helper.make_node("If", ["large_batch"], [features], then_branch=scan_graph, else_branch=rnn_graph)]
    else:
        features = "features"
        nodes += rnn_nodes + pooled_nodes
    nodes += [helper.make_node("MatMul", [features, "dense_kernel"], ["logits_mm"]),
              helper.make_node("Add", ["logits_mm", "dense_bias"], ["logits_dense"])]
    logits = "logits_dense"
    if bag_table is not None:
        bag_nodes, bag_inits = _bag_logits(bag_table, logits, "logits_bag")
        nodes += bag_nodes
        inits += bag_inits
        logits = "logits_bag"
    if linear is not None:
        linear_nodes, linear_inits = _linear_scores(linear, max_len, logits, "logits_linear")
        nodes += linear_nodes
        inits += linear_inits
        logits = "logits_linear"
    nodes.append(helper.make_node("Identity", [logits], ["logits"]))
    nodes.append(helper.make_node("Softmax", ["logits"], [OUTPUT], axis=-1))
    used = _inputs_used(nodes)
    inits = [i for i in inits if i.name in used]  # onnxruntime warns at load about unused ones
    graph = helper.make_graph(
        nodes, "kerasrnn",
        [helper.make_tensor_value_info(INPUT, TensorProto.INT32, ["batch", max_len])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", config["num_classes"]])],
        initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                             producer_name="kerasrnn")



def _inputs_used(nodes) -> set[str]:
    """Every name the nodes read, those of their subgraphs (If branches, Scan bodies) included."""
    from onnx import AttributeProto

    used = set()
    for node in nodes:
        used.update(node.input)
        for attribute in node.attribute:
            if attribute.type == AttributeProto.GRAPH:
                used |= _inputs_used(attribute.g.node)
    return used


def _bag_logits(table: np.ndarray, logits_in: str, logits_out: str):
    """The bag-of-words path folded into per-word class scores (model.head_weights): their mean
    over the real tokens ("valid", counted in "seq_lens"), added to the recurrent path's logits."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(table, "bag_table"), numpy_helper.from_array(np.array([2], np.int64), "axis2"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one_f32")]
    nodes = [helper.make_node("Gather", ["bag_table", "ids"], ["bag_scores"]),                  # [B, T, C]
             helper.make_node("Cast", ["valid"], ["valid_f"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["valid_f", "axis2"], ["valid_f3"]),                 # [B, T, 1]
             helper.make_node("Mul", ["bag_scores", "valid_f3"], ["bag_real"]),
             helper.make_node("ReduceSum", ["bag_real", "axis1"], ["bag_sum"], keepdims=0),    # [B, C]
             helper.make_node("Cast", ["seq_lens"], ["seq_lens_f"], to=TensorProto.FLOAT),
             helper.make_node("Max", ["seq_lens_f", "one_f32"], ["bag_count"]),  # a row without tokens adds 0
             helper.make_node("Unsqueeze", ["bag_count", "axis1"], ["bag_count_2"]),            # [B, 1]
             helper.make_node("Div", ["bag_sum", "bag_count_2"], ["bag_mean"]),
             helper.make_node("Add", [logits_in, "bag_mean"], [logits_out])]
    return nodes, inits

def _linear_scores(w: dict, max_len: int, logits_in: str, logits_out: str):
    """The linear TF-IDF path (kerasrnn.linear.TfidfLinear, the same sums) from "ids", in few nodes
    (at batch 1 each node costs onnxruntime about a microsecond, far more than these small tensors):

    - word pairs, by the export's own table (kerasrnn.linear.export_pair_table): the pairs of the
      cut length T' gathered from the ids at once ([B, 2, P]: first, second), one MatMul giving both
      probe sums and the pair's key first x vocab + second, one Mod by -slots giving each probe's
      slot s as s - slots (0 for slot 0, which is empty); the stored key compared; the matching
      probe (negative) is the pair's term, 0 (<PAD>, weightless) for a pair outside the table.
      That needs a kernel row per slot, not per pair: where those rows would add more than
      SLOT_ROWS_MAX_BYTES to the file (many classes), the matching slot's row id is looked up
      instead, one Gather more;
    - each term's count c in its text: an equality matrix of the terms, summed;
    - one gather of [idf x kernel row | idf^2] per term (words at their id, pairs at their row, or
      at their slot in the table's tail, read by the negative term) and one of [f(c) ... | g(c)] per count, with
      f(c) = (1 + ln c) / c and g(c) = (1 + ln c)^2 / c (kerasrnn.linear.folded_tables): their
      product summed over the positions is [sum of weighted kernel rows | squared norm];
    - scores = sums / norm, without a Max guard: <PAD> and <START> carry an idf^2 of 1e-24
      (kerasrnn.linear.guarded_idf_sq says why that is exact); the bias is in the Dense layer's
      (build_native)."""
    from onnx import TensorProto, helper, numpy_helper

    from kerasrnn.linear import export_pair_table, folded_tables, guarded_idf_sq

    const = lambda name, value, dtype=np.int64: numpy_helper.from_array(np.array(value, dtype), name)  # noqa: E731
    classes, vocab = w["kernel"].shape[1], int(w["vocab_size"])
    n = max_len if w["keys"] is None else 2 * max_len - 1
    tables = folded_tables(w, n)
    rows = tables["rows"].copy()
    rows[:, classes] = guarded_idf_sq(w["idf"])
    nodes, inits, terms = [], [], "ids"
    if w["keys"] is not None:
        pairs = export_pair_table(w)
        slots, (m1, m2) = pairs["slots"], pairs["multipliers"]
        key_type = np.int32 if vocab * vocab < 2 ** 31 else np.int64  # int32: no Cast of the words
        slot_terms = (vocab + slots - len(rows)) * rows.shape[1] * 4 <= SLOT_ROWS_MAX_BYTES
        if slot_terms:
            rows = np.concatenate([rows[:vocab], rows[pairs["rows"]]])  # [vocab + slots, classes + 1]
        # Column j >= 1 of pair_index holds the positions of pair j - 1 (first, second); the Slice
        # from column 1 to "steps" keeps the pairs of the cut length T' (column 0 is never read).
        pair_index = np.zeros((2, max_len), np.int64)
        pair_index[0, 1:], pair_index[1, 1:] = np.arange(max_len - 1), np.arange(1, max_len)
        inits += [numpy_helper.from_array(pairs["keys"].astype(key_type), "bigram_pair_keys"),
                  numpy_helper.from_array(pair_index, "pair_index"),
                  numpy_helper.from_array(np.array([[m1, 1], [1, m2], [vocab, 1]], key_type), "pair_combine"),
                  const("lin_neg_slots", -slots, key_type), const("lin_none", 0, key_type),
                  const("lin_split", [2, 1])]
        words = "pair_words"
        nodes += [helper.make_node("Slice", ["pair_index", "axis1", "steps_i64", "axis1"], ["pair_index_cut"]),
                  helper.make_node("Gather", ["ids", "pair_index_cut"], [words], axis=1)]             # [B, 2, P]
        if key_type == np.int64:
            nodes.append(helper.make_node("Cast", [words], ["pair_words_i64"], to=TensorProto.INT64))
            words = "pair_words_i64"
        # [m1 1; 1 m2; vocab 1] x (first, second): both probes before their mod, and the key
        nodes += [helper.make_node("MatMul", ["pair_combine", words], ["pair_combined"]),          # [B, 3, P]
                  helper.make_node("Split", ["pair_combined", "lin_split"], ["probe_sum", "pair_key"], axis=1),
                  helper.make_node("Mod", ["probe_sum", "lin_neg_slots"], ["probe_slot"]),  # in (-slots, 0]
                  helper.make_node("Gather", ["bigram_pair_keys", "probe_slot"], ["probe_key"]),
                  helper.make_node("Equal", ["probe_key", "pair_key"], ["probe_match"]),
                  ]
        if slot_terms:
            nodes += [helper.make_node("Where", ["probe_match", "probe_slot", "lin_none"], ["probe_found"]),
                      helper.make_node("ReduceMin", ["probe_found"], ["pair_term"], axes=[1], keepdims=0)]  # [B, P]
        else:
            inits.append(numpy_helper.from_array(pairs["rows"].astype(key_type), "bigram_rows"))
            nodes += [helper.make_node("Gather", ["bigram_rows", "probe_slot"], ["probe_row"]),
                      helper.make_node("Where", ["probe_match", "probe_row", "lin_none"], ["probe_found"]),
                      helper.make_node("ReduceMax", ["probe_found"], ["pair_term"], axes=[1], keepdims=0)]
        pair_term = "pair_term"
        if key_type == np.int64:
            nodes.append(helper.make_node("Cast", [pair_term], ["pair_term_i32"], to=TensorProto.INT32))
            pair_term = "pair_term_i32"
        nodes.append(helper.make_node("Concat", ["ids", pair_term], ["terms"], axis=1))            # [B, N]
        terms = "terms"
    inits += [numpy_helper.from_array(rows, "linear_rows"),
              numpy_helper.from_array(tables["counts"], "linear_count_factors"),
              const("lin_axis2", [2]), const("lin_split_norm", [classes, 1])]
    nodes += [helper.make_node("Unsqueeze", [terms, "lin_axis2"], ["terms_col"]),            # [B, N, 1]
              helper.make_node("Unsqueeze", [terms, "axis1"], ["terms_row"]),                # [B, 1, N]
              helper.make_node("Equal", ["terms_col", "terms_row"], ["terms_same"]),
              # summed as float: onnxruntime's int32 ReduceSum is 5x slower at batch 64
              helper.make_node("Cast", ["terms_same"], ["terms_same_f"], to=TensorProto.FLOAT),
              helper.make_node("ReduceSum", ["terms_same_f", "lin_axis2"], ["term_count_f"], keepdims=0),  # [B, N]
              helper.make_node("Cast", ["term_count_f"], ["term_count"], to=TensorProto.INT32),
              helper.make_node("Gather", ["linear_count_factors", "term_count"], ["term_factors"]),  # [B, N, C+1]
              helper.make_node("Gather", ["linear_rows", terms], ["term_rows"]),                    # [B, N, C+1]
              helper.make_node("Mul", ["term_factors", "term_rows"], ["term_products"]),
              helper.make_node("ReduceSum", ["term_products", "axis1"], ["linear_sums"], keepdims=0),  # [B, C+1]
              helper.make_node("Split", ["linear_sums", "lin_split_norm"], ["linear_raw", "linear_norm_sq"], axis=1),
              helper.make_node("Sqrt", ["linear_norm_sq"], ["linear_norm"]),
              helper.make_node("Div", ["linear_raw", "linear_norm"], ["linear_scores"]),
              helper.make_node("Add", [logits_in, "linear_scores"], [logits_out])]
    return nodes, inits


def build_loop(model, config: dict):
    """tf2onnx's conversion of the traced Keras graph (a Loop over time steps)."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    spec = [tf.TensorSpec([None, config["max_len"]], tf.int32, name=INPUT)]

    @tf.function(input_signature=spec)
    def forward(tokens):
        return {OUTPUT: model(tokens, training=False)}

    proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=OPSET)
    # tf2onnx names the batch axis after a TF placeholder: give it the documented name.
    for value in list(proto.graph.input) + list(proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].dim_param = "batch"
    assert [o.name for o in proto.graph.output] == [OUTPUT], [o.name for o in proto.graph.output]
    return proto


def export(context, folder) -> dict:
    """The format entry point (see export/formats.py): model.onnx and the tokenizer files."""
    out_file = folder.path / "model.onnx"
    details = export_onnx(context.model, context.config, context.tokenizer, context.labels, out_file,
                          context.onnx_impl, context.source_run)
    context.write_tokenizer_files(folder.path)
    return {"path": folder.rel(out_file), **details}


def export_onnx(model, config: dict, tokenizer, labels: list[str], out_file: Path, impl: str, source_run: str) -> dict:
    """Write the ONNX graph (`impl` rnn or loop) with its metadata to out_file; returns its facts
    (also used by the benchmark)."""
    import onnx

    proto = build_native(model, config) if impl == "rnn" else build_loop(model, config)
    meta = {
        "labels": json.dumps(labels, ensure_ascii=False),
        "max_len": str(config["max_len"]),
        "tokenizer": json.dumps(tokenizer.spec(), ensure_ascii=False),
        "vocab": "\n".join(tokenizer.vocab_lines()) + "\n",
        "source_run": source_run,
        "rnn_impl": impl,
    }
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    proto.ir_version = IR_VERSION
    proto.doc_string = "kerasrnn SimpleRNN text classifier; input: post-padded token ids, output: probabilities"
    onnx.checker.check_model(proto, full_check=True)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(out_file))
    return {
        "opset": OPSET,
        "ir_version": IR_VERSION,
        "rnn_impl": impl,
        "inputs": {INPUT: {"dtype": "int32", "shape": ["batch", config["max_len"]]}},
        "outputs": {OUTPUT: {"dtype": "float32", "shape": ["batch", config["num_classes"]]}},
    }
