"""SavedModel export: both signatures, and the Keras graph it serves (pooling choice included)."""
from __future__ import annotations

import json
import shutil

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


def test_keras_model_refuses_an_unknown_pooling():
    from kerasrnn.model import build_model

    with pytest.raises(ValueError, match="pooling must be one of last, max, mean, not 'median'"):
        build_model(30, 2, 8, embed_dim=4, units=4, pooling="median")
