"""The model: Embedding(mask_zero) -> SimpleRNN x num_layers (optionally bidirectional) -> pooling
-> Dense, plus (linear="tfidf", the default) a linear TF-IDF path whose class scores are added to
the Dense layer's before the softmax (kerasrnn.linear). Keras 3 layers and ops only.

Built from Keras layers alone so that it trains under the tensorflow, jax and torch backends.
`build_model(..., unroll=True, batch_size=1)` gives the same weights in a graph without a while
loop: what TFLite needs for a builtins-only, single-subgraph file.
"""
from __future__ import annotations

import warnings

import keras
import numpy as np

from kerasrnn import pooling as poolings
from kerasrnn.tokenizer import UNKNOWN_ID

POOLINGS = poolings.POOLINGS  # kept for old imports; the choices live in kerasrnn.pooling
# Keras warns whenever our max-pooling layer is built or loaded with a mask; see build_model for why
# ignoring the mask is correct there.
warnings.filterwarnings("ignore", message="Layer 'pool' .*does not support masking")


def build_model(vocab_size: int, num_classes: int, max_len: int | None, embed_dim: int = 64, units: int = 64,
                num_layers: int = 1, dropout: float = 0.0, pooling: str = "last", bidirectional: bool = False,
                bag_dim: int = 0, linear: str = "none", bigrams: int = 0, linear_terms: int | None = None,
                linear_slots: int | None = None,
                unroll: bool = False, batch_size: int | None = None, sanitize_ids: bool = False,
                linear_l2: float = 0.0) -> keras.Model:
    """`max_len=None` accepts any sequence length (training on trimmed batches).
    `bag_dim` > 0 adds a bag-of-words path beside the recurrence: a second embedding of that width,
    averaged over the text's real tokens, concatenated with the RNN's pooled (and dropped-out)
    outputs before the Dense layer. Being linear up to the softmax, it exports as one per-word
    table of class scores (bag_logit_table).
    `linear="tfidf"` adds kerasrnn.linear.TfidfLinear over `linear_terms` terms (the vocabulary and
    up to `bigrams` word pairs, in a hash table of `linear_slots`; its statistics are set from the
    data after building, kerasrnn.linear.term_statistics, which sizes both): the model's
    logits are then rnn_logits + linear scores. `linear_l2` is its kernel's L2 penalty (training only).
    `sanitize_ids` (export graphs only): ids outside [0, vocab_size) are read as <UNKNOWN>."""
    pool = poolings.choose(pooling, _POOLS)  # fails on an unknown name before anything is built
    tokens = keras.Input(shape=(max_len,), batch_size=batch_size, dtype="int32", name="tokens")
    ids = tokens
    if sanitize_ids:
        in_range = keras.ops.logical_and(keras.ops.greater_equal(tokens, 0), keras.ops.less(tokens, vocab_size))
        ids = keras.ops.where(in_range, tokens, keras.ops.full_like(tokens, UNKNOWN_ID))
    x = keras.layers.Embedding(vocab_size, embed_dim, mask_zero=True, name="embedding")(ids)
    for i in range(num_layers):
        last = i == num_layers - 1
        rnn = keras.layers.SimpleRNN(
            units, dropout=dropout, unroll=unroll, name=f"rnn_{i}",
            return_sequences=not (last and pooling == "last"),
        )
        # Bidirectional concatenates [forward, backward]; its backward layer reads each text's real
        # tokens from the last to the first (the padding, reversed to the front, is masked).
        x = keras.layers.Bidirectional(rnn, name=f"rnn_{i}")(x) if bidirectional else rnn(x)
    x = pool(x, ids, bidirectional)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    if bag_dim:
        bag = keras.layers.Embedding(vocab_size, bag_dim, mask_zero=True, name="bag_embedding")(ids)
        bag = keras.layers.GlobalAveragePooling1D(name="bag_mean")(bag)  # over the real tokens (mask)
        x = keras.layers.Concatenate(name="features")([x, bag])
    if linear == "none":
        probabilities = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
        return keras.Model(tokens, probabilities, name="kerasrnn")
    from kerasrnn.linear import TfidfLinear, table_slots

    rnn_logits = keras.layers.Dense(num_classes, name=RNN_LOGITS)(x)
    scores = TfidfLinear(vocab_size, num_classes, linear_terms or vocab_size, linear_slots or table_slots(bigrams),
                         l2=linear_l2,
                         name=LINEAR)(ids)
    logits = keras.layers.Add(name="logits")([rnn_logits, scores])
    return keras.Model(tokens, keras.layers.Softmax(name="probabilities")(logits), name="kerasrnn")


