"""SavedModel export: both signatures, the hand-built graph it serves and the Keras graph it falls back to."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TINY, run_cli  # noqa: F401


@pytest.mark.slow
def test_savedmodel_signatures(tiny_exports, tiny_run):
    import tensorflow as tf

    from kerasrnn.run import RunInfo

    info = RunInfo.load(tiny_run)
    loaded = tf.saved_model.load(str(tiny_exports / "savedmodel"))
    texts = ["Free entry, WIN now!", "see you later", ""]
    out = loaded.signatures["serve_text"](text=tf.constant(texts))
    assert (out["tokens"].numpy() == info.tokenizer.encode(texts)).all()
    probs = loaded.signatures["serving_default"](tokens=tf.constant(info.tokenizer.encode(texts)))["probabilities"]
    assert np.allclose(probs.numpy(), out["probabilities"].numpy(), atol=1e-6)
    labels = [s.decode() for s in out["label"].numpy()]
    assert labels == [info.labels[i] for i in probs.numpy().argmax(1)]


@pytest.mark.slow
def test_saved_model_cli_runs_the_export_as_python_does(tiny_exports, tiny_run):
    """TensorFlow's own client, which loads a SavedModel through the C++ Session API as TF Serving
    does, runs `serve_text` with Keras's probabilities and those kerasrnn.runtimes gives."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    from kerasrnn.run import RunInfo
    from kerasrnn.runtimes import SavedModelRuntime

    texts = ["Free entry, WIN now!", "see you later"]
    cli = Path(sys.executable).parent / "saved_model_cli"  # installed with tensorflow, beside python
    proc = subprocess.run([str(cli), "run", "--dir", str(tiny_exports / "savedmodel"), "--tag_set", "serve",
                           "--signature_def", "serve_text", "--input_exprs", f"text={json.dumps(texts)}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    block = proc.stdout.split("Result for output key probabilities:")[1].split("Result for")[0]
    # numpy prints 0.25, 1.e-03, 1. or 0.: every number in the block, row by row
    printed = np.array([float(v) for v in re.findall(r"[-+]?\d+\.\d*(?:[eE][-+]?\d+)?", block)]).reshape(2, -1)
    info = RunInfo.load(tiny_run)
    keras_probs = info.load_model().predict(info.tokenizer.encode(texts), verbose=0)
    assert np.abs(printed - keras_probs).max() <= 1e-5
    assert np.abs(printed - SavedModelRuntime(tiny_exports / "savedmodel").predict_texts(texts)).max() <= 1e-6


def test_a_savedmodel_that_cannot_run_in_a_session_gets_a_one_line_error(tmp_path):
    """A Keras model kept inside a tf.Module, as kerasrnn's Keras-graph SavedModels were before it
    tracked their TensorFlow variables: it loads, but a Session (TF Serving) misses its variables.
    `predict` says so in one line, exit 2, rather than a traceback at the first text."""
    import keras
    import tensorflow as tf

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])

    class Old(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.int32, name="tokens")])
        def serve(self, tokens):
            return {"probabilities": self.model(tf.cast(tokens, tf.float32))}

    module = Old()
    tf.saved_model.save(module, str(tmp_path / "old"), signatures={"serving_default": module.serve})
    proc = run_cli(["-m", "kerasrnn.predict", "--model", str(tmp_path / "old"), "hello"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    message = [line for line in proc.stderr.splitlines() if str(tmp_path / "old") in line]
    assert len(message) == 1 and "does not run in a Session" in message[0] and "re-export it" in message[0]


def test_keras_model_refuses_an_unknown_pooling():
    from kerasrnn.model import build_model

    with pytest.raises(ValueError, match="pooling must be one of last, max, mean, not 'median'"):
        build_model(30, 2, 8, embed_dim=4, units=4, pooling="median")


@pytest.mark.parametrize("pooling", ["max", "mean", "last"])
@pytest.mark.parametrize("linear, bigrams", [("none", 0), ("tfidf", 0), ("tfidf", 20)])
def test_the_hand_built_serving_graph_answers_as_keras(tmp_path, pooling, linear, bigrams):
    """The SavedModel serves a hand-built graph of the model's math (#17): the saved, reloaded
    `serving_default` gives Keras's probabilities on texts from 1 token to max_len with repeated
    words and pairs, at batch 1 and batched, an id out of range read as <UNKNOWN>; an architecture
    it does not cover (bidirectional) still serves Keras's graph, with the same answers, in the
    eager loader and in a Session."""
    import keras
    import tensorflow as tf

    from kerasrnn.export.savedmodel import CHUNK, export_savedmodel, hand_built
    from kerasrnn.linear import term_statistics
    from kerasrnn.model import build_model
    from kerasrnn.runtimes import SavedModelRuntime
    from kerasrnn.tokenizer import Tokenizer

    rng = np.random.default_rng(5)
    max_len = CHUNK + 4  # texts end before, at and after the loop's first chunk of steps
    tokenizer = Tokenizer([f"w{i}" for i in range(37)], max_len)  # 40 ids with the 3 reserved
    train = rng.integers(3, 9, (100, max_len)).astype(np.int32)
    stats = term_statistics([train], 40, bigrams)
    # a row without any token last where Keras defines its answer (max and last pool it to 0;
    # mean pooling and the linear path divide 0 by 0 there)
    ids = np.zeros((9 if pooling in ("max", "last") and linear == "none" else 8, max_len), np.int32)
    for row, length in enumerate([1, 2, 3, 7, CHUNK - 1, CHUNK, CHUNK + 1, max_len]):
        ids[row, :length] = np.r_[1, rng.integers(3, 9 if row % 2 else 40, length - 1)]
    for bidirectional in (False, True):
        config = {"vocab_size": 40, "num_classes": 3, "max_len": max_len, "embed_dim": 12, "units": 5,
                  "num_layers": 1, "dropout": 0.0, "pooling": pooling, "bidirectional": bidirectional,
                  "linear": linear, "bigrams": bigrams, "linear_terms": len(stats["idf"]),
                  "linear_slots": stats["slots"]}
        assert hand_built(config) is not bidirectional
        keras.utils.set_random_seed(1)
        model = build_model(**config)
        model.set_weights([w + rng.normal(0, 0.7, w.shape).astype(np.float32) if w.dtype.kind == "f" else w
                           for w in model.get_weights()])
        if linear != "none":
            model.get_layer("linear").set_statistics(stats)
        out = tmp_path / f"sm_{bidirectional}"
        export_savedmodel(model, tokenizer, ["a", "b", "c"], out, config)
        serve = tf.saved_model.load(str(out)).signatures["serving_default"]
        expected = model.predict(ids, verbose=0)
        batched = serve(tokens=tf.constant(ids))["probabilities"].numpy()
        one_by_one = np.concatenate([serve(tokens=tf.constant(row[None]))["probabilities"].numpy() for row in ids])
        assert np.abs(batched - expected).max() <= 1e-5 and np.abs(one_by_one - expected).max() <= 1e-5
        # through the Session API, as TF Serving and saved_model_cli load it: every variable restored
        # (a Keras model inside a tf.Module once lost its variables there, tensorflow#72963)
        in_session = SavedModelRuntime(out)
        assert np.abs(in_session.predict_ids(ids) - expected).max() <= 1e-5
        wild, unknown = ids[3:4].copy(), ids[3:4].copy()
        wild[0, 1], unknown[0, 1] = 1000, 2
        got = serve(tokens=tf.constant(wild))["probabilities"].numpy()
        assert np.abs(got - model.predict(unknown, verbose=0)).max() <= 1e-5
