"""Benchmarks (tools/bench.py): training samples/s against a PyTorch reference, inference latency of every format.

`python tools/bench.py [--run DIR | --synthetic 20000,200,64,64] [--quick]` measures, in one run:

- training: Keras model.fit samples/s on the SMS data, on JAX and on TensorFlow, against PyTorch
  nn.RNN on the same token ids, sizes, pooling, batch and epochs, masked correctly with packed
  sequences; each trainer in its own process pinned to one core (PyTorch skipped if missing);
- inference, one thread each: Keras, SavedModel, ONNX Runtime (tf2onnx Loop export and our native
  RNN export), LiteRT (stepwise, fused and unrolled float32, float16, dynamic, int8): latency at batch 1
  (median, p99) and throughput at batch 64, on real texts; file sizes; memory added by each; and a
  floor row, the same forward pass as a C loop compiled here (benchmarks.floor), with every format's
  latency as a multiple of it.

Writes bench.json, bench.md and bench.png. A benchmark, not a test: a smoke test runs --quick.
"""
from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.floor import NAME as FLOOR
from benchmarks.paired import paired_ratio
from benchmarks.training import bench_training


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _stats(times: list[float]) -> dict:
    t = np.asarray(times) * 1e6
    return {"median_us": float(np.median(t)), "p99_us": float(np.percentile(t, 99)), "n": len(t)}


def _synthetic(spec: str):
    """A model of the given sizes with its initial (random) weights, and a tokenizer from SMS texts."""
    from kerasrnn.data import load_dataset
    from kerasrnn.model import build_model
    from kerasrnn.options import DEFAULTS
    from kerasrnn.tokenizer import Tokenizer, build_vocabulary

    vocab, max_len, embed, units = (int(v) for v in spec.split(","))
    data = load_dataset(None)
    words = build_vocabulary(data.texts, vocab)
    # SMS has fewer distinct words than a large vocabulary: pad with unused entries so that the
    # embedding (and file sizes) have the requested number of rows.
    words += [f"unused_{i}" for i in range(vocab - 3 - len(words))]
    tokenizer = Tokenizer(words, max_len)
    config = {"vocab_size": tokenizer.vocab_size, "num_classes": 2, "max_len": max_len, "embed_dim": embed,
              "units": units, "num_layers": 1, "dropout": 0.0, "pooling": DEFAULTS["pooling"],
              "bidirectional": DEFAULTS["bidirectional"]}
    import keras

    keras.utils.set_random_seed(0)
    return build_model(**config), config, tokenizer, data.texts, ["ham", "spam"]


SAVEDMODEL_KERAS = "SavedModel, Keras's graph (stock)"
TFLITE_ROWS = {"stepwise": "TFLite stepwise float32", "fused": "TFLite fused-RNN float32",
               "unroll": "TFLite unrolled float32 (naive)"}


def _export_all(model, config, tokenizer, labels, texts, folder: Path, log) -> dict[str, Path]:
    """Every file the benchmark compares, from the same weights."""
    from kerasrnn.export.onnx_export import export_onnx
    from kerasrnn.export.savedmodel import export_savedmodel
    from kerasrnn.export.tflite import export_tflite
    from kerasrnn.model import without_dropout

    files = {}
    log("exporting SavedModel (hand-built graph, Keras's graph) ...")
    # as `export` does: without dropout, which a model that falls back to Keras's graph cannot be traced with
    export_savedmodel(without_dropout(model, config), tokenizer, labels, folder / "savedmodel", config)
    files["SavedModel"] = folder / "savedmodel"
    # as `export` did before #17: Keras's traced graph (a model with dropout cannot be traced with it)
    export_savedmodel(without_dropout(model, config), tokenizer, labels, folder / "savedmodel_keras")
    files[SAVEDMODEL_KERAS] = folder / "savedmodel_keras"
    log("exporting ONNX (native RNN, tf2onnx Loop) ...")
    for impl, name in (("rnn", "ONNX native RNN (ours)"), ("loop", "ONNX tf2onnx Loop (stock)")):
        export_onnx(model, config, tokenizer, labels, folder / f"{impl}.onnx", impl, "bench")
        files[name] = folder / f"{impl}.onnx"
    log("exporting TFLite (stepwise, fused, unrolled, quantized) ...")
    export_tflite(model, config, tokenizer, labels, folder / "tfl", ["float16", "dynamic", "int8"], texts, "bench")
    for impl in ("stepwise", "fused", "unroll"):
        export_tflite(model, config, tokenizer, labels, folder / impl, [], texts, "bench", impl=impl)
        files[TFLITE_ROWS[impl]] = folder / impl / "model.tflite"
    for v in ("float16", "dynamic", "int8"):
        files[f"TFLite {v}"] = folder / f"tfl/model_{v}.tflite"
    return files