RNN_LOGITS, LINEAR = "rnn_logits", "linear"


def has_linear(model: keras.Model) -> bool:
    return any(layer.name == LINEAR for layer in model.layers)


def path_outputs(model: keras.Model) -> keras.Model:
    """The model's two paths side by side, [linear scores, rnn logits] as one [batch, 2 x classes]
    output, same layers: what training fits, each path with its own loss (kerasrnn.paths)."""
    both = keras.layers.Concatenate(name="paths")([model.get_layer(LINEAR).output, model.get_layer(RNN_LOGITS).output])
    return keras.Model(model.inputs, both, name="kerasrnn_paths")


def _pool_last(x, ids, bidirectional: bool):
    return x  # the last RNN layer already returns only its final state (return_sequences=False)


def _pool_max(x, ids, bidirectional: bool):
    if bidirectional:
        # Bidirectional outputs 0 on padded steps (it forces zero_output_for_mask), so those steps
        # are lifted out of the max: outputs are tanh values in (-1, 1), -2 is below all of them.
        # A row without a single token (hand-made ids only) pools to 0, as the other layouts do.
        valid = keras.ops.not_equal(ids, 0)
        x = keras.ops.where(keras.ops.expand_dims(valid, -1), x, -2.0)
        x = keras.layers.GlobalMaxPooling1D(name="pool")(x)
        return x * keras.ops.expand_dims(keras.ops.cast(keras.ops.any(valid, axis=1), x.dtype), -1)
    # The layer ignores the mask, which is right here: Keras's RNN repeats the last real output
    # over the padding, so the max over all steps is the max over the real ones.
    return keras.layers.GlobalMaxPooling1D(name="pool")(x)


def _pool_mean(x, ids, bidirectional: bool):
    return keras.layers.GlobalAveragePooling1D(name="pool")(x)


_POOLS = {"last": _pool_last, "max": _pool_max, "mean": _pool_mean}


def model_kwargs(config: dict) -> dict:
    """The build_model arguments recorded in a run's config.json (options.MODEL_ARGS)."""
    from kerasrnn.options import MODEL_ADDED_LATER, MODEL_ARGS

    # A run from before an option existed has no such key: it ran with what the option's "off" is.
    return {k: config.get(k, MODEL_ADDED_LATER[k]) if k in MODEL_ADDED_LATER else config[k] for k in MODEL_ARGS}


def without_dropout(model: keras.Model, config: dict) -> keras.Model:
    """The model without dropout, same weights: what a graph that traces the model (the
    SavedModel) exports. Dropout is the identity at inference, but the random state of a
    SimpleRNN's input dropout is a resource tf.saved_model refuses to capture."""
    return rebuild(model, {**config, "dropout": 0.0}) if config.get("dropout") else model


def rebuild(model: keras.Model, config: dict, unroll: bool = False, batch_size: int | None = None,
            sanitize_ids: bool = False) -> keras.Model:
    """The same network with other graph options (unrolled, static batch) and the same weights."""
    clone = build_model(**model_kwargs(config), unroll=unroll, batch_size=batch_size, sanitize_ids=sanitize_ids)
    clone.set_weights(model.get_weights())
    if unroll:
        # Keras 3.15's unrolled RNN zeroes masked outputs with the mask in reading order while a
        # backward layer's outputs are still reversed, so it zeroes real steps. Bidirectional forces
        # that zeroing on; the results here do not need it (padded steps are masked or lifted out
        # of the max by the layers after), so it is turned off again.
        for layer in clone.layers:
            if isinstance(layer, keras.layers.Bidirectional):
                layer.forward_layer.zero_output_for_mask = layer.backward_layer.zero_output_for_mask = False
    return clone


