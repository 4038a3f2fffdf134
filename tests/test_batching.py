"""Batching, in process and fast: trimming, buckets, the numpy / tf.data / streamed pipelines and
the per-epoch shuffle seed that makes a resumed run see the batches of an uninterrupted one."""
from __future__ import annotations

import numpy as np
import pytest

from kerasrnn.batching import (epoch_seed, make_dataset, numpy_batches, steps_per_epoch, trim_for_backend,
                               trim_lengths, trimmed_width)


def ragged_ids(rows: int, width: int, seed: int) -> np.ndarray:
    """Post-padded ids of random lengths 1..119."""
    rng = np.random.default_rng(seed)
    x = np.zeros((rows, width), np.int32)
    for i, n in enumerate(rng.integers(1, 120, rows)):
        x[i, :n] = rng.integers(3, 50, n)
    return x


def test_trim_lengths_and_the_width_a_batch_is_cut_to():
    assert trim_lengths(35, "buckets") == [35] and trim_lengths(200, "buckets") == [32, 64, 200]
    assert trim_lengths(300, "buckets") == [32, 64, 128, 300]
    assert trim_lengths(5, "exact") == [1, 2, 3, 4, 5] and trim_lengths(7, None) == [7]
    ids = np.zeros((3, 200), np.int32)
    ids[0, :10], ids[1, :40] = 5, 5
    assert trimmed_width(ids, [32, 64, 200]) == 64  # the first bucket that holds the longest text (40)
    assert trimmed_width(ids, list(range(1, 201))) == 40
    ids[2, :] = 5
    assert trimmed_width(ids, [32, 64, 200]) == 200
    assert trim_for_backend("jax") == "buckets" and trim_for_backend("tensorflow") == "exact"
    assert trim_for_backend("torch") == "exact"
    assert steps_per_epoch(100, 16) == 7 and steps_per_epoch(96, 16) == 6


def test_epoch_seed_differs_per_epoch_and_per_seed():
    seeds = {epoch_seed(s, e) for s in range(5) for e in range(20)}
    assert len(seeds) == 100
    assert epoch_seed(7, 3) == epoch_seed(7, 3)


def test_batches_are_cut_to_their_longest_text_or_its_bucket():
    x = ragged_ids(200, 200, 0)
    y = np.arange(200, dtype=np.int32)
    for mode, allowed in (("exact", set(range(1, 201))), ("buckets", {32, 64, 200})):
        for bx, by in make_dataset(x, y, 16, False, 0, trim=mode):
            bx, by = bx.numpy(), by.numpy()
            longest = int((x[by] != 0).sum(1).max())
            width = bx.shape[1]
            assert width in allowed and width >= longest and (mode == "buckets" or width == longest)
            if mode == "buckets" and len(by) < 16:  # the short last batch keeps the full length
                assert width == 200
            assert np.array_equal(bx, x[by][:, :width]) and not x[by][:, width:].any()


def test_numpy_batches_cut_like_tf_data_and_resume_at_any_epoch():
    x = ragged_ids(100, 200, 1)
    y = np.arange(100, dtype=np.int32)
    weights = np.linspace(0.5, 1.5, 100).astype(np.float32)
    run = list(numpy_batches(x, y, 16, 7, weights, 0, 3, "buckets"))
    assert len(run) == 3 * 7  # 100 rows in batches of 16, three epochs
    for epoch in range(3):
        seen = np.concatenate([by for _, by, _ in run[epoch * 7:(epoch + 1) * 7]])
        assert sorted(seen) == list(range(100))  # every row once per epoch
    orders = [np.concatenate([by for _, by, _ in run[e * 7:(e + 1) * 7]]) for e in range(3)]
    assert not np.array_equal(orders[0], orders[1])  # reshuffled each epoch
    for bx, by, bw in run:
        longest, width = int((x[by] != 0).sum(1).max()), bx.shape[1]
        assert width in {32, 64, 200} and width >= longest
        assert len(by) == 16 or width == 200  # the short last batch keeps the full length
        assert np.array_equal(bx, x[by][:, :width]) and not x[by][:, width:].any()
        assert np.array_equal(bw, weights[by])
    resumed = list(numpy_batches(x, y, 16, 7, weights, 2, 3, "buckets"))
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(resumed, run[14:], strict=True))
    # the order of an epoch is the permutation its epoch_seed draws, whatever came before
    assert np.array_equal(orders[1], np.random.default_rng(epoch_seed(7, 1)).permutation(100))


def test_tf_data_resumes_at_any_epoch_with_the_same_order():
    x = ragged_ids(50, 128, 2)
    y = np.arange(50, dtype=np.int32)
    full = [by.numpy() for _, by in make_dataset(x, y, 10, True, 3, first_epoch=0, epochs=3, trim="exact")]
    resumed = [by.numpy() for _, by in make_dataset(x, y, 10, True, 3, first_epoch=1, epochs=3, trim="exact")]
    assert len(full) == 15 and len(resumed) == 10
    assert all(np.array_equal(a, b) for a, b in zip(resumed, full[5:], strict=True))
    assert not np.array_equal(np.concatenate(full[:5]), np.concatenate(full[5:10]))


def test_streamed_batches_cut_like_in_memory_and_repeat_per_seed(tiny_csv):
    from kerasrnn.stream import Corpus
    from kerasrnn.tokenizer import Tokenizer

    corpus = Corpus([tiny_csv])
    scan = corpus.scan(500, 64, count_cap=10_000)
    tokenizer = Tokenizer(scan["words"], scan["max_len"])
    index = {lab: i for i, lab in enumerate(scan["labels"])}
    lengths = trim_lengths(64, "buckets")

    def epoch(e):
        return list(corpus.batches("train", tokenizer, index, 32, epoch_seed(0, e), lengths))

    first, again, second = epoch(0), epoch(0), epoch(1)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, second))
    assert sum(len(b[1]) for b in first) == corpus.sizes["train"]
    for ids, _ in first:
        assert ids.shape[1] == (trimmed_width(ids, lengths) if len(ids) == 32 else 64)


def test_fit_inputs_for_data_in_memory():
    from kerasrnn.batching import fit_inputs
    from kerasrnn.prepare import Arrays, Prepared
    from kerasrnn.tokenizer import Tokenizer

    x = ragged_ids(40, 128, 3)
    y = np.arange(40, dtype=np.int32) % 2
    arrays = Arrays(x, y, x[:8], y[:8], x[:4], y[:4], ["t"] * 4, ["t"] * 40)
    data = Prepared(Tokenizer(["a"], 128), ["a", "b"], {"train": 40, "validation": 8, "test": 4},
                    np.array([20.0, 20.0]), arrays=arrays)
    inputs = fit_inputs(data, 16, 0, 0, 2, "buckets", np.array([1.0, 3.0], np.float32))
    assert inputs["steps_per_epoch"] == 3
    batches = list(inputs["x"])
    assert len(batches) == 6 and all(len(b) == 3 for b in batches)  # ids, labels, weights
    for bx, by, bw in batches:
        assert np.array_equal(bw, np.where(by == 1, 3.0, 1.0))
    if "validation_batch_size" in inputs:  # numpy batches (JAX, torch): arrays at max_len
        assert inputs["validation_data"][0].shape == (8, 128)


@pytest.mark.parametrize("n", [1, 2, 3, 19, 20, 21, 100, 997])
def test_bucket_cut_never_drops_a_token(n):
    x = ragged_ids(n, 200, n)
    for bx, by in numpy_batches(x, np.arange(n, dtype=np.int32), 8, 0, None, 0, 1, "buckets"):
        assert not x[by][:, bx.shape[1]:].any()
