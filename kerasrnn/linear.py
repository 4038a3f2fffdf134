"""The linear path beside the recurrence: TF-IDF of the text's words and word pairs -> class scores.

What a user compares the RNN with first is TF-IDF + a linear SVM, and on long texts (20 Newsgroups)
no RNN of this size trained here beat it. So the model carries that linear model inside it, trained
by the same model.fit, and the recurrence adds to it what order tells (kerasrnn.model, #15):

- terms: the token ids, plus one id per adjacent word pair found in a bigram vocabulary (the most
  frequent pairs of the training split, `--bigrams` of them). Pairs are looked up in a hash table of
  int32 keys, each pair in one of its two probe slots (cuckoo hashing, written at training time). The
  export graphs find the same ids with standard ops in their own ways: TFLite's builtin
  HASHTABLE_LOOKUP over the pairs' sorted keys, a TensorFlow lookup table, and in ONNX a table
  rebuilt for its ops (`export_pair_table`).
- weights: sublinear TF-IDF, L2-normalised, exactly scikit-learn's TfidfVectorizer(sublinear_tf=
  True) formula over these terms. A term seen c times in the text weighs idf * (1 + ln c), spread
  as idf * (1 + ln c) / c over its c positions; the norm is sqrt(sum over positions of w_i^2 c_i).
  c_i comes from an equality matrix of the text's terms with itself: no unique op is needed.
- scores: sum over positions of w_i / norm * kernel[term_i] + bias.
- training: the kernel and bias are a linear SVM's. With the training texts in memory they are solved
  exactly before model.fit (`fit_linear_svm`: scikit-learn's LinearSVC on `tfidf_matrix`, the same
  features as a sparse matrix, C chosen on the validation split); a streamed corpus trains them
  inside model.fit with a hinge loss instead (kerasrnn.paths).

<PAD> and <START> have idf 0 (they are no words); <UNKNOWN> counts as a word (a rare word).
"""
from __future__ import annotations

from collections import Counter

import keras
import numpy as np
from keras import ops

from kerasrnn.tokenizer import UNKNOWN_ID

FIRST_WORD_ID = UNKNOWN_ID + 1  # pairs are of vocabulary words only (no <PAD>, <START>, <UNKNOWN>)
EMPTY_KEY = -1
MAX_EVICTIONS = 100


def table_slots(bigrams: int) -> int:
    """Hash-table size for `bigrams` pairs: a power of two, at least 2x (two probes keep nearly all)."""
    return 1 << max(4, int(2 * max(bigrams, 1) - 1).bit_length())


