"""The model: Embedding(mask_zero) -> SimpleRNN x num_layers -> Dense softmax, Keras 3 layers only.

Built from Keras layers alone so that it trains under the tensorflow, jax and torch backends.
`build_model(..., unroll=True, batch_size=1)` gives the same weights in a graph without a while
loop: what TFLite needs for a builtins-only, single-subgraph file.
"""
from __future__ import annotations

import warnings

import keras

from kerasrnn.tokenizer import UNKNOWN_ID

POOLINGS = ("last", "max", "mean")
# Keras warns whenever our max-pooling layer is built or loaded with a mask; see build_model for why
# ignoring the mask is correct there.
warnings.filterwarnings("ignore", message="Layer 'pool' .*does not support masking")


def build_model(vocab_size: int, num_classes: int, max_len: int | None, embed_dim: int = 64, units: int = 64,
                num_layers: int = 1, dropout: float = 0.0, pooling: str = "last",
                unroll: bool = False, batch_size: int | None = None, sanitize_ids: bool = False) -> keras.Model:
    """`max_len=None` accepts any sequence length (training on trimmed batches).
    `sanitize_ids` (export graphs only): ids outside [0, vocab_size) are read as <UNKNOWN>."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
    tokens = keras.Input(shape=(max_len,), batch_size=batch_size, dtype="int32", name="tokens")
    ids = tokens
    if sanitize_ids:
        in_range = keras.ops.logical_and(keras.ops.greater_equal(tokens, 0), keras.ops.less(tokens, vocab_size))
        ids = keras.ops.where(in_range, tokens, keras.ops.full_like(tokens, UNKNOWN_ID))
    x = keras.layers.Embedding(vocab_size, embed_dim, mask_zero=True, name="embedding")(ids)
    for i in range(num_layers):
        last = i == num_layers - 1
        x = keras.layers.SimpleRNN(
            units, dropout=dropout, unroll=unroll, name=f"rnn_{i}",
            return_sequences=not (last and pooling == "last"),
        )(x)
    if pooling == "max":
        # The layer ignores the mask, which is right here: Keras's RNN repeats the last real output
        # over the padding, so the max over all steps is the max over the real ones.
        x = keras.layers.GlobalMaxPooling1D(name="pool")(x)
    elif pooling == "mean":
        x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    probabilities = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(tokens, probabilities, name="kerasrnn")


def model_kwargs(config: dict) -> dict:
    """The build_model arguments recorded in a run's config.json."""
    keys = ("vocab_size", "num_classes", "max_len", "embed_dim", "units", "num_layers", "dropout", "pooling")
    return {k: config[k] for k in keys}


def rebuild(model: keras.Model, config: dict, unroll: bool = False, batch_size: int | None = None,
            sanitize_ids: bool = False) -> keras.Model:
    """The same network with other graph options (unrolled, static batch) and the same weights."""
    clone = build_model(**model_kwargs(config), unroll=unroll, batch_size=batch_size, sanitize_ids=sanitize_ids)
    clone.set_weights(model.get_weights())
    return clone
