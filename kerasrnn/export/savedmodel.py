"""SavedModel for TF Serving: token ids in `serving_default`, raw strings in `serve_text`.

Both run a hand-built graph of the model's math (`Forward`), as the ONNX and TFLite exports do,
not Keras's traced graph: the recurrence is a tf.while_loop over chunks of 16 unrolled steps that
covers the batch's longest real text (not max_len), the first layer's input product is folded into
the embedding table, and the linear TF-IDF path is gathers from folded tables
(kerasrnn.linear.folded_tables), its word pairs found by one hash-table lookup. Keras's graph took
17x the ONNX file's batch-1 latency (#17).
Standard TensorFlow ops only: TF Serving loads it as is. Architectures outside the hand-built graph
(several layers, bidirectional, a bag-of-words path) serve Keras's graph as before.

`serve_text` runs the tokenizer inside the graph with TensorFlow string ops. Those use RE2, the
regex engine MediaPipe uses, with the same delimiter pattern and the same vocabulary table, so a
TF Serving client can send text and get what Python and the phone get.
"""
from __future__ import annotations

from pathlib import Path

from kerasrnn.tokenizer import PAD_ID, START_ID, UNKNOWN_ID, Tokenizer

CHUNK = 16  # steps per while-loop iteration (see Forward.__call__); measured 5-10% faster than 8


def export(context, folder) -> dict:
    """The format entry point (see export/formats.py): the SavedModel, its tokenizer files in assets/."""
    details = export_savedmodel(context.inference_model, context.tokenizer, context.labels, folder.path,
                                context.config)
    context.write_tokenizer_files(folder.path / "assets")
    return {"path": folder.rel(), **details}


def hand_built(config: dict | None) -> bool:
    """Whether `Forward` covers this architecture (else the SavedModel serves Keras's graph)."""
    return bool(config) and config.get("num_layers", 1) == 1 and not config.get("bidirectional") \
        and not config.get("bag_dim") and config.get("pooling") in ("max", "mean", "last")