def multipliers(slots: int) -> tuple[int, int]:
    """Odd multipliers of the two probe hashes, small enough that (slots - 1) * m + id stays in int32:
    irrational fractions (golden ratio, plastic number) of that bound, so that the products of nearby
    ids land far apart modulo `slots` (a power-of-two multiplier put every pair of a word in 4 slots)."""
    return _odd_fractions((1 << 30) // slots)


def _odd_fractions(bound: int) -> tuple[int, int]:
    """Two odd multipliers at most `bound` (at least 1): the golden ratio's and the plastic number's
    fractions of it."""
    return int(bound * 0.6180339887) | 1, int(bound * 0.7548776662) | 1


def probe_slots(first, second, slots: int, xp=np):
    """The two hash slots of pairs (first, second), int arrays of word ids >= 0 (numpy or keras.ops)."""
    m1, m2 = multipliers(slots)
    mod = np.mod if xp is np else ops.mod
    return mod(mod(first, slots) * m1 + second, slots), mod(mod(second, slots) * m2 + first, slots)


def term_statistics(id_chunks, vocab_size: int, bigrams: int) -> dict:
    """From the training split's ids (an iterable of [texts, max_len] arrays): idf per term and the
    bigram hash table.

    The bigram vocabulary: pairs of adjacent vocabulary words in at least 2 training texts, the
    `bigrams` most frequent (document frequency, ties by first appearance), each in one of its two
    probe slots (cuckoo hashing); a pair that finds no place is left out (counted)."""
    texts = 0
    doc_freq = np.zeros(vocab_size, np.int64)
    pair_freq: Counter = Counter()
    for row in (row for chunk in id_chunks for row in chunk):
        texts += 1
        real = row[row != 0]
        doc_freq[np.unique(real)] += 1
        if bigrams:
            a, b = real[:-1], real[1:]
            keep = (a >= FIRST_WORD_ID) & (b >= FIRST_WORD_ID)
            pair_freq.update(set(zip(a[keep].tolist(), b[keep].tolist())))
    chosen = [(pair, df) for pair, df in pair_freq.most_common(bigrams) if df >= 2] if bigrams else []
    first, second = (np.array([pair[k] for pair, _ in chosen], np.int64) for k in (0, 1))
    slots = table_slots(len(chosen))  # sized for the pairs there are, not the cap asked for
    table, dropped = _cuckoo(_probes(first, second, slots), slots)
    while dropped and slots < 1 << 26:  # rare below half full, but possible: a table twice the size
        slots *= 2
        table, dropped = _cuckoo(_probes(first, second, slots), slots)
    placed = np.sort(table[table >= 0])  # rows in frequency order, after the vocabulary
    row_of = {int(i): vocab_size + r for r, i in enumerate(placed)}
    keys = np.full((2, slots), EMPTY_KEY, np.int32)
    rows = np.zeros(slots, np.int32)
    for slot in np.flatnonzero(table >= 0):
        (a, b), _ = chosen[table[slot]]
        keys[:, slot] = a, b
        rows[slot] = row_of[int(table[slot])]
    pair_df = [chosen[i][1] for i in placed]
    df_all = np.concatenate([doc_freq, np.array(pair_df, np.int64)])
    idf = (np.log((1.0 + texts) / (1.0 + df_all)) + 1.0).astype(np.float32)  # scikit-learn's smooth idf
    idf[:FIRST_WORD_ID - 1] = 0.0  # <PAD>, <START>
    return {"idf": idf, "bigram_keys": keys, "bigram_rows": rows, "slots": slots, "bigrams_kept": len(pair_df),
            "bigrams_dropped": dropped}


def _probes(first: np.ndarray, second: np.ndarray, slots: int) -> np.ndarray:
    """[pairs, 2]: the two probe slots of each pair (probe_slots)."""
    return np.stack(probe_slots(first, second, slots), axis=1) if len(first) else np.zeros((0, 2), np.int64)


def _cuckoo(probes: np.ndarray, slots: int) -> tuple[np.ndarray, int]:
    """slot -> index of the pair placed there (-1: empty), and how many pairs found no place, for
    pairs whose two probe slots are `probes` [pairs, 2].

    Cuckoo insertion: a pair whose first slot is taken evicts the occupant, which moves to its other
    slot, and so on; at most half full, nearly every pair finds a place."""
    table = np.full(slots, -1, np.int64)
    dropped = 0
    for item in range(len(probes)):
        slot = probes[item, 0]
        for _ in range(MAX_EVICTIONS):
            table[slot], item = item, table[slot]
            if item < 0:
                break
            slot = probes[item, 1] if probes[item, 0] == slot else probes[item, 0]
        else:
            dropped += 1  # the pair left holding no slot after that many moves
    return table, dropped


def export_pair_table(w: dict) -> dict:
    """The bigram table rebuilt for the ONNX and TFLite graphs: the model's pairs and rows (w:
    model.linear_weights), placed by a hash that costs those graphs fewer ops:

    - probes (first x m1 + second) mod slots and (second x m2 + first) mod slots, with m1, m2 small
      enough that no sum leaves int32 for ids below the vocabulary size: no mod of the words first;
    - slot 0 stays empty, so that an ONNX graph can compute a probe as a mod of -slots, in
      (-slots, 0], and read slot s at index s - slots of a table's tail (Gather takes negative
      indices): the matched probe itself is then the pair's term, with no lookup of its row.
    {"slots", "multipliers", "keys" int64 [slots] (first x vocab + second; -1: empty), "rows" int32
    [slots] (the model's term row of the pair there; 0: empty)}."""
    from kerasrnn.errors import InternalError

    keys, rows, vocab = np.asarray(w["keys"], np.int64), np.asarray(w["rows"], np.int32), int(w["vocab_size"])
    stored = np.flatnonzero(keys[0] >= 0)
    first, second = keys[0, stored], keys[1, stored]
    if len(np.unique(first * vocab + second)) < len(stored):  # e.g. statistics never set: all (0, 0)
        raise InternalError("the model's word-pair table holds a pair twice; its statistics were not set")
    m1, m2 = _odd_fractions((2 ** 31 - 1 - vocab) // vocab)  # (vocab - 1) x m + vocab - 1 < 2^31
    # Any size works for the mod (no power of two needed): a load of about 0.45, below the 0.5 at
    # which two-probe cuckoo hashing starts to fail; 1.25x larger after a failure.
    slots = max(16, int(2.2 * len(stored)) + 1)
    while slots < 1 << 27:
        probes = np.stack([(first * m1 + second) % slots, (second * m2 + first) % slots], axis=1)
        probes = np.where(probes == 0, probes[:, ::-1], probes)  # a pair never goes to slot 0
        table, dropped = _cuckoo(probes, slots)
        if not dropped and not (probes == 0).all(axis=1).any():
            break
        slots = int(slots * 1.25)
    else:
        raise InternalError(f"no export table holds the model's {len(stored)} word pairs")
    placed = table >= 0
    out_keys, out_rows = np.full(slots, EMPTY_KEY, np.int64), np.zeros(slots, np.int32)
    out_keys[placed] = first[table[placed]] * vocab + second[table[placed]]
    out_rows[placed] = rows[stored[table[placed]]]
    return {"slots": slots, "multipliers": (m1, m2), "keys": out_keys, "rows": out_rows}


def term_ids(ids: np.ndarray, stats: dict) -> np.ndarray:
    """numpy twin of TfidfLinear.term_ids: [texts, steps] -> [texts, 2 * steps - 1] (no pairs: the ids)."""
    ids = np.asarray(ids, np.int64)
    keys = stats.get("bigram_keys")
    if keys is None or not stats.get("bigrams_kept", keys.shape[1]):
        return ids
    first, second = ids[:, :-1], ids[:, 1:]
    found = np.zeros_like(first)
    for slot in probe_slots(first, second, keys.shape[1]):
        match = (keys[0][slot] == first) & (keys[1][slot] == second) & (found == 0)
        found = np.where(match, stats["bigram_rows"][slot], found)
    return np.concatenate([ids, found], axis=1)


def tfidf_matrix(ids: np.ndarray, stats: dict):
    """The features TfidfLinear weighs, as a scipy CSR matrix [texts, terms] (float64): sublinear
    TF-IDF, each row L2-normalised; what the linear SVM is solved on."""
    from scipy.sparse import csr_matrix

    idf = np.asarray(stats["idf"], np.float64)
    terms = term_ids(ids, stats)
    rows = np.repeat(np.arange(len(terms)), terms.shape[1])
    flat = terms.ravel()
    keep = idf[flat] > 0  # <PAD>, <START> and pairs outside the table weigh nothing
    counts = csr_matrix((np.ones(int(keep.sum())), (rows[keep], flat[keep])), shape=(len(terms), len(idf)))
    counts.sum_duplicates()
    counts.data = idf[counts.indices] * (1.0 + np.log(counts.data))
    norms = np.sqrt(np.asarray(counts.multiply(counts).sum(axis=1)).ravel())
    counts.data /= np.repeat(np.maximum(norms, 1e-12), np.diff(counts.indptr))
    return counts


C_GRID = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)  # LinearSVC's C, chosen on the validation split
MISSING_LABEL_SCORE = -1e3


def fit_linear_svm(ids: np.ndarray, y: np.ndarray, stats: dict, num_classes: int, class_weight: str | None = None,
                   validation: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """The linear path's weights solved exactly on the training texts: LinearSVC on their TF-IDF,
    scikit-learn's defaults (squared hinge, one class against the rest) with C from C_GRID chosen by
    validation accuracy (ties: the smaller C), or C=1 (scikit-learn's default) without a validation
    split. {"kernel" [terms, classes], "bias" [classes], "C", "validation_accuracy" per C}.

    Why not inside model.fit (#15): the SVM is convex, and Adam's minibatches stopped early by
    validation loss land short of its optimum (SMS, 3 seeds: 0.986 vs 0.991 for LinearSVC on the
    same features). Why choose C: no one C suits every corpus (Rotten Tomatoes, seed 0: 0.764 at
    C=1, 0.771 at the C=0.25 its validation split picks; SMS picks 2, R8 0.5, same test accuracy
    as C=1 there). A label training lacks gets zero weights and a bias of MISSING_LABEL_SCORE; two
    labels: one SVM, its score split as -s/2 and +s/2 so that the softmax sees the same difference."""
    from sklearn.svm import LinearSVC

    y = np.asarray(y).astype(int).ravel()
    terms = len(stats["idf"])
    kernel, bias = np.zeros((terms, num_classes), np.float32), np.zeros(num_classes, np.float32)
    present = np.unique(y)
    if len(present) < 2:
        return {"kernel": kernel, "bias": bias, "C": None, "validation_accuracy": {}}
    features = tfidf_matrix(ids, stats)
    fit = lambda c: LinearSVC(C=c, class_weight=class_weight, random_state=0).fit(features, y)  # noqa: E731
    accuracy, chosen = {}, None
    if validation is not None and len(validation[1]):
        x_val, y_val = tfidf_matrix(validation[0], stats), np.asarray(validation[1]).astype(int).ravel()
        for c in C_GRID:
            svm = fit(c)
            accuracy[f"{c:g}"] = float((svm.predict(x_val) == y_val).mean())
            if chosen is None or accuracy[f"{c:g}"] > accuracy[f"{chosen[0]:g}"]:
                chosen = (c, svm)
    c, svm = chosen if chosen else (1.0, fit(1.0))
    coef, intercept = svm.coef_, svm.intercept_
    if len(present) == 2:
        coef, intercept = np.concatenate([-coef, coef]) / 2, np.concatenate([-intercept, intercept]) / 2
    kernel[:, present] = coef.T
    bias[present] = intercept
    # A label training lacks scores below every other (one-vs-rest scores are often all negative).
    bias[np.setdiff1d(np.arange(num_classes), present)] = MISSING_LABEL_SCORE
    return {"kernel": kernel, "bias": bias, "C": c, "validation_accuracy": accuracy}


NORM_FLOOR = 1e-24  # idf^2 of <PAD> and <START> in the export graphs: see guarded_idf_sq


def guarded_idf_sq(idf: np.ndarray) -> np.ndarray:
    """idf^2 per term with <PAD> and <START> at NORM_FLOOR instead of 0, float32: what lets the export
    graphs divide by the norm without a max(norm, 1e-12) op. Every other term has idf >= 1 (smooth
    idf), so a row holding any word has a squared norm >= 1 that the floor does not move in float32;
    a row without words holds only <PAD>/<START> terms (and pairs outside the table, row 0: <PAD>),
    at least one, so its norm is >= 1e-12 and its score 0, as in Keras. Checked, not assumed: a
    layer whose statistics were never set (idf 1 everywhere) is an internal error here."""
    from kerasrnn.errors import InternalError

    idf = np.asarray(idf, np.float64)
    if np.any(idf[:FIRST_WORD_ID - 1] != 0) or np.any(idf[FIRST_WORD_ID - 1:] < 1):
        raise InternalError("the linear path's idf is not the training statistics' (<PAD>, <START> 0, words >= 1)")
    squared = idf * idf
    squared[:FIRST_WORD_ID - 1] = NORM_FLOOR
    return squared.astype(np.float32)


def folded_tables(w: dict, positions: int) -> dict:
    """The linear path's weights (model.linear_weights) folded for graphs that gather instead of
    compute, same sums as TfidfLinear up to float rounding:

    - rows [terms, classes + 1]: idf x the kernel row, then idf^2 (folded in float64);
    - counts [positions + 1, classes + 1]: for a term seen c times in its text, f(c) = (1 + ln c) / c
      in the class columns and g(c) = (1 + ln c)^2 / c in the last; row 0 is never read.
      sum over positions of counts[c_i] x rows[term_i] = [sum of weight_i x kernel row | norm^2];
    - pair_keys [slots] int64: each stored word pair of the model's table as first x vocab + second
      (-1: empty slot), for code that probes that table itself (the bench's C floor; the export
      graphs use their own tables); vocab: that multiplier (the vocabulary size)."""
    idf = np.asarray(w["idf"], np.float64)[:, None]
    rows = np.concatenate([idf * np.asarray(w["kernel"], np.float64), idf * idf], axis=1).astype(np.float32)
    c = np.arange(positions + 1, dtype=np.float64)
    c[0] = 1.0
    tf = 1.0 + np.log(c)
    counts = np.concatenate([np.repeat((tf / c)[:, None], rows.shape[1] - 1, axis=1), (tf * tf / c)[:, None]],
                            axis=1).astype(np.float32)
    out = {"rows": rows, "counts": counts}
    if w.get("keys") is not None:
        keys = np.asarray(w["keys"], np.int64)
        vocab = int(w["vocab_size"])
        out.update(vocab=vocab, pair_keys=np.where(keys[0] >= 0, keys[0] * vocab + keys[1], EMPTY_KEY))
    return out


@keras.saving.register_keras_serializable(package="kerasrnn")
class TfidfLinear(keras.layers.Layer):
    """ids [batch, steps] -> class scores [batch, classes]: a linear model over the text's TF-IDF.

    `terms` rows of kernel: the vocabulary, then the bigram vocabulary. The statistics (idf and the
    bigram table) are non-trainable weights, set from the training split by `set_statistics`."""

    def __init__(self, vocab_size: int, num_classes: int, terms: int, slots: int, l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.num_classes, self.terms, self.slots, self.l2 = vocab_size, num_classes, terms, slots, l2

    def build(self, input_shape):
        self.idf = self.add_weight(shape=(self.terms,), initializer="ones", trainable=False, name="idf")
        self.kernel = self.add_weight(shape=(self.terms, self.num_classes), initializer="zeros", name="kernel",
                                      regularizer=keras.regularizers.L2(self.l2) if self.l2 else None)
        self.bias = self.add_weight(shape=(self.num_classes,), initializer="zeros", name="bias")
        if self.terms > self.vocab_size:
            self.bigram_keys = self.add_weight(shape=(2, self.slots), initializer="zeros", dtype="int32",
                                               trainable=False, name="bigram_keys")
            self.bigram_rows = self.add_weight(shape=(self.slots,), initializer="zeros", dtype="int32",
                                               trainable=False, name="bigram_rows")

    def set_statistics(self, stats: dict) -> None:
        self.idf.assign(stats["idf"])
        if self.terms > self.vocab_size:
            self.bigram_keys.assign(stats["bigram_keys"])
            self.bigram_rows.assign(stats["bigram_rows"])

    def term_ids(self, ids):
        """[batch, steps] -> [batch, 2 * steps - 1]: the ids, then each adjacent pair's bigram row
        (0, which weighs nothing, for a pair outside the bigram vocabulary)."""
        if self.terms == self.vocab_size:
            return ids
        first, second = ids[:, :-1], ids[:, 1:]
        found = ops.zeros_like(first)
        for slot in probe_slots(first, second, self.slots, xp=ops):
            match = ops.logical_and(ops.equal(ops.take(self.bigram_keys[0], slot, axis=0), first),
                                    ops.equal(ops.take(self.bigram_keys[1], slot, axis=0), second))
            found = ops.where(ops.logical_and(match, ops.equal(found, 0)), ops.take(self.bigram_rows, slot, axis=0),
                              found)
        return ops.concatenate([ids, found], axis=1)

    def call(self, ids):
        terms = self.term_ids(ops.cast(ids, "int32"))
        same = ops.cast(ops.equal(ops.expand_dims(terms, 2), ops.expand_dims(terms, 1)), "float32")
        count = ops.sum(same, axis=2)  # c_i: occurrences of position i's term in the text (>= 1)
        weight = ops.take(self.idf, terms, axis=0) * (1.0 + ops.log(count)) / count
        norm = ops.sqrt(ops.sum(weight * weight * count, axis=1, keepdims=True))
        weight = weight / ops.maximum(norm, 1e-12)  # a text without words scores the bias alone
        rows = ops.take(self.kernel, terms, axis=0)
        return ops.sum(rows * ops.expand_dims(weight, -1), axis=1) + self.bias

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "num_classes": self.num_classes,
                "terms": self.terms, "slots": self.slots, "l2": self.l2}