BASELINE = "baseline run"


def _export_baseline(run: str, texts: list[str], folder: Path, files: dict, log) -> dict[str, np.ndarray]:
    """The ONNX file and the float32 .tflite `tools/export.py` writes for another run (its default
    graphs), added to `files`; returns the ids each reads (the same texts, its own tokenizer)."""
    from kerasrnn.export.onnx_export import export_onnx
    from kerasrnn.export.tflite import export_tflite
    from kerasrnn.run import RunInfo

    info = RunInfo.load(run)
    model, config, tokenizer = info.load_model(), info.config, info.tokenizer
    log(f"exporting the baseline run {info.path} (ONNX, TFLite) ...")
    export_onnx(model, config, tokenizer, info.labels, folder / "model.onnx", "rnn", "bench")
    export_tflite(model, config, tokenizer, info.labels, folder / "tflite", [], texts[:200], "bench")
    files[f"{BASELINE} ONNX"] = folder / "model.onnx"
    files[f"{BASELINE} TFLite"] = folder / "tflite" / "model.tflite"
    ids = tokenizer.encode(texts[:512])
    return {f"{BASELINE} ONNX": ids, f"{BASELINE} TFLite": ids}


ROUNDS = 5  # the calls of every format are spread over rounds, formats interleaved, so that a slow
# spell of a shared machine hits them all alike rather than whichever format ran through it