def forward_module(model, config: dict):
    """A tf.Module whose `__call__(ids [batch, max_len] int32, ids in range)` gives the model's
    probabilities with the same math as Keras (see the module docstring)."""
    import tensorflow as tf

    import numpy as np

    from kerasrnn.linear import folded_tables, guarded_idf_sq
    from kerasrnn.model import export_weights, head_weights, input_product_table, linear_weights

    embedding, layers = export_weights(model, 1)
    kernel, recurrent, bias = layers[0][0]
    dense_w, dense_b, _ = head_weights(model)
    linear = linear_weights(model)
    if linear is not None:  # the linear path's bias joins the Dense layer's
        dense_b = (dense_b.astype(np.float64) + linear["bias"]).astype(np.float32)
    pooling, max_len, classes = config["pooling"], config["max_len"], int(dense_b.shape[0])
    chunks_max = -(-max_len // CHUNK)

    class Forward(tf.Module):
        def __init__(self):
            super().__init__(name="forward")
            var = lambda value, name: tf.Variable(value, trainable=False, name=name)  # noqa: E731
            self.table = var(input_product_table(embedding, kernel, bias), "input_products")
            self.recurrent, self.dense_w, self.dense_b = var(recurrent, "recurrent"), var(dense_w, "dense_w"), \
                var(dense_b, "dense_b")
            if linear is not None:
                n = max_len if linear["keys"] is None else 2 * max_len - 1
                tables = folded_tables(linear, n)
                rows = tables["rows"].copy()
                rows[:, classes] = guarded_idf_sq(linear["idf"])  # no maximum(norm, 1e-12) needed
                self.linear_rows, self.linear_counts = var(rows, "linear_rows"), var(tables["counts"], "linear_count_factors")
                if linear["keys"] is not None:
                    # word pair key first * vocab + second -> its term row (0: not a bigram), one
                    # LookupTableFindV2 op; TF Serving initialises the table when it loads the model
                    keys, rows_of = np.asarray(linear["keys"], np.int64), np.asarray(linear["rows"], np.int64)
                    stored = keys[0] >= 0
                    self.pair_table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
                        keys[0, stored] * linear["vocab_size"] + keys[1, stored], rows_of[stored]), default_value=0)

        def __call__(self, ids):
            lens = tf.reduce_sum(tf.cast(ids > 0, tf.int32), axis=1)  # post-padded: real tokens first
            batch, units = tf.shape(ids)[0], self.recurrent.shape[0]
            recurrent = tf.convert_to_tensor(self.recurrent)  # read once, not once per step
            # The loop runs over chunks of CHUNK steps, unrolled inside: a TF while loop costs a few
            # microseconds per iteration, the step itself well under one (#17). Only the batch's
            # longest real text is covered, in time-major order [chunks, CHUNK, batch, units].
            chunks = (tf.maximum(tf.reduce_max(lens), 1) + CHUNK - 1) // CHUNK
            padded = tf.pad(ids, [[0, 0], [0, CHUNK * chunks_max - max_len]])[:, : chunks * CHUNK]
            x = tf.reshape(tf.gather(self.table, tf.transpose(padded)), [chunks, CHUNK, batch, units])
            # The steps run unmasked; what pooling takes from each output is set here, outside the
            # loop (ops inside it run once per iteration): max adds 0 to a real output and -4 past
            # a text's end (tanh is above -1), mean and last multiply by 1 where they keep the output.
            position = tf.range(chunks * CHUNK)[:, None]
            if pooling == "max":
                keep = tf.where(position < lens[None, :], 0.0, -4.0)
            else:
                keep = tf.cast(position < lens[None, :] if pooling == "mean" else position == lens[None, :] - 1,
                               tf.float32)
            keep = tf.reshape(keep, [chunks, CHUNK, batch, 1])
            h = tf.zeros([batch, units])
            pool = tf.fill([batch, units], -2.0) if pooling == "max" else tf.zeros([batch, units])

            def chunk(c, h, pool):
                # Rows still running at the next chunk had only real steps here, so h carries on.
                outputs = []
                for step_input in tf.unstack(tf.gather(x, c)):  # one op for the chunk's inputs
                    h = tf.tanh(step_input + tf.matmul(h, recurrent))
                    outputs.append(h)
                outputs, keep_c = tf.stack(outputs), tf.gather(keep, c)           # [CHUNK, B, H], [CHUNK, B, 1]
                if pooling == "max":
                    return c + 1, h, tf.maximum(pool, tf.reduce_max(outputs + keep_c, axis=0))
                return c + 1, h, pool + tf.reduce_sum(outputs * keep_c, axis=0)

            # `chunks` as maximum_iterations, not in the condition: one loop variable fewer
            _, _, pool = tf.while_loop(lambda c, h, pool: True, chunk, (tf.constant(0), h, pool),
                                       maximum_iterations=chunks)
            if pooling == "max":  # a row without tokens pools 0, as in Keras
                pool = tf.where(tf.expand_dims(lens > 0, 1), pool, 0.0)
            features = pool / tf.cast(tf.expand_dims(tf.maximum(lens, 1), 1), tf.float32) \
                if pooling == "mean" else pool
            logits = tf.matmul(features, self.dense_w) + self.dense_b
            if linear is not None:
                logits += self._linear_scores(ids)
            return tf.nn.softmax(logits)

        def _linear_scores(self, ids):
            """The linear path without its bias (in dense_b): the same sums as the ONNX graph's."""
            terms = ids
            if linear["keys"] is not None:
                wide = tf.cast(ids, tf.int64)
                found = self.pair_table.lookup(wide[:, :-1] * linear["vocab_size"] + wide[:, 1:])
                terms = tf.concat([ids, tf.cast(found, tf.int32)], axis=1)
            count = tf.reduce_sum(tf.cast(tf.equal(terms[:, :, None], terms[:, None, :]), tf.int32), axis=2)
            sums = tf.reduce_sum(tf.gather(self.linear_counts, count) * tf.gather(self.linear_rows, terms), axis=1)
            return sums[:, :classes] * tf.math.rsqrt(sums[:, classes:])

    return Forward()


