"""Smoke tests for the benchmark scripts (timings are never asserted: they are the benchmarks' job)."""
from __future__ import annotations

import ast
import json
import shutil
import sys

import numpy as np
import pytest

from conftest import REPO, run_cli

sys.path.insert(0, str(REPO / "tools"))  # the benchmarks package lives in the checkout, not in kerasrnn


@pytest.mark.slow
def test_bench_quick_writes_every_format(tmp_path):
    out = tmp_path / "bench"
    proc = run_cli(["tools/bench.py", "--synthetic", "600,24,8,8", "--quick", "--out", str(out)], timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads((out / "bench.json").read_text())
    formats = {row["format"] for row in result["inference"]}
    assert {"Keras (tf.function)", "SavedModel", "ONNX native RNN (ours)", "ONNX tf2onnx Loop (stock)",
            "TFLite stepwise float32", "TFLite fused-RNN float32", "TFLite unrolled float32 (naive)",
            "TFLite int8"} <= formats
    for row in result["inference"]:
        assert row["batch1"]["median_us"] > 0 and row["batch64_samples_per_s"] > 0
    if any(shutil.which(c) for c in ("cc", "gcc", "clang")):  # the floor row, and every row's multiple of it
        assert result["floor"]["name"] in formats and result["floor"]["max_abs_diff_vs_keras"] <= 1e-4
        assert all(row["floor_multiple"]["batch1"] > 0 for row in result["inference"])
        assert "x floor, batch 1" in (out / "bench.md").read_text()
    assert set(result["ratios"]) == {"ONNX batch 1: stock Loop / ours", "ONNX batch 64 throughput: ours / stock",
                                     "TFLite batch 1: unrolled / ours", "SavedModel batch 1: ours / ONNX ours",
                                     "SavedModel batch 1: Keras's graph / ours"}
    assert result["tflite_graph"] in ("stepwise", "fused")
    trainers = result["training"]["trainers"]
    for name in ("Keras on JAX (kerasrnn.train default)", "Keras on TensorFlow"):
        assert trainers[name]["samples_per_s"] > 0, trainers[name]
    assert trainers["Keras on JAX (kerasrnn.train default)"]["backend"] == "jax"
    assert trainers["Keras on TensorFlow"]["trimmed_batches"] == "exact"
    assert (out / "bench.md").read_text().count("|") > 20
    assert (out / "bench.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_bench_runs_on_a_trained_run_with_the_default_dropout(tmp_path, tiny_run):
    # the tiny run trains with the defaults' dropout, which the SavedModel cannot be traced with
    assert json.loads((tiny_run / "config.json").read_text())["dropout"] > 0
    out = tmp_path / "bench"
    proc = run_cli(["tools/bench.py", "--run", str(tiny_run), "--quick", "--no-train", "--out", str(out),
                    "--baseline-run", str(tiny_run)], timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads((out / "bench.json").read_text())
    formats = {row["format"] for row in result["inference"]}
    assert {"SavedModel", "TFLite dynamic", "TFLite int8", "baseline run ONNX", "baseline run TFLite"} <= formats
    for fmt in ("ONNX", "TFLite"):  # the other run's files are timed in the same rounds and compared
        assert result["ratios"][f"{fmt} batch 1: this run / baseline run"] > 0
        paired = result["paired"][fmt]  # and again in alternating blocks, each block a ratio
        assert paired["rounds"] == 10 and paired["median_us"] > 0 and paired["baseline_median_us"] > 0
        assert result["ratios"][f"{fmt} batch 1: this run / baseline run, alternating blocks"] == paired["ratio"]


@pytest.mark.slow
def test_gpu_training_script_runs_without_tensorflow(tmp_path):
    # Block TensorFlow: the script must work on a JAX-only GPU host.
    script = ("import sys, runpy; sys.modules['tensorflow'] = None;"
              "sys.argv = ['train_gpu.py', '--sizes', '300,12,8,8', '--batches', '32', '--examples', '256',"
              f"'--epochs', '2', '--out', {str(tmp_path / 'g.json')!r}];"
              "runpy.run_path('tools/train_gpu.py', run_name='__main__')")
    proc = run_cli(["-c", script], env={"KERAS_BACKEND": "jax"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "g.json").read_text())
    assert result["backend"] == "jax" and result["runs"][0]["keras_samples_per_s"] > 0


@pytest.mark.slow
def test_benchmark_accuracy_smoke(tmp_path, shared_datasets):
    out = tmp_path / "acc"
    proc = run_cli(["tools/benchmark_accuracy.py", "--datasets", str(shared_datasets), "--only", "sms_spam",
                    "--seeds", "0,1", "--out", str(out), "--set", "epochs=1", "--set", "units=8",
                    "--set", "embed_dim=8", "--set", "max_len=16", "--set", "vocab_size=500"], timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "accuracy.json").read_text())
    sms = result["datasets"]["sms_spam"]
    assert [r["seed"] for r in sms["runs"]] == [0, 1]
    for model in ("kerasrnn", "tfidf_linearsvc", "word_average"):  # trained side by side on the same split
        assert 0 < sms[model]["accuracy_mean"] <= 1, model
        buckets = sms["runs"][0][model]["by_length"]
        assert sum(b["n"] for b in buckets.values()) == sms["runs"][0]["test_texts"], model
    # The linear baseline is deterministic on one split: the same figure for both seeds.
    assert sms["tfidf_linearsvc"]["accuracy_sd"] == 0.0
    table = (out / "accuracy.md").read_text()
    assert "| sms_spam | TF-IDF + LinearSVC |" in table and "| sms_spam | word average |" in table
    # what the recurrence adds: the model's own linear path alone, and the RNN weight chosen per seed
    for run in sms["runs"]:
        assert 0 < run["paths"]["linear_path_accuracy"] <= 1 and run["paths"]["rnn_weight"] >= 0
    assert "| sms_spam | " in table.split("What the recurrence adds")[1]


def test_benchmarks_are_not_in_the_package_and_use_only_public_names():
    assert not (REPO / "kerasrnn" / "bench.py").exists() and not (REPO / "kerasrnn" / "accuracy_bench.py").exists()
    for path in (REPO / "tools").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kerasrnn"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private and "._" not in node.module, f"{path.name}: {node.module} {private}"


def test_torch_reference_pools_through_kerasrnn_pooling():
    torch = pytest.importorskip("torch")
    from benchmarks.torch_reference import _poolings, torch_reference
    from kerasrnn import pooling

    assert set(_poolings(torch, 1)) == set(pooling.POOLINGS)
    rng = np.random.default_rng(0)
    x = np.zeros((24, 10), np.int32)
    for i, n in enumerate(rng.integers(1, 10, 24)):
        x[i, :n] = rng.integers(3, 30, n)
    y = (np.arange(24) % 2).astype(np.int32)
    config = {"vocab_size": 30, "embed_dim": 4, "units": 4, "num_layers": 1, "num_classes": 2}
    for name in pooling.POOLINGS:
        for bidirectional in (False, True):
            row = torch_reference(torch, x, y, {**config, "pooling": name, "bidirectional": bidirectional}, 1, 8)
            assert row["torch_samples_per_s"] > 0
    with pytest.raises(ValueError, match="pooling must be one of"):
        torch_reference(torch, x, y, {**config, "pooling": "median"}, 1, 8)


@pytest.mark.parametrize("pooling", ["max", "mean", "last"])
@pytest.mark.parametrize("bigrams", [0, 20])
def test_the_c_floor_answers_as_keras(tmp_path, pooling, bigrams):
    """The floor row times the model's own forward pass: the C loop gives Keras's probabilities (linear
    TF-IDF path with and without word pairs, repeated words, every pooling, an id out of range)."""
    if not any(shutil.which(c) for c in ("cc", "gcc", "clang")):
        pytest.skip("no C compiler: bench.py shows the floor row as skipped")
    import keras

    from benchmarks.floor import build_floor
    from kerasrnn.linear import term_statistics
    from kerasrnn.model import build_model

    rng = np.random.default_rng(3)
    train = rng.integers(3, 9, (100, 10)).astype(np.int32)
    stats = term_statistics([train], 40, bigrams)
    config = {"vocab_size": 40, "num_classes": 3, "max_len": 10, "embed_dim": 12, "units": 5, "num_layers": 1,
              "dropout": 0.0, "pooling": pooling, "bidirectional": False, "linear": "tfidf", "bigrams": bigrams,
              "linear_terms": len(stats["idf"]), "linear_slots": stats["slots"]}
    keras.utils.set_random_seed(0)
    model = build_model(**config)
    model.set_weights([w + rng.normal(0, 0.7, w.shape).astype(np.float32) if w.dtype.kind == "f" else w
                       for w in model.get_weights()])
    model.get_layer("linear").set_statistics(stats)
    ids = np.zeros((8, 10), np.int32)
    for row, length in enumerate([1, 2, 3, 5, 6, 8, 9, 10]):
        ids[row, :length] = np.r_[1, rng.integers(3, 9 if row % 2 else 40, length - 1)]
    floor, reason = build_floor(model, config, tmp_path)
    assert reason is None
    # Loading it leaves this process's float arithmetic alone (no flush-to-zero from -ffast-math).
    assert np.float32(1e-38) * np.float32(0.01) > 0
    assert np.abs(floor.predict_ids(ids) - model.predict(ids, verbose=0)).max() <= 1e-5
    wild = ids[:1].copy()
    wild[0, 1] = 1000  # out of range: <UNKNOWN>, as the ONNX graph reads it
    unknown = ids[:1].copy()
    unknown[0, 1] = 2
    assert np.abs(floor.predict_ids(wild) - model.predict(unknown, verbose=0)).max() <= 1e-5
    assert build_floor(model, {**config, "bidirectional": True}, tmp_path)[0] is None


def test_long_texts_fill_a_quarter_to_all_of_max_len(sms_rows):
    from benchmarks.inference import long_texts
    from kerasrnn.tokenizer import Tokenizer, build_vocabulary

    texts = [t for t, _ in sms_rows[:500]]
    tokenizer = Tokenizer(build_vocabulary(texts, 2000), 120)
    filled = ((tokenizer.encode(long_texts(texts, tokenizer, n=200)) != 0).sum(1) - 1) / 119
    assert filled.min() >= 0.2 and filled.max() == 1.0 and 0.5 <= filled.mean() <= 0.8
    assert ((tokenizer.encode(texts) != 0).sum(1) - 1).mean() / 119 < 0.2  # the texts as they are: short


@pytest.mark.slow
def test_bench_scaling_reports_each_worker_and_the_projection(tmp_path, tiny_csv):
    out = tmp_path / "scaling"
    proc = run_cli(["tools/bench_scaling.py", "--data", str(tiny_csv), "--batch-sizes", "32", "--epochs", "2",
                    "--train-args", "--units 8 --embed-dim 8 --max-len 24", "--out", str(out)], timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads((out / "scaling.json").read_text())
    assert [r["run"] for r in result["runs"]] == ["one process", "one process, 1 core, b/2", "two workers"]
    two = result["runs"][-1]
    assert two["rows_per_step_per_worker"] == 16 and len(two["rows_read_per_worker_per_epoch"]) == 2
    assert sum(two["rows_read_per_worker_per_epoch"]) == pytest.approx(two["training_rows"], abs=1)
    assert result["allreduce_ms"] > 0 and result["gradient_floats"] > 0
    assert "projected speed-up" in (out / "scaling.md").read_text()
