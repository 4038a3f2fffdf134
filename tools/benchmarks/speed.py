"""Benchmarks: training samples/s against a PyTorch reference, inference latency of every format.

`python tools/bench.py [--run DIR | --synthetic 20000,200,64,64] [--quick]` measures, in one run:

- training: Keras model.fit samples/s on the SMS data, on JAX and on TensorFlow, against PyTorch
  nn.RNN on the same token ids, sizes, pooling, batch and epochs, masked correctly with packed
  sequences; each trainer in its own process pinned to one core (PyTorch skipped if missing);
- inference, one thread each: Keras, SavedModel, ONNX Runtime (tf2onnx Loop export and our native
  RNN export), LiteRT (stepwise, fused and unrolled float32, float16, dynamic, int8): latency at batch 1
  (median, p99) and throughput at batch 64, on real texts; file sizes; memory added by each.

Writes bench.json, bench.md and bench.png. A benchmark, not a test: a smoke test runs --quick.
"""
from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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
    from kerasrnn.tokenizer import Tokenizer, build_vocabulary
    from kerasrnn.train import DEFAULTS

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


TFLITE_ROWS = {"stepwise": "TFLite stepwise float32", "fused": "TFLite fused-RNN float32",
               "unroll": "TFLite unrolled float32 (naive)"}


def _export_all(model, config, tokenizer, labels, texts, folder: Path, log) -> dict[str, Path]:
    """Every file the benchmark compares, from the same weights."""
    from kerasrnn.export.onnx_export import export_onnx
    from kerasrnn.export.savedmodel import export_savedmodel
    from kerasrnn.export.tflite import export_tflite

    files = {}
    log("exporting SavedModel ...")
    export_savedmodel(model, tokenizer, labels, folder / "savedmodel")
    files["SavedModel"] = folder / "savedmodel"
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


ROUNDS = 5  # the calls of every format are spread over rounds, formats interleaved, so that a slow
# spell of a shared machine hits them all alike rather than whichever format ran through it


def bench_inference(model, files: dict[str, Path], ids: np.ndarray, reps1: int, reps64: int, log) -> list[dict]:
    import tensorflow as tf

    from kerasrnn.fileio import path_size
    from kerasrnn.runtimes import open_model

    keras_fn = tf.function(lambda x: model(x, training=False))
    calls, rss = {}, {}
    for name, path in [("Keras (tf.function)", None)] + list(files.items()):
        before = _rss_mb()
        if path is None:
            calls[name] = lambda x: keras_fn(tf.constant(x)).numpy()  # noqa: E731
        else:
            calls[name] = open_model(path, threads=1).predict_ids
        for row in ids[:50]:
            calls[name](row[None])  # warm-up: first calls allocate, trace and fill caches
        rss[name] = round(_rss_mb() - before, 1)
    t1 = {name: [] for name in calls}
    t64 = {name: [] for name in calls}
    for r in range(ROUNDS):
        for name, call in calls.items():
            for k in range(r * reps1 // ROUNDS, (r + 1) * reps1 // ROUNDS):
                x = ids[k % len(ids)][None]
                start = time.perf_counter()
                call(x)
                t1[name].append(time.perf_counter() - start)
            for k in range(r * reps64 // ROUNDS, (r + 1) * reps64 // ROUNDS):
                x = np.take(ids, np.arange(k * 64, k * 64 + 64) % len(ids), axis=0)
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


def _epoch_timer():
    """A Keras callback collecting each epoch's wall time in `.times`."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self._start)

    return EpochTimer()


TRAINERS = {"Keras on JAX (kerasrnn.train default)": "jax", "Keras on TensorFlow": "tensorflow",
            "PyTorch nn.RNN, packed (reference)": "torch"}


def bench_training(config, x, y, epochs: int, batch: int, log) -> dict:
    """Training samples/s of each trainer on the same ids, sizes, pooling, batches and epochs.

    Each runs in its own process pinned to one core: the Keras backend is fixed at import, and
    pinning gives every framework the same single core, worker threads included (tf.data, XLA).
    """
    import subprocess
    import sys

    out = {"examples": int(len(x)), "epochs": epochs, "batch_size": batch, "pooling": config["pooling"],
           "mean_real_tokens": float((x != 0).sum(1).mean()), "trainers": {}}
    repo = str(Path(__file__).resolve().parent.parent)
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "x.npy", x)
        np.save(Path(tmp) / "y.npy", np.asarray(y, np.int32))
        (Path(tmp) / "job.json").write_text(json.dumps({"config": config, "epochs": epochs, "batch": batch}))
        for name, trainer in TRAINERS.items():
            env = {**os.environ, "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   "CUDA_VISIBLE_DEVICES": "-1", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2",
                   "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}
            if trainer != "torch":
                env["KERAS_BACKEND"] = trainer
            proc = subprocess.run([sys.executable, "-c", "import sys; from kerasrnn.bench import training_child; "
                                   "training_child(sys.argv[1], sys.argv[2])", tmp, trainer],
                                  env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                missing = "No module named 'torch'" in proc.stderr
                row = {"error": "not installed (pip install torch==2.13.0)" if missing else proc.stderr.strip()[-500:]}
                log(f"  {name}: {row['error'][:200]}")
            else:
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                log(f"  {name:40} {row['samples_per_s']:8.0f} samples/s (epochs {row['epoch_seconds']} s)")
            out["trainers"][name] = row
    rates = {k: v.get("samples_per_s") for k, v in out["trainers"].items()}
    ref = rates["PyTorch nn.RNN, packed (reference)"]
    if ref:
        out["ratios"] = {f"{k} / PyTorch": v / ref for k, v in rates.items() if v and "PyTorch" not in k}
    return out


def training_child(folder: str, trainer: str) -> None:
    """One trainer's measurement (run by bench_training in a fresh process); prints one JSON line."""
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[0]})
    job = json.loads((Path(folder) / "job.json").read_text())
    x, y = np.load(Path(folder) / "x.npy"), np.load(Path(folder) / "y.npy")
    config, epochs, batch = job["config"], job["epochs"], job["batch"]
    if trainer == "torch":
        import torch

        row = _torch_reference(torch, x, y, config, epochs, batch)
        row = {"samples_per_s": row.pop("torch_samples_per_s"), "epoch_seconds": row.pop("torch_epoch_seconds"),
               "version": row["torch_version"]}
    else:
        row = _keras_fit_rate(config, x, y, epochs, batch)
    print(json.dumps({**row, "threads": "1 core (sched_setaffinity)"}))