def export_savedmodel(model, tokenizer: Tokenizer, labels: list[str], out_dir: Path, config: dict | None = None) -> dict:
    """Write the SavedModel into out_dir; returns its signatures (also used by the benchmark).
    With the run's `config`, the graph is hand-built where `hand_built` says it can be."""
    import tensorflow as tf

    max_len = tokenizer.max_len
    keys = list(tokenizer.table)
    values = [tokenizer.table[k] for k in keys]

    class Serving(tf.Module):
        def __init__(self):
            super().__init__()
            self.hand_built = hand_built(config)
            self.model = forward_module(model, config) if self.hand_built else model
            if not self.hand_built:
                # The TensorFlow variables under Keras's, tracked as such: without them the SavedModel
                # loads in Python but a Session (TF Serving, saved_model_cli) finds its variables
                # missing, "Could not find variable ..." (tensorflow#72963, keras#20095).
                self.tf_variables = [v.value for v in model.variables]
            self.table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(tf.constant(keys), tf.constant(values, tf.int32)),
                default_value=UNKNOWN_ID)
            self.label_names = tf.constant(labels)

        @tf.function(input_signature=[tf.TensorSpec([None, max_len], tf.int32, name="tokens")])
        def serve_ids(self, tokens):
            # Ids outside [0, vocab) read as <UNKNOWN>, as in the ONNX and TFLite files.
            in_range = tf.logical_and(tokens >= 0, tokens < tokenizer.vocab_size)
            tokens = tf.where(in_range, tokens, tf.fill(tf.shape(tokens), UNKNOWN_ID))
            return {"probabilities": self._probabilities(tokens)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serve_text(self, text):
            # Same steps as kerasrnn.tokenizer: cut at NUL, split on delimiter runs, look up as is.
            text = tf.strings.regex_replace(text, "(?s)\\x00.*", "")
            text = tf.strings.regex_replace(text, tokenizer.delim_regex, " ")
            pieces = tf.strings.split(text, sep=" ")
            pieces = tf.ragged.boolean_mask(pieces, tf.strings.length(pieces) > 0)
            ids = tf.ragged.map_flat_values(self.table.lookup, pieces)[:, : max_len - 1]
            batch = tf.shape(text)[0]
            ids = tf.concat([tf.fill([batch, 1], START_ID), ids], axis=1)
            tokens = ids.to_tensor(default_value=PAD_ID, shape=[None, max_len])
            probabilities = self._probabilities(tokens)
            return {"probabilities": probabilities,
                    "label": tf.gather(self.label_names, tf.argmax(probabilities, axis=1)),
                    "tokens": tokens}

        def _probabilities(self, tokens):
            return self.model(tokens) if self.hand_built else self.model(tokens, training=False)

    module = Serving()
    tf.saved_model.save(module, str(out_dir),
                        signatures={"serving_default": module.serve_ids, "serve_text": module.serve_text})
    return {
        "signatures": {
            "serving_default": {"inputs": {"tokens": {"dtype": "int32", "shape": ["batch", max_len]}},
                                "outputs": {"probabilities": {"dtype": "float32", "shape": ["batch", len(labels)]}}},
            "serve_text": {"inputs": {"text": {"dtype": "string", "shape": ["batch"]}},
                           "outputs": {"probabilities": {"dtype": "float32", "shape": ["batch", len(labels)]},
                                       "label": {"dtype": "string", "shape": ["batch"]},
                                       "tokens": {"dtype": "int32", "shape": ["batch", max_len]}}},
        },
    }
