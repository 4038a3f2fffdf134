"""The linear baseline each run reports: trained on the run's training texts, scored on its test texts."""
from __future__ import annotations

import numpy as np

from kerasrnn.baseline import linear_baseline

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda".split()


def _texts(rng, n, marker):
    texts, labels = [], []
    for i in range(n):
        words = list(rng.choice(WORDS, 6))
        label = i % 2
        if label:
            words.insert(int(rng.integers(0, 6)), marker)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, np.array(labels)


def test_baseline_learns_a_word_rule_and_scores_the_test_texts():
    rng = np.random.default_rng(0)
    train, y_train = _texts(rng, 200, "prize")
    test, y_test = _texts(rng, 100, "prize")
    got = linear_baseline(train, y_train, test, y_test, ["ham", "spam"])
    assert got["accuracy"] == 1.0 and got["macro_f1"] == 1.0 and got["seconds"] >= 0
    # The same test texts with the labels the rule does not give: the score follows the test labels.
    flipped = linear_baseline(train, y_train, test, 1 - y_test, ["ham", "spam"])
    assert flipped["accuracy"] == 0.0


def test_baseline_is_skipped_with_a_reason_for_one_class():
    got = linear_baseline(["a b", "c d"], np.array([0, 0]), ["a"], np.array([0]), ["ham", "spam"])
    assert "accuracy" not in got and "one class" in got["skipped"]
