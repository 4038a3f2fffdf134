"""The max_len rule, one for both data paths: the 95th percentile of the training texts' token
counts (plus <START>), rounded up, within [8, 256].

The counts are kept as a histogram (texts per count), which a streamed corpus builds in one pass
with bounded memory and an in-memory one builds from its list; the percentile is numpy's default
(linear interpolation between the two nearest counts), computed from the histogram with numpy's own
arithmetic, so both paths give exactly what `np.percentile` gives on the full list of counts.
"""
from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable

import numpy as np

from kerasrnn.tokenizer import DELIM_REGEX, iter_tokens

PERCENTILE = 95.0
CAP = 256   # the longest max_len derived; also where token counting stops
FLOOR = 8


def empty_histogram() -> np.ndarray:
    """Texts per length, for lengths 0 .. CAP + 1 (a text longer than CAP tokens counts as CAP + 1)."""
    return np.zeros(CAP + 2, np.int64)


def length_of(token_count: int) -> int:
    """The histogram bin of a text of `token_count` tokens (counted up to CAP): with <START>."""
    return min(token_count, CAP) + 1


def histogram(texts: Iterable[str], delim_regex: str = DELIM_REGEX) -> np.ndarray:
    split = re.compile(delim_regex)
    counts = empty_histogram()
    for text in texts:
        counts[length_of(sum(1 for _ in itertools.islice(iter_tokens(split, text), CAP)))] += 1
    return counts


def percentile_of_histogram(counts: np.ndarray, percentile: float = PERCENTILE) -> float:
    """np.percentile(values, percentile) (method 'linear') of the values that `counts` tallies
    (counts[v] = how many times v occurs), without expanding them into a list."""
    n = int(counts.sum())
    if n == 0:
        raise ValueError("no lengths to take a percentile of")
    cumulative = np.cumsum(counts)

    def sorted_value(k: int) -> int:  # the k-th smallest value (0-based)
        return int(np.searchsorted(cumulative, k + 1))

    # As numpy computes it: virtual index (n - 1) * q, its floor and the next index (clipped), and
    # the lerp that counts from the upper bound when the weight is >= 0.5.
    virtual = (n - 1) * (percentile / 100)
    below = math.floor(virtual)
    above = min(below + 1, n - 1)
    weight = virtual - below
    a, b = sorted_value(below), sorted_value(above)
    diff = b - a
    return float(b - diff * (1 - weight)) if weight >= 0.5 else float(a + diff * weight)


def from_histogram(counts: np.ndarray) -> int:
    """The derived max_len of texts whose lengths (with <START>) `counts` tallies."""
    return int(min(CAP, max(FLOOR, math.ceil(percentile_of_histogram(counts)))))


def derive(texts: Iterable[str], delim_regex: str = DELIM_REGEX) -> int:
    """The derived max_len of in-memory texts."""
    return from_histogram(histogram(texts, delim_regex))
