"""SavedModel for TF Serving: token ids in `serving_default`, raw strings in `serve_text`.

`serve_text` runs the tokenizer inside the graph with TensorFlow string ops. Those use RE2, the
regex engine MediaPipe uses, with the same delimiter pattern and the same vocabulary table, so a
TF Serving client can send text and get what Python and the phone get.
"""
from __future__ import annotations

from pathlib import Path

from kerasrnn.tokenizer import PAD_ID, START_ID, UNKNOWN_ID, Tokenizer


def export(context, folder) -> dict:
    """The format entry point (see export/formats.py): the SavedModel, its tokenizer files in assets/."""
    details = export_savedmodel(context.inference_model, context.tokenizer, context.labels, folder.path)
    context.write_tokenizer_files(folder.path / "assets")
    return {"path": folder.rel(), **details}


def export_savedmodel(model, tokenizer: Tokenizer, labels: list[str], out_dir: Path) -> dict:
    """Write the SavedModel into out_dir; returns its signatures (also used by the benchmark)."""
    import tensorflow as tf

    max_len = tokenizer.max_len
    keys = list(tokenizer.table)
    values = [tokenizer.table[k] for k in keys]

    class Serving(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(tf.constant(keys), tf.constant(values, tf.int32)),
                default_value=UNKNOWN_ID)
            self.label_names = tf.constant(labels)

        @tf.function(input_signature=[tf.TensorSpec([None, max_len], tf.int32, name="tokens")])
        def serve_ids(self, tokens):
            # Ids outside [0, vocab) read as <UNKNOWN>, as in the ONNX and TFLite files.
            in_range = tf.logical_and(tokens >= 0, tokens < tokenizer.vocab_size)
            tokens = tf.where(in_range, tokens, tf.fill(tf.shape(tokens), UNKNOWN_ID))
            return {"probabilities": self.model(tokens, training=False)}

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
            probabilities = self.model(tokens, training=False)
            return {"probabilities": probabilities,
                    "label": tf.gather(self.label_names, tf.argmax(probabilities, axis=1)),
                    "tokens": tokens}

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