def bench_inference(model, files: dict[str, Path], ids: np.ndarray, reps1: int, reps64: int, log,
                    own_ids: dict[str, np.ndarray] | None = None, floor=None) -> list[dict]:
    """Latency of every file; `own_ids`: the ids a file reads instead of `ids` (another run's
    tokenizer: the same texts, row for row); `floor`: the C loop of benchmarks.floor, timed alike."""
    import tensorflow as tf

    from kerasrnn.fileio import path_size
    from kerasrnn.runtimes import open_model

    keras_fn = tf.function(lambda x: model(x, training=False))
    calls, rss = {}, {}
    sources = [("Keras (tf.function)", None)] + ([(FLOOR, None)] if floor else []) + list(files.items())
    for name, path in sources:
        before = _rss_mb()
        if name == FLOOR:
            calls[name] = floor.predict_ids
        elif path is None:
            calls[name] = lambda x: keras_fn(tf.constant(x)).numpy()  # noqa: E731
        else:
            calls[name] = open_model(path, threads=1).predict_ids
        for row in (own_ids or {}).get(name, ids)[:50]:
            calls[name](row[None])  # warm-up: first calls allocate, trace and fill caches
        rss[name] = round(_rss_mb() - before, 1)
    t1 = {name: [] for name in calls}
    t64 = {name: [] for name in calls}
    for r in range(ROUNDS):
        for name, call in calls.items():
            rows = (own_ids or {}).get(name, ids)
            for k in range(r * reps1 // ROUNDS, (r + 1) * reps1 // ROUNDS):
                x = rows[k % len(rows)][None]
                start = time.perf_counter()
                call(x)
                t1[name].append(time.perf_counter() - start)
            for k in range(r * reps64 // ROUNDS, (r + 1) * reps64 // ROUNDS):
                x = np.take(rows, np.arange(k * 64, k * 64 + 64) % len(rows), axis=0)
                start = time.perf_counter()
                call(x)
                t64[name].append(time.perf_counter() - start)
    rows = []
    for name in calls:
        path = files.get(name)
        row = {"format": name, "batch1": _stats(t1[name]), "batch64_samples_per_s": float(64 / np.median(t64[name])),
               "size_bytes": path_size(path) if path is not None else None, "rss_added_mb": rss[name]}
        rows.append(row)
        log(f"  {name:32} batch1 {row['batch1']['median_us']:9.1f} us (p99 {row['batch1']['p99_us']:9.1f})"
            f"  batch64 {row['batch64_samples_per_s']:9.0f}/s")
    return rows

def _floor(model, config: dict, ids: np.ndarray, workdir: Path, result: dict, log):
    """The C floor (benchmarks.floor), checked against Keras on the benchmark's texts; None with the
    reason in result["floor"] when there is no compiler, the model is outside its scope, or its
    answers differ (then its time would not be this model's)."""
    from benchmarks.floor import build_floor

    floor, reason = build_floor(model, config, workdir)
    if floor is not None:
        gap = float(np.abs(floor.predict_ids(ids) - model.predict(ids, batch_size=256, verbose=0)).max())
        if gap > 1e-4:
            floor, reason = None, f"its answers differ from Keras's by {gap:.2g}"
        result["floor"] = {"name": FLOOR, "max_abs_diff_vs_keras": gap}
    if floor is None:
        result["floor"] = {"name": FLOOR, "skipped": reason}
        log(f"no floor row: {reason}")
    return floor


def write_outputs(result: dict, out: Path) -> None:
    from kerasrnn.fileio import write_json_atomic, write_text_atomic

    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "bench.json", result)
    write_text_atomic(out / "bench.md", to_markdown(result))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["inference"]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    ax.barh([r["format"] for r in rows], [r["batch1"]["median_us"] for r in rows])
    ax.set_xlabel("latency at batch 1, one thread (µs, median)")
    ax.invert_yaxis()
    ax.set_title(result["model"]["description"])
    fig.tight_layout()
    fig.savefig(out / "bench.png", dpi=100)
    plt.close(fig)


def to_markdown(result: dict) -> str:
    m = result["model"]
    floor = result.get("floor", {})
    lines = [f"Model: {m['description']}; machine: {result['machine']}.", "",
             "| format | batch 1 median (µs) | batch 1 p99 (µs) | batch 64 (samples/s) | x floor, batch 1 | "
             "x floor, batch 64 | size (bytes) | RSS added (MB) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["inference"]:
        size = f"{r['size_bytes']:,}" if r["size_bytes"] else "-"
        multiple = r.get("floor_multiple")
        times = f"{multiple['batch1']:.1f} | {multiple['batch64']:.1f}" if multiple else "- | -"
        lines.append(f"| {r['format']} | {r['batch1']['median_us']:.1f} | {r['batch1']['p99_us']:.1f} | "
                     f"{r['batch64_samples_per_s']:,.0f} | {times} | {size} | {r['rss_added_mb']} |")
    if "skipped" in floor:
        lines += ["", f"No floor row: {floor['skipped']}."]
    elif floor:
        lines += ["", f"Floor: the same forward pass as a C loop built here, called through ctypes like the "
                      f"runtimes (max |Δp| vs Keras {floor['max_abs_diff_vs_keras']:.1g}); x floor: latency over "
                      "the floor's at batch 1, the floor's throughput over the format's at batch 64."]
    ratios = result.get("ratios", {})
    if ratios:
        lines += ["", f"Ours for TFLite: the {result['tflite_graph']} graph, which `tools/export.py` writes for "
                      f"this model (texts fill {result['mean_real_tokens']:.1f} of {m['max_len']} steps on average).",
                  "", "| ratio | value |", "| --- | ---: |"]
        lines += [f"| {k} | {v:.2f}x |" for k, v in ratios.items()]
    t = result.get("training")
    if t:
        lines += ["", f"Training: {t['examples']} SMS texts ({t['mean_real_tokens']:.1f} real tokens on average), "
                      f"batch {t['batch_size']}, {t['pooling']} pooling, {t['epochs']} epochs, one core each; "
                      "median of the epochs after the first.", "",
                  "| trainer | samples/s | vs PyTorch |", "| --- | ---: | ---: |"]
        for name, row in t["trainers"].items():
            ratio = t.get("ratios", {}).get(f"{name} / PyTorch")
            rate = f"{row['samples_per_s']:,.0f}" if "samples_per_s" in row else row.get("error", "?")[:60]
            lines.append(f"| {name} | {rate} | {f'{ratio:.2f}x' if ratio else '-'} |")
    return "\n".join(lines) + "\n"


def long_texts(texts: list[str], tokenizer, seed: int = 0, n: int = 600) -> list[str]:
    """Texts that fill 25-100% of max_len: consecutive texts joined until each reaches a target drawn
    uniformly from that range (ending at a whole text, so a little over it; the longest are cut at
    max_len). What a server sees with long documents (#17)."""
    rng = np.random.default_rng(seed)
    out, i = [], 0
    for target in rng.uniform(0.25, 1.0, n) * (tokenizer.max_len - 1):
        parts = []
        while len(" ".join(parts).split()) < target:
            parts.append(texts[i % len(texts)])
            i += 1
        out.append(" ".join(parts))
    return out


def run_bench(run: str | None, synthetic: str | None, quick: bool, out: Path, train: bool = True, log=print,
              baseline_run: str | None = None, long: bool = False) -> dict:
    from kerasrnn import backends

    backends.use("tensorflow", "the inference benchmark")  # it exports, and exports run on TensorFlow
    import tensorflow as tf

    # One thread everywhere: inference latency per core, and training on equal terms with PyTorch
    # (TensorFlow fixes its thread pools at start-up, so training shares the setting).
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from kerasrnn.data import load_dataset
    from kerasrnn.export.tflite import choose_graph

    if synthetic:
        model, config, tokenizer, texts, labels = _synthetic(synthetic)
        description = (f"synthetic vocab {config['vocab_size']}, max_len {config['max_len']}, "
                       f"embed {config['embed_dim']}, units {config['units']} (initial weights), SMS texts")
    else:
        from kerasrnn.run import RunInfo

        info = RunInfo.load(run or "runs/latest")
        model, config, tokenizer, labels = info.load_model(), info.config, info.tokenizer, info.labels
        texts = info.test_split()[0] or load_dataset(None).texts
        description = (f"run {info.path.name}: vocab {config['vocab_size']}, max_len {config['max_len']}, "
                       f"embed {config['embed_dim']}, units {config['units']}, pooling {config['pooling']}")
    if long:
        texts = long_texts(texts, tokenizer)
        description += "; long texts (25-100% of max_len)"
    ids = tokenizer.encode(texts[:512])
    result = {"model": {"description": description, **{k: config[k] for k in
                                                         ("vocab_size", "max_len", "embed_dim", "units")}},
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
              "mean_real_tokens": float((ids != 0).sum(1).mean()), "quick": quick,
              # the graph `tools/export.py` writes for this model by default (--tflite-impl auto)
              "tflite_graph": choose_graph("auto", config["max_len"], ids[:200])}  # export's calibration texts
    with tempfile.TemporaryDirectory() as tmp:
        files = _export_all(model, config, tokenizer, labels, texts[:200], Path(tmp), log)
        own_ids = {}
        if baseline_run:  # another run's ONNX and TFLite files, timed in the same rounds on the same texts
            own_ids = _export_baseline(baseline_run, texts, Path(tmp) / "baseline", files, log)
            result["baseline_run"] = str(baseline_run)
        floor = _floor(model, config, ids, Path(tmp), result, log)
        log("inference (one thread):")
        result["inference"] = bench_inference(model, files, ids, 60 if quick else 1000, 3 if quick else 30, log,
                                              own_ids, floor)
        if baseline_run:
            graph = TFLITE_ROWS[result["tflite_graph"]]
            result["paired"] = {fmt: paired_ratio(files[name], ids, files[f"{BASELINE} {fmt}"],
                                                  own_ids[f"{BASELINE} {fmt}"], rounds=10 if quick else 150)
                                for fmt, name in (("ONNX", "ONNX native RNN (ours)"), ("TFLite", graph))}
            for fmt, p in result["paired"].items():
                log(f"  {fmt} batch 1, this run / {BASELINE}, alternating blocks: {p['ratio']:.2f}x "
                    f"(quartiles {p['quartiles'][0]:.2f}-{p['quartiles'][1]:.2f}; {p['median_us']:.1f} / "
                    f"{p['baseline_median_us']:.1f} us)")
    by = {r["format"]: r for r in result["inference"]}
    med = lambda name: by[name]["batch1"]["median_us"]  # noqa: E731
    if floor:
        for r in result["inference"]:  # how far each runtime is from what the hardware can do
            r["floor_multiple"] = {"batch1": med(r["format"]) / med(FLOOR),
                                   "batch64": by[FLOOR]["batch64_samples_per_s"] / r["batch64_samples_per_s"]}
    result["ratios"] = {
        "ONNX batch 1: stock Loop / ours": med("ONNX tf2onnx Loop (stock)") / med("ONNX native RNN (ours)"),
        "ONNX batch 64 throughput: ours / stock": by["ONNX native RNN (ours)"]["batch64_samples_per_s"]
        / by["ONNX tf2onnx Loop (stock)"]["batch64_samples_per_s"],
        "TFLite batch 1: unrolled / ours": med(TFLITE_ROWS["unroll"]) / med(TFLITE_ROWS[result["tflite_graph"]]),
        "SavedModel batch 1: ours / ONNX ours": med("SavedModel") / med("ONNX native RNN (ours)"),
        "SavedModel batch 1: Keras's graph / ours": med(SAVEDMODEL_KERAS) / med("SavedModel"),
    }
    if baseline_run:
        ours = {"ONNX": "ONNX native RNN (ours)", "TFLite": TFLITE_ROWS[result["tflite_graph"]]}
        for fmt, name in ours.items():
            result["ratios"][f"{fmt} batch 1: this run / {BASELINE}"] = med(name) / med(f"{BASELINE} {fmt}")
            result["ratios"][f"{fmt} batch 1: this run / {BASELINE}, alternating blocks"] = result["paired"][fmt]["ratio"]
    if train:
        data = load_dataset(None)
        n = 600 if quick else len(data.texts)
        y = [0 if lab == "ham" else 1 for lab in data.labels[:n]]
        log("training (one core each):")
        result["training"] = bench_training(config | {"num_classes": 2}, tokenizer.encode(data.texts[:n]), y,
                                            # 5 epochs: under JAX each new (batch, bucket) shape
                                            # compiles once, and the last partial batch brings more
                                            2 if quick else 5, 32, log)
    write_outputs(result, out)
    return result