def rnn_weights(model: keras.Model, num_layers: int) -> list[list[tuple]]:
    """Per layer, per direction (forward[, backward]): Keras's (kernel, recurrent, bias)."""
    layers = []
    for i in range(num_layers):
        weights = model.get_layer(f"rnn_{i}").get_weights()
        layers.append([tuple(weights[k:k + 3]) for k in range(0, len(weights), 3)])
    return layers


def input_product_table(embedding: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """Every vocabulary word's embedding times a layer's input kernel (+ bias), in float64 then
    float32: the per-step input product, taken once per word at export instead of per token."""
    table = embedding.astype(np.float64) @ kernel.astype(np.float64)
    return (table if bias is None else table + bias).astype(np.float32)


def export_weights(model: keras.Model, num_layers: int):
    """What the hand-written export graphs use: the embedding table, and per layer and direction
    (forward[, backward]) the (kernel, recurrent, bias) of Keras, the first layer folded.

    The first RNN layer multiplies each embedded token by its input kernel at every step. When the
    embedding is at least as wide as the layer, the product is taken once per vocabulary word
    instead: table = embedding @ kernel per direction (side by side, in float64), and each
    direction's kernel becomes the identity over its own columns, so every step multiplies a
    units-wide vector instead of an embed-wide one (or none: the ONNX Scan skips an identity), and
    the table is no larger. Same values up to float rounding.
    """
    layers = rnn_weights(model, num_layers)
    embedding = model.get_layer("embedding").get_weights()[0]
    first = layers[0]
    units = first[0][0].shape[1]
    width = units * len(first)
    if embedding.shape[1] < width:
        return embedding, layers
    table = np.concatenate([input_product_table(embedding, k) for k, _, _ in first], axis=1)
    identity = np.eye(width, dtype=np.float32)
    layers[0] = [(identity[:, d * units:(d + 1) * units], r, b) for d, (_, r, b) in enumerate(first)]
    return table, layers


def head_weights(model: keras.Model) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """What the hand-written export graphs need after the RNN's pooled features: the Dense kernel's
    rows for those features, its bias, and the bag-of-words path folded (None without one).

    logits = features @ K_rnn + mean over real tokens of bag_embedding[id] @ K_bag + b, and the mean
    commutes with the product, so the bag path is one [vocab, classes] table of per-word class
    scores (taken in float64): the graph gathers each token's row and averages them.
    """
    kernel, bias = model.get_layer(RNN_LOGITS if has_linear(model) else "probabilities").get_weights()
    try:
        bag = model.get_layer("bag_embedding").get_weights()[0]
    except ValueError:
        return kernel.astype(np.float32), bias.astype(np.float32), None
    width = kernel.shape[0] - bag.shape[1]
    table = (bag.astype(np.float64) @ kernel[width:].astype(np.float64)).astype(np.float32)
    return kernel[:width].astype(np.float32), bias.astype(np.float32), table


def linear_weights(model: keras.Model) -> dict | None:
    """What the hand-written export graphs need of the linear path (kerasrnn.linear), or None:
    kernel [terms, classes], bias [classes], idf [terms], vocab_size, and the bigram hash table
    (keys [2, slots], rows [slots], slots; keys None without bigrams)."""
    if not has_linear(model):
        return None
    layer = model.get_layer(LINEAR)
    bigrams = layer.terms > layer.vocab_size
    return {"kernel": np.asarray(layer.kernel.numpy(), np.float32), "bias": np.asarray(layer.bias.numpy(), np.float32),
            "idf": np.asarray(layer.idf.numpy(), np.float32), "slots": layer.slots, "vocab_size": layer.vocab_size,
            "keys": np.asarray(layer.bigram_keys.numpy(), np.int32) if bigrams else None,
            "rows": np.asarray(layer.bigram_rows.numpy(), np.int32) if bigrams else None}