def _keras_fit_rate(config, x, y, epochs, batch) -> dict:
    """model.fit as kerasrnn.train runs it on this backend (tf.data under TensorFlow, numpy batches
    under JAX; batches cut to their texts' length)."""
    import keras

    from kerasrnn.model import build_model, model_kwargs
    from kerasrnn.train import _trim_batches, steps_per_epoch, training_input

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    trim = _trim_batches()
    model = build_model(**{**model_kwargs(config), "max_len": None if trim else x.shape[1]})
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    timer = _epoch_timer()
    ds = training_input(x, y, batch, 0, None, 0, epochs, trim)
    model.fit(ds, epochs=epochs, steps_per_epoch=steps_per_epoch(len(x), batch), callbacks=[timer], verbose=0)
    steady = timer.times[1:] or timer.times  # the first epoch includes tracing / compilation
    return {"samples_per_s": float(len(x) / np.median(steady)), "epoch_seconds": [round(t, 3) for t in timer.times],
            "version": keras.__version__, "backend": keras.backend.backend(), "trimmed_batches": trim}


def _torch_reference(torch, x, y, config, epochs, batch, device: str = "cpu") -> dict:
    """PyTorch nn.RNN trained as our model is (same sizes, same pooling), padding skipped by packing."""
    nn = torch.nn
    torch.manual_seed(0)
    if device == "cpu":
        torch.set_num_threads(1)  # TensorFlow runs on one thread here too (set once per process)
    pooling = config.get("pooling", "last")
    directions = 2 if config.get("bidirectional") else 1

    class Ref(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(config["vocab_size"], config["embed_dim"], padding_idx=0)
            self.rnn = nn.RNN(config["embed_dim"], config["units"], num_layers=config["num_layers"],
                              nonlinearity="tanh", batch_first=True, bidirectional=directions == 2)
            self.out = nn.Linear(directions * config["units"], config["num_classes"])

        def forward(self, ids, lengths):
            packed = nn.utils.rnn.pack_padded_sequence(self.emb(ids), lengths, batch_first=True,
                                                       enforce_sorted=False)
            seq, h = self.rnn(packed)  # h: last real step of each sequence, padding never seen
            if pooling == "last":  # the last layer's final state of each direction
                return self.out(torch.cat(list(h[-directions:]), dim=1))
            # max / mean over the real steps only, as the Keras model's masked pooling does
            fill = float("-inf") if pooling == "max" else 0.0
            steps, _ = nn.utils.rnn.pad_packed_sequence(seq, batch_first=True, padding_value=fill)
            if pooling == "max":
                return self.out(steps.max(dim=1).values)
            return self.out(steps.sum(dim=1) / lengths.to(steps.device)[:, None])

    model = Ref().to(device)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    loss_fn = nn.CrossEntropyLoss()
    xt = torch.from_numpy(x.astype(np.int64)).to(device)
    yt = torch.from_numpy(y.astype(np.int64)).to(device)
    lengths = torch.from_numpy((x != 0).sum(1).clip(min=1).astype(np.int64))  # packing wants them on the CPU
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times = []
    for epoch in range(epochs):
        perm = torch.from_numpy(np.random.default_rng(epoch).permutation(len(x)))
        sync()
        start = time.perf_counter()
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            loss = loss_fn(model(xt[idx.to(device)], lengths[idx]), yt[idx.to(device)])
            loss.backward()
            opt.step()
        sync()
        times.append(time.perf_counter() - start)
    steady = times[1:] or times
    return {"torch_samples_per_s": float(len(x) / np.median(steady)), "torch_version": torch.__version__,
            "torch_device": device, "torch_threads": torch.get_num_threads(),
            "torch_epoch_seconds": [round(t, 3) for t in times]}


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
    lines = [f"Model: {m['description']}; machine: {result['machine']}.", "",
             "| format | batch 1 median (µs) | batch 1 p99 (µs) | batch 64 (samples/s) | size (bytes) | RSS added (MB) |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["inference"]:
        size = f"{r['size_bytes']:,}" if r["size_bytes"] else "-"
        lines.append(f"| {r['format']} | {r['batch1']['median_us']:.1f} | {r['batch1']['p99_us']:.1f} | "
                     f"{r['batch64_samples_per_s']:,.0f} | {size} | {r['rss_added_mb']} |")
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


def run_bench(run: str | None, synthetic: str | None, quick: bool, out: Path, train: bool = True, log=print) -> dict:
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
    ids = tokenizer.encode(texts[:512])
    result = {"model": {"description": description, **{k: config[k] for k in
                                                         ("vocab_size", "max_len", "embed_dim", "units")}},
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
              "mean_real_tokens": float((ids != 0).sum(1).mean()), "quick": quick,
              # the graph `tools/export.py` writes for this model by default (--tflite-impl auto)
              "tflite_graph": choose_graph("auto", config["max_len"], ids[:200])}  # export's calibration texts
    with tempfile.TemporaryDirectory() as tmp:
        files = _export_all(model, config, tokenizer, labels, texts[:200], Path(tmp), log)
        log("inference (one thread):")
        result["inference"] = bench_inference(model, files, ids, 60 if quick else 1000, 3 if quick else 30, log)
    by = {r["format"]: r for r in result["inference"]}
    med = lambda name: by[name]["batch1"]["median_us"]  # noqa: E731
    result["ratios"] = {
        "ONNX batch 1: stock Loop / ours": med("ONNX tf2onnx Loop (stock)") / med("ONNX native RNN (ours)"),
        "ONNX batch 64 throughput: ours / stock": by["ONNX native RNN (ours)"]["batch64_samples_per_s"]
        / by["ONNX tf2onnx Loop (stock)"]["batch64_samples_per_s"],
        "TFLite batch 1: unrolled / ours": med(TFLITE_ROWS["unroll"]) / med(TFLITE_ROWS[result["tflite_graph"]]),
    }
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


def gpu_training_bench(vocab: int, max_len: int, embed: int, units: int, batches: list[int], examples: int,
                       epochs: int, poolings: tuple[str, ...] = ("max",), log=print) -> dict:
    """Keras (whatever KERAS_BACKEND is, JAX on a GPU host) vs PyTorch nn.RNN with packed sequences,
    on the same synthetic ids (variable lengths, post-padded), same sizes, same device.

    Needs no TensorFlow: Keras gets numpy arrays, not a tf.data pipeline.
    """
    import keras

    from kerasrnn.model import build_model

    rng = np.random.default_rng(0)
    lengths = rng.integers(max(2, max_len // 8), max_len + 1, examples)
    x = np.zeros((examples, max_len), np.int32)
    for i, n in enumerate(lengths):
        x[i, 0] = 1
        x[i, 1:n] = rng.integers(3, vocab, n - 1)
    y = rng.integers(0, 2, examples).astype(np.int32)
    config = {"vocab_size": vocab, "num_classes": 2, "max_len": max_len, "embed_dim": embed, "units": units,
              "num_layers": 1, "dropout": 0.0}
    result = {"backend": keras.backend.backend(), "config": config, "examples": examples, "epochs": epochs,
              "device": _device_name(), "runs": []}
    for pooling, batch in [(p, b) for p in poolings for b in batches]:
        config["pooling"] = pooling
        model = build_model(**config)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
        timer = _epoch_timer()
        model.fit(x, y, batch_size=batch, epochs=epochs, callbacks=[timer], verbose=0)
        row = {"batch_size": batch, "pooling": pooling,
               "keras_samples_per_s": float(examples / np.median(timer.times[1:] or timer.times)),
               "keras_epoch_seconds": [round(t, 3) for t in timer.times]}
        try:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
            row.update(_torch_reference(torch, x, y, config, epochs, batch, device))
            row["ratio"] = row["keras_samples_per_s"] / row["torch_samples_per_s"]
        except ImportError:
            row["torch"] = "not installed"
        log(json.dumps(row))
        result["runs"].append(row)
    return result


def _device_name() -> str:
    try:
        import jax

        return str(jax.devices()[0].device_kind)
    except Exception:  # noqa: BLE001 - best effort description only
        return platform.processor() or "cpu"
