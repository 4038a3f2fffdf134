"""Paired batch-1 timing of two model files, for a ratio between them (bench.py --baseline-run).

The main table times every format in long blocks (a fifth of its calls each), so two files compared
there are timed seconds apart, with a dozen other runtimes' tables through the caches in between:
on this 2-core VM the ratio of two such medians moved from 1.28 to 1.78 between runs of the same
files. Here the two files alternate in short blocks, which each see the same spell of the machine.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

ROUNDS, CALLS = 150, 20


def paired_ratio(path: Path, ids: np.ndarray, base_path: Path, base_ids: np.ndarray, rounds: int = ROUNDS,
                 calls: int = CALLS) -> dict:
    """Batch-1 latency of `path` over `base_path` (each on its own ids, one thread): `rounds` blocks of
    `calls` texts per file, the files' order swapped every block; the ratio is the median over blocks
    of (the block's median latency of one file / the other's), with its quartiles."""
    from kerasrnn.runtimes import open_model

    runs = [(open_model(path, threads=1).predict_ids, ids), (open_model(base_path, threads=1).predict_ids, base_ids)]
    for call, rows in runs:
        for row in rows[:50]:
            call(row[None])  # warm-up
    medians = np.zeros((rounds, 2))
    for r in range(rounds):
        for which in ((0, 1) if r % 2 == 0 else (1, 0)):
            call, rows = runs[which]
            times = []
            for k in range(r * calls, (r + 1) * calls):
                x = rows[k % len(rows)][None]
                start = time.perf_counter()
                call(x)
                times.append(time.perf_counter() - start)
            medians[r, which] = np.median(times)
    ratios = medians[:, 0] / medians[:, 1]
    return {"ratio": float(np.median(ratios)), "quartiles": [float(q) for q in np.percentile(ratios, [25, 75])],
            "median_us": float(np.median(medians[:, 0]) * 1e6), "baseline_median_us": float(np.median(medians[:, 1]) * 1e6),
            "rounds": rounds, "calls": calls}
