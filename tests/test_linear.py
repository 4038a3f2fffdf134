"""The linear TF-IDF path (kerasrnn.linear) and the training of the two paths (kerasrnn.paths)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest


def _pairs(row):
    from kerasrnn.linear import FIRST_WORD_ID

    real = row[row != 0]
    return [(int(a), int(b)) for a, b in zip(real[:-1], real[1:]) if a >= FIRST_WORD_ID and b >= FIRST_WORD_ID]


def _encoded(sms_rows, n=400, max_len=30):
    from kerasrnn.tokenizer import Tokenizer, build_vocabulary

    texts = [t for t, _ in sms_rows[:n]]
    tokenizer = Tokenizer(build_vocabulary(texts, 600, min_count=2, max_tokens=max_len - 1), max_len)
    return tokenizer.encode(texts), tokenizer.vocab_size


def test_the_bigram_table_holds_the_most_frequent_pairs_and_finds_exactly_them(sms_rows):
    import keras

    from kerasrnn.linear import TfidfLinear, term_statistics

    ids, vocab = _encoded(sms_rows)
    stats = term_statistics([ids[:150], ids[150:]], vocab, 300)  # chunks, as a streamed corpus gives them
    doc_freq = Counter(p for row in ids for p in set(_pairs(row)))
    table = {(int(a), int(b)): int(r) for a, b, r in zip(*stats["bigram_keys"], stats["bigram_rows"]) if a >= 0}
    eligible = sum(1 for c in doc_freq.values() if c >= 2)  # pairs in 2+ texts
    kept, dropped = stats["bigrams_kept"], stats["bigrams_dropped"]
    assert len(table) == kept and kept + dropped == min(300, eligible) and eligible > 300
    assert dropped == 0  # cuckoo hashing places every pair in a table at most half full
    assert sorted(table.values()) == list(range(vocab, vocab + len(table)))  # rows after the vocabulary
    kept_df = [doc_freq[p] for p in table]
    assert min(kept_df) >= 2 and min(kept_df) >= sorted(doc_freq.values())[-300]  # the most frequent
    layer = TfidfLinear(vocab, 2, len(stats["idf"]), stats["bigram_keys"].shape[1])
    layer.build((None, ids.shape[1]))
    layer.set_statistics(stats)
    terms = keras.ops.convert_to_numpy(layer.term_ids(keras.ops.convert_to_tensor(ids)))
    assert np.array_equal(terms[:, :ids.shape[1]], ids)
    for row, found in zip(ids, terms[:, ids.shape[1]:]):
        real = row[row != 0]
        expected = [table.get((int(a), int(b)), 0) for a, b in zip(row[:-1], row[1:])]
        expected = [e if i < len(real) - 1 and row[i] >= 3 and row[i + 1] >= 3 else 0 for i, e in enumerate(expected)]
        assert found.tolist() == expected


@pytest.mark.parametrize("bigrams", [0, 300])
def test_scores_are_scikit_learns_sublinear_tfidf_times_the_kernel(sms_rows, bigrams):
    """The formula, not a copy of it: scikit-learn's TfidfTransformer on the same terms' counts."""
    import keras
    from scipy.sparse import csr_matrix
    from sklearn.feature_extraction.text import TfidfTransformer

    from kerasrnn.linear import TfidfLinear, term_statistics, tfidf_matrix

    ids, vocab = _encoded(sms_rows)
    train, test = ids[:300], ids[300:]
    stats = term_statistics([train], vocab, bigrams)
    terms = len(stats["idf"])
    table = {(int(a), int(b)): int(r) for a, b, r in zip(*stats["bigram_keys"], stats["bigram_rows"]) if a >= 0}

    def counts(rows):
        matrix = np.zeros((len(rows), terms))
        for i, row in enumerate(rows):
            for t in row[row > 1]:  # no <PAD>, no <START>
                matrix[i, t] += 1
            for pair in _pairs(row):
                if pair in table:
                    matrix[i, table[pair]] += 1
        return csr_matrix(matrix)

    tfidf = TfidfTransformer(sublinear_tf=True).fit(counts(train))
    rng = np.random.default_rng(0)
    layer = TfidfLinear(vocab, 3, terms, stats["bigram_keys"].shape[1])
    layer.build((None, ids.shape[1]))
    layer.set_statistics(stats)
    kernel, bias = rng.normal(0, 1, (terms, 3)).astype(np.float32), rng.normal(0, 1, 3).astype(np.float32)
    layer.kernel.assign(kernel)
    layer.bias.assign(bias)
    got = keras.ops.convert_to_numpy(layer(keras.ops.convert_to_tensor(test)))
    expected = tfidf.transform(counts(test)) @ kernel + bias
    assert np.abs(got - expected).max() <= 1e-5
    # The sparse features the linear SVM is solved on: the same numbers (up to the float32 idf).
    assert np.abs((tfidf_matrix(test, stats) - tfidf.transform(counts(test))).toarray()).max() <= 1e-6
    empty = np.zeros((1, ids.shape[1]), np.int32)
    empty[0, 0] = 1  # <START> alone: no word, the bias alone
    assert np.abs(keras.ops.convert_to_numpy(layer(keras.ops.convert_to_tensor(empty)))[0] - bias).max() <= 1e-6


def _two_path_model(vocab=40, classes=3, max_len=10, bigrams=20, seed=0):
    import keras

    from kerasrnn.linear import term_statistics
    from kerasrnn.model import LINEAR, build_model

    rng = np.random.default_rng(seed)
    train = rng.integers(3, 12, (200, max_len)).astype(np.int32)  # few words: pairs repeat
    train[:, 0] = 1
    stats = term_statistics([train], vocab, bigrams)
    keras.utils.set_random_seed(seed)
    config = {"vocab_size": vocab, "num_classes": classes, "max_len": max_len, "embed_dim": 6, "units": 5,
              "num_layers": 1, "dropout": 0.0, "pooling": "max", "bidirectional": False, "linear": "tfidf",
              "bigrams": bigrams, "linear_terms": len(stats["idf"]), "linear_slots": stats["slots"]}
    model = build_model(**config)
    model.get_layer(LINEAR).set_statistics(stats)
    return model, config, train


def test_combine_folds_the_rnn_weight_and_temperature_into_the_weights():
    from kerasrnn import paths
    from kerasrnn.model import path_outputs

    model, config, ids = _two_path_model()
    rng = np.random.default_rng(1)
    model.set_weights([w + rng.normal(0, 0.5, w.shape).astype(w.dtype) if w.dtype.kind == "f" else w
                       for w in model.get_weights()])
    before = path_outputs(model).predict(ids, verbose=0).astype(np.float64)
    y = (before[:, :3] + 0.3 * before[:, 3:]).argmax(1)  # labels that both paths' scores explain
    chosen = paths.combine(model, ids, y, 3)
    assert chosen["rnn_weight"] in paths.RNN_WEIGHTS and chosen["rnn_weight"] > 0
    a, t = chosen["rnn_weight"], chosen["temperature"]
    z = t * (before[:, :3] + a * before[:, 3:])
    expected = np.exp(z - z.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    assert np.abs(model.predict(ids, verbose=0) - expected).max() <= 1e-5
    # the smallest weight whose validation log-loss (each weight at its best temperature) is within
    # one standard error of the best weight's, per-text differences
    per_text = {}
    for w in paths.RNN_WEIGHTS:
        logits = before[:, :3] + w * before[:, 3:]
        per_text[w] = paths.text_log_loss(logits * paths.fit_temperature(logits, y)[0], y)
    best = min(per_text, key=lambda w: per_text[w].mean())
    assert chosen["best_log_loss_weight"] == best
    within = [w for w in paths.RNN_WEIGHTS if (per_text[w] - per_text[best]).mean()
              <= (per_text[w] - per_text[best]).std(ddof=1) / np.sqrt(len(y))]
    assert a == min(within) and chosen["log_loss"] == pytest.approx(per_text[a].mean())


def test_combine_leaves_the_rnn_out_when_it_explains_nothing_the_linear_path_does_not():
    from kerasrnn import paths
    from kerasrnn.model import path_outputs

    model, config, ids = _two_path_model(seed=2)
    rng = np.random.default_rng(2)
    model.set_weights([w + rng.normal(0, 0.5, w.shape).astype(w.dtype) if w.dtype.kind == "f" else w
                       for w in model.get_weights()])
    before = path_outputs(model).predict(ids, verbose=0)
    assert paths.combine(model, ids, before[:, :3].argmax(1), 3)["rnn_weight"] == 0.0


def _stopping_pair(patience: int, model=None):
    """The two-path training view of a small model and a PathStopping on it, as model.fit sets them up."""
    from kerasrnn import paths
    from kerasrnn.model import path_outputs

    fit_model = path_outputs(model or _two_path_model()[0])
    fit_model.stop_training = False
    stopping = paths.path_stopping(fit_model, linear=True, has_val=True, patience=patience)
    stopping.set_model(fit_model)
    return fit_model, stopping


def test_each_path_keeps_its_own_best_epoch():
    from kerasrnn import paths

    fit_model, stopping = _stopping_pair(2)
    names = paths.path_layers(fit_model, True)
    snapshot = lambda: {n: [w.copy() for w in fit_model.get_layer(n).get_weights()]  # noqa: E731
                        for n in names["linear"] + names["rnn"]}
    seen = []
    # the linear path improves until epoch 3, the RNN's best is epoch 1; weights change every epoch
    for epoch, (lin, rnn) in enumerate([(0.9, 0.5), (0.8, 0.4), (0.7, 0.6), (0.6, 0.7), (0.65, 0.8), (0.7, 0.9)]):
        for layer in fit_model.layers:
            if layer.weights:
                layer.set_weights([w + 1 if w.dtype.kind == "f" else w for w in layer.get_weights()])
        seen.append(snapshot())
        stopping.on_epoch_end(epoch, {"val_linear_hinge": lin, "val_rnn_crossentropy": rnn})
        if fit_model.stop_training:
            break
    assert epoch == 5  # the RNN waited 2 epochs at epoch 3, the linear path only at epoch 5
    stopping.on_train_end()
    for name in names["linear"]:
        assert all(np.array_equal(a, b) for a, b in zip(fit_model.get_layer(name).get_weights(), seen[3][name]))
    for name in names["rnn"]:
        assert all(np.array_equal(a, b) for a, b in zip(fit_model.get_layer(name).get_weights(), seen[1][name]))


def test_path_stopping_resumes_from_its_saved_state_and_best_weights():
    """What the epoch checkpoint saves (state() and best_weights) rebuilds the same stopping state."""
    from kerasrnn import paths

    fit_model, first = _stopping_pair(2)
    for epoch, (lin, rnn) in enumerate([(0.9, 0.5), (0.8, 0.6)]):
        fit_model.set_weights([w + 1 if w.dtype.kind == "f" else w for w in fit_model.get_weights()])
        first.on_epoch_end(epoch, {"val_linear_hinge": lin, "val_rnn_crossentropy": rnn})
    saved_state, saved_best = first.state(), first.best_weights
    second = paths.path_stopping(fit_model, linear=True, has_val=True, patience=2)
    second.set_model(fit_model)
    second.load_state(saved_state, saved_best)
    # the next epoch improves neither path: the RNN path has now waited 2 epochs, the linear 1
    for stopping in (first, second):
        stopping.on_epoch_end(2, {"val_linear_hinge": 0.85, "val_rnn_crossentropy": 0.7})
    assert first.state() == second.state() and not fit_model.stop_training
    assert all(np.array_equal(a, b) for a, b in zip(first.best_weights, second.best_weights))


def test_patience_zero_stops_on_the_first_epoch_that_does_not_improve():
    fit_model, stopping = _stopping_pair(0)
    stopping.on_epoch_end(0, {"val_linear_hinge": float("nan"), "val_rnn_crossentropy": 0.5})
    assert not fit_model.stop_training and stopping.state()["paths"]["linear"]["best_epoch"] == 0
    stopping.on_epoch_end(1, {"val_linear_hinge": 0.9, "val_rnn_crossentropy": 0.4})
    assert not fit_model.stop_training  # both improved (NaN is beaten by any value)
    stopping.on_epoch_end(2, {"val_linear_hinge": 0.95, "val_rnn_crossentropy": 0.45})
    assert fit_model.stop_training


def test_a_table_filled_to_half_keeps_every_pair():
    """At half load two-probe cuckoo insertion can fail for a few pairs; the table then doubles."""
    from kerasrnn.linear import table_slots, term_statistics

    rng = np.random.default_rng(3)
    pairs = {(int(a), int(b)) for a, b in rng.integers(3, 4000, (9000, 2))}
    pairs = sorted(pairs)[:8191]  # table_slots(8191) = 16384: just under half full
    ids = np.zeros((2 * len(pairs), 4), np.int32)
    for i, (a, b) in enumerate(pairs):
        ids[2 * i] = ids[2 * i + 1] = (1, a, b, 0)  # each pair in two texts
    stats = term_statistics([ids], 4000, 10_000)
    assert table_slots(len(pairs)) == 16384 and stats["slots"] >= 16384
    assert stats["bigrams_kept"] == len(pairs) and stats["bigrams_dropped"] == 0
    stored = {(int(a), int(b)) for a, b in zip(*stats["bigram_keys"]) if a >= 0}
    assert stored == set(pairs)


@pytest.mark.parametrize("vocab, count", [(4000, 8191), (60_000, 3000), (40, 20)])
def test_the_export_table_finds_every_model_pair_by_int32_arithmetic_and_leaves_slot_0_empty(vocab, count):
    """kerasrnn.linear.export_pair_table: the model's pairs and rows under the exporter's hash, which
    the ONNX graph computes without a mod of the words first and reads at negative indices."""
    from kerasrnn.linear import export_pair_table, term_statistics

    rng = np.random.default_rng(vocab)
    pairs = sorted({(int(a), int(b)) for a, b in rng.integers(3, vocab, (2 * count, 2))})[:count]
    ids = np.zeros((2 * len(pairs), 4), np.int32)
    for i, (a, b) in enumerate(pairs):
        ids[2 * i] = ids[2 * i + 1] = (1, a, b, 0)
    stats = term_statistics([ids], vocab, len(pairs))
    model_rows = {(int(a), int(b)): int(r) for a, b, r in zip(*stats["bigram_keys"], stats["bigram_rows"]) if a >= 0}
    table = export_pair_table({"keys": stats["bigram_keys"], "rows": stats["bigram_rows"], "vocab_size": vocab})
    slots, (m1, m2), keys = table["slots"], table["multipliers"], table["keys"]
    assert keys[0] == -1 and table["rows"][0] == 0  # slot 0 empty
    assert (vocab - 1) * max(m1, m2) + vocab - 1 < 2 ** 31  # both probe sums stay in int32
    first, second = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    probes = np.stack([(first * m1 + second) % slots, (second * m2 + first) % slots])
    hit = keys[probes] == first * vocab + second  # [2, pairs]
    assert hit.any(axis=0).all()  # each pair in one of its slots, in one only (or both probes are that slot)
    assert (probes[0] == probes[1])[hit.all(axis=0)].all()
    rows = np.where(hit, table["rows"][probes], 0).max(axis=0)
    assert rows.tolist() == [model_rows[p] for p in pairs]
    others = rng.integers(3, vocab, (2, 5000))
    others = others[:, [(int(a), int(b)) not in model_rows for a, b in others.T]]
    other_probes = np.stack([(others[0] * m1 + others[1]) % slots, (others[1] * m2 + others[0]) % slots])
    assert not (keys[other_probes] == others[0] * vocab + others[1]).any()  # no pair outside is found


@pytest.mark.parametrize("labels", [(0, 1), (0, 1, 2), (0, 2)])
def test_the_solved_linear_path_scores_as_linearsvc_on_its_features(sms_rows, labels):
    """--linear-solver liblinear: the layer with fit_linear_svm's weights gives LinearSVC's decision
    values (two labels: their difference; a label training lacks: zero weights)."""
    import keras
    from sklearn.svm import LinearSVC

    from kerasrnn.linear import MISSING_LABEL_SCORE, TfidfLinear, fit_linear_svm, term_statistics, tfidf_matrix

    ids, vocab = _encoded(sms_rows)
    train, test = ids[:300], ids[300:]
    y = np.array([labels[i % len(labels)] if t.sum() % 3 else labels[0] for i, t in enumerate(train)])
    stats = term_statistics([train], vocab, 300)
    solved = fit_linear_svm(train, y, stats, 3)
    kernel, bias = solved["kernel"], solved["bias"]
    assert solved["C"] == 1.0  # no validation split: scikit-learn's default
    layer = TfidfLinear(vocab, 3, len(stats["idf"]), stats["bigram_keys"].shape[1])
    layer.build((None, ids.shape[1]))
    layer.set_statistics(stats)
    layer.kernel.assign(kernel)
    layer.bias.assign(bias)
    got = keras.ops.convert_to_numpy(layer(keras.ops.convert_to_tensor(test)))
    expected = LinearSVC(C=1.0, random_state=0).fit(tfidf_matrix(train, stats), y).decision_function(
        tfidf_matrix(test, stats))
    present = sorted(set(labels))
    if len(present) == 2:
        assert np.abs((got[:, present[1]] - got[:, present[0]]) - expected).max() <= 1e-5
    else:
        assert np.abs(got[:, present] - expected).max() <= 1e-5
    missing = [c for c in range(3) if c not in present]
    assert not np.any(kernel[:, missing]) and np.all(bias[missing] == MISSING_LABEL_SCORE)
    if missing:
        assert np.all(got.argmax(1) != missing[0])  # never the label training lacked


def test_the_linear_svms_c_is_the_one_with_the_best_validation_accuracy(sms_rows):
    from sklearn.svm import LinearSVC

    from kerasrnn.linear import C_GRID, fit_linear_svm, term_statistics, tfidf_matrix

    ids, vocab = _encoded(sms_rows)
    y = np.array([1 if label == "spam" else 0 for _, label in sms_rows[:len(ids)]])
    stats = term_statistics([ids[:250]], vocab, 300)
    solved = fit_linear_svm(ids[:250], y[:250], stats, 2, validation=(ids[250:], y[250:]))
    val = tfidf_matrix(ids[250:], stats)
    accuracy = {c: (LinearSVC(C=c, random_state=0).fit(tfidf_matrix(ids[:250], stats), y[:250]).predict(val)
                    == y[250:]).mean() for c in C_GRID}
    best = max(accuracy.values())
    assert solved["C"] == min(c for c in C_GRID if accuracy[c] == best)
    assert solved["validation_accuracy"] == {f"{c:g}": pytest.approx(a) for c, a in accuracy.items()}


def test_the_export_graphs_norm_floor_holds_only_for_trained_statistics():
    """The ONNX and TFLite graphs divide by the norm without a guard: <PAD> and <START> get an idf^2
    of NORM_FLOOR, exact only while every other term's idf is >= 1 (smooth idf); statistics never
    set (idf 1 everywhere) are refused as a kerasrnn fault."""
    from kerasrnn.errors import InternalError
    from kerasrnn.linear import NORM_FLOOR, guarded_idf_sq, term_statistics

    stats = term_statistics([np.array([[1, 5, 6, 7, 0], [1, 5, 6, 0, 0]], np.int32)], 10, 5)
    squared = guarded_idf_sq(stats["idf"])
    assert squared.dtype == np.float32 and np.all(squared[:2] == np.float32(NORM_FLOOR))
    assert np.allclose(squared[2:], stats["idf"][2:] ** 2) and squared[2:].min() >= 1
    with pytest.raises(InternalError, match="idf"):
        guarded_idf_sq(np.ones(10, np.float32))
