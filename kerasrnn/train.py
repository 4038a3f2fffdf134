"""Train a recurrent text classifier: `python -m kerasrnn.train [--data FILE] [options]`.

Reads the data, splits it (stratified, seeded), learns the vocabulary on the training split,
trains Embedding -> SimpleRNN -> Dense with model.fit and writes a run folder (see kerasrnn.run).
Every option can also come from a JSON config file (`--config`); flags given on the command line
win over the file, the file wins over the defaults below.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import sys
import time
import warnings

import numpy as np
from datetime import datetime, timezone
from pathlib import Path

# Plain data: every hyperparameter and its default.
DEFAULTS = {
    "data": None,               # None: the packaged SMS spam dataset
    "text_column": "text",
    "label_column": "label",
    "test_data": None,
    "val_split": 0.1,
    "test_split": 0.2,
    "vocab_size": 20000,
    "max_len": None,            # None: 95th percentile of training token counts, within [8, 256]
    "embed_dim": 128,           # 64 -> 128: +2.1 points on 20 Newsgroups for 1.2x the time (README, Accuracy)
    "units": 64,                # 128 units gained 0.1-1.5 points for 2-2.5x the time and half the speed
    "num_layers": 1,
    "dropout": 0.0,
    "bidirectional": False,
    "pooling": "max",            # max over the RNN outputs: far better than the last state on long texts
    "epochs": 10,
    "batch_size": 32,
    "learning_rate": 2e-3,
    "lr_schedule": "constant",
    "clipnorm": 0.0,
    "patience": 3,              # 2 stopped SMS runs in the early validation-loss dip of max pooling
    "class_weight": "none",
    "seed": 0,
    "split_seed": None,         # None: the same as seed; set it to keep one split across model seeds
    "device": "auto",
    "backend": "auto",          # auto: KERAS_BACKEND if set, else jax when installed (3x faster fit on CPU)
    "distribute": "none",       # mirrored: GPUs of one host; multiworker: several processes / hosts
    "replicas": 2,
    "workers": None,            # multiworker: "host:port,host:port,..." (or TF_CONFIG)
    "task_index": None,         # multiworker: this process's index in --workers (0 is the chief)
    "stream": False,            # read --data a row at a time (implied by a glob such as 'shards/*.csv.gz')
    "output": None,             # None: runs/<timestamp>
    "resume": None,             # run folder of an interrupted run to continue
    "verbose": None,            # None: progress bar on a terminal, one line per epoch otherwise
}


LR_SCHEDULES = ("constant", "cosine")
COSINE_FLOOR = 0.05  # --lr-schedule cosine ends at this fraction of --learning-rate


def parse_args(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m kerasrnn.train", description=__doc__.split("\n\n")[0],
                                argument_default=argparse.SUPPRESS)
    p.add_argument("--config", help="JSON file with any of the options below (flags override it)")
    p.add_argument("--data", help="CSV, TSV, JSONL (optionally .gz) or a folder of class sub-folders; "
                                  "default: the packaged SMS spam data")
    p.add_argument("--text-column")
    p.add_argument("--label-column")
    p.add_argument("--test-data", help="a separate test file; otherwise a stratified split of --data")
    p.add_argument("--val-split", type=float)
    p.add_argument("--test-split", type=float)
    p.add_argument("--vocab-size", type=int, help="vocabulary size including the 3 reserved ids")
    p.add_argument("--max-len", type=int, help="tokens per text including <START>")
    p.add_argument("--embed-dim", type=int)
    p.add_argument("--units", type=int)
    p.add_argument("--num-layers", type=int)
    p.add_argument("--dropout", type=float)
    p.add_argument("--pooling", choices=["last", "max", "mean"], help="how the RNN outputs become one vector")
    p.add_argument("--bidirectional", action=argparse.BooleanOptionalAction,
                   help="a second SimpleRNN reads each text backwards; outputs are concatenated (2x the cost)")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES,
                   help="cosine: decay the learning rate to 5%% of --learning-rate over --epochs")
    p.add_argument("--clipnorm", type=float, help="clip each gradient to this L2 norm; 0 = no clipping")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs (best weights are restored)")
    p.add_argument("--class-weight", choices=["none", "balanced"])
    p.add_argument("--seed", type=int, help="seeds initialisation, shuffling and (unless --split-seed) the split")
    p.add_argument("--split-seed", type=int, help="seed of the train/validation/test split only")
    p.add_argument("--device", choices=["auto", "cpu"], help="cpu hides every GPU")
    p.add_argument("--backend", choices=["auto", "jax", "tensorflow", "torch"],
                   help="Keras backend for training (default auto: KERAS_BACKEND if set, else jax when "
                        "installed, else tensorflow); exports always run on tensorflow")
    p.add_argument("--distribute", choices=["none", "mirrored", "multiworker"],
                   help="mirrored: every GPU of this host; multiworker: MultiWorkerMirroredStrategy over "
                        "TF_CONFIG or --workers/--task-index. --batch-size stays the global batch")
    p.add_argument("--replicas", type=int, help="logical CPU devices for --distribute mirrored without a GPU")
    p.add_argument("--workers", help="multiworker: comma-separated host:port of every worker, in the same order "
                                     "on each (builds TF_CONFIG)")
    p.add_argument("--task-index", type=int, help="multiworker: this worker's position in --workers; 0 writes the run")
    p.add_argument("--stream", action="store_true",
                   help="read --data a row at a time instead of into memory (implied by a glob pattern); "
                        "the split is then by a hash of each text")
    p.add_argument("--output", help="run folder to create (default runs/<timestamp>); "
                                    "an interrupted run with the same --output is resumed")
    p.add_argument("--resume", metavar="DIR", help="continue the interrupted run that was to write DIR")
    p.add_argument("--verbose", type=int, choices=[0, 1, 2], help="Keras progress output")
    args = vars(p.parse_args(argv))
    return resolve_config(args)


def resolve_config(cli: dict) -> dict:
    from kerasrnn.errors import UserError

    config = dict(DEFAULTS)
    path = cli.pop("config", None)
    if path:
        try:
            from_file = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise UserError(f"{path}: cannot read config ({exc.strerror})") from None
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON ({exc.msg})") from None
        if not isinstance(from_file, dict):
            raise UserError(f"{path}: expected a JSON object of options")
        unknown = sorted(set(k.replace("-", "_") for k in from_file) - set(DEFAULTS))
        if unknown:
            raise UserError(f"{path}: unknown option(s) {', '.join(unknown)}; known: {', '.join(DEFAULTS)}")
        config.update({k.replace("-", "_"): v for k, v in from_file.items()})
    config.update(cli)
    checks = [
        (0 <= config["val_split"] < 1 and 0 <= config["test_split"] < 1
         and config["val_split"] + config["test_split"] < 1, "--val-split and --test-split must be in [0, 1) with sum < 1"),
        (config["vocab_size"] >= 4, "--vocab-size must be at least 4"),
        (config["max_len"] is None or config["max_len"] >= 2, "--max-len must be at least 2"),
        (min(config["embed_dim"], config["units"], config["num_layers"], config["epochs"], config["batch_size"]) >= 1,
         "--embed-dim, --units, --num-layers, --epochs and --batch-size must be positive"),
        (0 <= config["dropout"] < 1, "--dropout must be in [0, 1)"),
        (config["learning_rate"] > 0, "--learning-rate must be positive"),
        (config["clipnorm"] >= 0, "--clipnorm must be 0 (off) or positive"),
        (config["lr_schedule"] in LR_SCHEDULES, f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}"),
        (isinstance(config["bidirectional"], bool), "--bidirectional must be true or false"),
        ((config["workers"] is None and config["task_index"] is None) or config["distribute"] == "multiworker",
         "--workers and --task-index go with --distribute multiworker"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    return config


def _prepare_device(config: dict) -> None:
    """Environment settings that must be in place before TensorFlow / JAX / torch start."""
    from kerasrnn import backends

    if config["device"] == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    config["backend"] = backends.choose_training_backend(config["backend"], config["distribute"])
    backends.use(config["backend"], "training")


def new_output_dir(config: dict) -> Path:
    from kerasrnn.errors import UserError

    from kerasrnn.checkpoint import STATE, partial_dir

    if config.get("resume"):
        config["output"] = config.pop("resume")
        if not (partial_dir(Path(config["output"])) / STATE).is_file():
            raise UserError(f"{config['output']}: no interrupted run to resume (no checkpoint in "
                            f"{partial_dir(Path(config['output']))}); start it with --output")
    if config["output"]:
        out = Path(config["output"])
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UserError(f"{out}: already exists and is not empty; choose another --output "
                            "(nothing is overwritten)")
        return out
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path("runs") / stamp
    n = 1
    while out.exists() or partial_dir(out).exists():
        n += 1
        out = Path("runs") / f"{stamp}-{n}"
    return out


def prepare_data(config: dict):
    """Load, split and encode. Returns a dict of arrays plus the tokenizer and labels."""
    from kerasrnn.stream import is_glob

    if config["stream"] or is_glob(config["data"]) or is_glob(config["test_data"]):
        return prepare_stream(config)

    from kerasrnn.data import encode_labels, label_order, load_dataset, stratified_split
    from kerasrnn.errors import UserError
    from kerasrnn.tokenizer import Tokenizer, build_vocabulary, derive_max_len

    data = load_dataset(config["data"], config["text_column"], config["label_column"])
    labels = label_order(data.labels)
    if len(labels) < 2:
        raise UserError(f"{data.source}: only one class ({labels[0]!r}); a classifier needs at least two")
    y = encode_labels(data, labels, "data")
    texts = np.array(data.texts, dtype=object)
    seed = config["seed"] if config.get("split_seed") is None else config["split_seed"]
    if config["test_data"]:
        test = load_dataset(config["test_data"], config["text_column"], config["label_column"])
        y_test = encode_labels(test, labels, "--test-data")
        train_idx, val_idx = stratified_split(y, [config["val_split"]], seed)
        x_test_text = list(test.texts)
    else:
        train_idx, val_idx, test_idx = stratified_split(y, [config["val_split"], config["test_split"]], seed)
        if len(test_idx) == 0:
            raise UserError(f"{data.source}: too few rows for a test split; add data, raise --test-split "
                            "or pass --test-data")
        x_test_text, y_test = list(texts[test_idx]), y[test_idx]
    train_texts = list(texts[train_idx])
    max_len = config["max_len"] or derive_max_len(train_texts)
    words = build_vocabulary(train_texts, config["vocab_size"], max_tokens=max_len - 1)
    tokenizer = Tokenizer(words, max_len)
    out = {
        "x_train": tokenizer.encode(train_texts), "y_train": y[train_idx],
        "x_val": tokenizer.encode(texts[val_idx]), "y_val": y[val_idx],
        "x_test": tokenizer.encode(x_test_text), "y_test": np.asarray(y_test),
        "test_texts": x_test_text, "tokenizer": tokenizer, "labels": labels,
        "summary": {"source": data.source, "rows_used": len(data.texts), "blank_texts_skipped": data.skipped_blank,
                    "train": len(train_idx), "validation": len(val_idx), "test": len(y_test)},
    }
    return out


def prepare_stream(config: dict) -> dict:
    """The streaming counterpart of prepare_data: one pass for labels, split sizes and vocabulary;
    the texts stay on disk (see kerasrnn.stream)."""
    from kerasrnn.errors import UserError
    from kerasrnn.stream import Corpus, shard_files
    from kerasrnn.tokenizer import Tokenizer

    corpus = Corpus(shard_files(config["data"]), shard_files(config["test_data"]) if config["test_data"] else None,
                    config["text_column"], config["label_column"], config["val_split"], config["test_split"])
    scan = corpus.scan(config["vocab_size"], config["max_len"], count_cap=max(200_000, 20 * config["vocab_size"]))
    if corpus.sizes["test"] == 0:
        raise UserError(f"{corpus.source}: no text fell in the test split; add data, raise --test-split "
                        "or pass --test-data")
    tokenizer, sizes = Tokenizer(scan["words"], scan["max_len"]), corpus.sizes
    if scan["words_pruned"]:
        print(f"vocabulary: {scan['words_pruned']} rare words dropped while counting (bounded memory)")
    return {"stream": corpus, "tokenizer": tokenizer, "labels": scan["labels"], "label_counts": scan["label_counts"],
            "summary": {"source": corpus.source, "rows_used": sum(sizes.values()),
                        "blank_texts_skipped": corpus.skipped_blank, **sizes, "streamed": corpus.describe()}}


def steps_per_epoch(examples: int, batch_size: int) -> int:
    return -(-examples // batch_size)


def trim_lengths(width: int, trim: str | None) -> list[int]:
    """The lengths a batch may be cut to, shortest first: every length ("exact": TensorFlow runs any
    shape at no cost), or a few buckets ("buckets": JAX compiles once per shape, ~3 s on one core,
    so only 32, 64, 128 up to width/2, then width; below width 64 the cut did not pay: measured on
    SMS, one core, 4,295 samples/s uncut vs 3,678 in buckets at width 35, 1,578 vs 2,288 at 200)."""
    if trim == "exact":
        return list(range(1, width + 1))
    if trim == "buckets":
        return [b for b in (32, 64, 128) if b <= width // 2] + [width]
    return [width]


def trimmed_width(ids: np.ndarray, lengths: list[int]) -> int:
    """The allowed length (trim_lengths) a batch of post-padded ids is cut to: the first that holds
    its longest text. make_dataset computes the same inside tf.data."""
    longest = int((ids != 0).sum(1).max())
    return next((n for n in lengths if n >= longest), lengths[-1])


def make_dataset(x, y, batch_size: int, shuffle: bool, seed: int, sample_weight=None,
                 first_epoch: int = 0, epochs: int = 1, trim: str | None = None):
    """tf.data pipeline (the TensorFlow backend: what tf.distribute shards).

    Training data is shuffled with a seed derived from (seed, epoch), not from a running random
    stream, so a run resumed at epoch k sees exactly the batches the uninterrupted run would have.
    With `trim`, each batch is cut to its longest text (or the next bucket, see trim_lengths): the
    RNN then runs over the tokens the batch has instead of max_len steps of padding (ids are
    post-padded and masked, so the cut changes nothing but the time taken). Batches are not grouped by length: on real data length goes with
    the label (spam is long), and length-sorted batches of one class made training unstable.
    """
    import tensorflow as tf

    parts = (x, y) if sample_weight is None else (x, y, sample_weight)
    base = tf.data.Dataset.from_tensor_slices(parts)
    lengths = tf.constant(trim_lengths(x.shape[1], trim), tf.int32)

    keep_last_full = trim == "buckets"

    def cut(batch_x, *rest):
        longest = tf.reduce_max(tf.reduce_sum(tf.cast(batch_x != 0, tf.int32), axis=1))
        at = tf.minimum(tf.searchsorted(lengths, tf.reshape(longest, [1]))[0], tf.size(lengths) - 1)
        if keep_last_full:  # the short last batch of an epoch keeps max_len: one shape, one compilation
            at = tf.where(tf.shape(batch_x)[0] < batch_size, tf.size(lengths) - 1, at)
        return (batch_x[:, : lengths[at]], *rest)

    def batched(ds):
        ds = ds.batch(batch_size)
        return ds.map(cut) if len(trim_lengths(x.shape[1], trim)) > 1 else ds

    if not shuffle:
        return batched(base).prefetch(tf.data.AUTOTUNE)
    ds = None
    for epoch in range(first_epoch, max(epochs, first_epoch + 1)):
        one = batched(base.shuffle(len(x), seed=seed * 100_003 + epoch, reshuffle_each_iteration=False))
        ds = one if ds is None else ds.concatenate(one)
    return ds.prefetch(tf.data.AUTOTUNE)


def numpy_batches(x, y, batch_size: int, seed: int, sample_weight=None, first_epoch: int = 0, epochs: int = 1,
                  trim: str | None = None):
    """Training batches as numpy arrays, epoch after epoch: the JAX and torch backends' input.

    The same contract as make_dataset (a shuffle seeded by (seed, epoch), the same cuts) without
    tf.data, whose pipeline threads compete with the training step for the core: on one core, SMS,
    default model under JAX, 5,439 samples/s from this generator against 4,141 through tf.data.
    """
    lengths = trim_lengths(x.shape[1], trim)
    for epoch in range(first_epoch, max(epochs, first_epoch + 1)):
        order = np.random.default_rng(seed * 100_003 + epoch).permutation(len(x))
        for start in range(0, len(x), batch_size):
            rows = order[start:start + batch_size]
            ids = x[rows]
            if trim == "buckets" and len(rows) < batch_size:  # as in make_dataset: one shape, one compilation
                width = lengths[-1]
            else:
                width = trimmed_width(ids, lengths)
            yield (ids[:, :width], y[rows]) + (() if sample_weight is None else (sample_weight[rows],))


def stream_dataset(batches_of_epoch, epochs: range, width: int | None, weighted: bool):
    """Batches from a generator, epoch after epoch: tf.data when TensorFlow is installed (what
    tf.distribute shards), the plain generator otherwise (Keras takes one under JAX and torch)."""

    def generate():
        for epoch in epochs:
            yield from batches_of_epoch(epoch)

    try:
        import tensorflow as tf
    except ImportError:
        return generate()
    spec = [tf.TensorSpec((None, width), tf.int32), tf.TensorSpec((None,), tf.int32)]
    if weighted:
        spec.append(tf.TensorSpec((None,), tf.float32))
    return tf.data.Dataset.from_generator(generate, output_signature=tuple(spec)).prefetch(2)


def versions() -> dict:
    import keras

    out = {"python": platform.python_version(), "keras": keras.__version__, "numpy": np.__version__,
           "backend": keras.backend.backend()}
    for name in ("tensorflow", "jax", "torch"):
        if name in sys.modules:
            out[name] = getattr(sys.modules[name], "__version__", "?")
    return out


def train(config: dict) -> Path:
    """Run one training job as configured (resuming an interrupted one); return the run folder."""
    from kerasrnn import checkpoint
    from kerasrnn.errors import UserError

    _prepare_device(config)
    from kerasrnn import distribute

    tf_config = distribute.tf_config_for(config) if config["distribute"] == "multiworker" else None
    chief = distribute.is_chief(tf_config)
    if tf_config and not config["output"] and not config.get("resume"):
        raise UserError("--distribute multiworker needs --output: every worker must name the same run folder")
    out_dir = new_output_dir(config)
    partial = checkpoint.partial_dir(out_dir)
    state = checkpoint.load_state(partial, config)
    if tf_config and state:
        raise UserError(f"{out_dir}: a multi-worker run cannot be resumed (other hosts cannot see the checkpoint "
                        f"in {partial}); choose another --output")
    prepared = prepare_data(config)  # all input checks happen here, before anything is written

    import keras

    from kerasrnn.model import build_model

    keras.utils.set_random_seed(config["seed"])
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    tokenizer, labels = prepared["tokenizer"], prepared["labels"]
    model_config = {
        "vocab_size": tokenizer.vocab_size, "num_classes": len(labels), "max_len": tokenizer.max_len,
        "embed_dim": config["embed_dim"], "units": config["units"], "num_layers": config["num_layers"],
        "dropout": config["dropout"], "pooling": config["pooling"], "bidirectional": config["bidirectional"],
    }
    trim = _trim_batches()
    strategy = distribute.strategy_for(config)
    if strategy is not None:
        print(f"distribute: {type(strategy).__name__}, replicas: {strategy.num_replicas_in_sync}")
    with strategy.scope() if strategy else _nullcontext():
        # TensorFlow trains on batches cut to their longest text (variable length: see make_dataset);
        # the saved model has the fixed [batch, max_len] input every export needs, same weights.
        model = build_model(**{**model_config, "max_len": None if trim else model_config["max_len"]})
        model.compile(optimizer=make_optimizer(config, prepared["summary"]["train"]),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    if chief:
        partial.mkdir(parents=True, exist_ok=True)
    if state:
        print(f"resuming {out_dir} after epoch {state['epochs_done']} (checkpoint in {partial})")
        checkpoint.restore(model, partial, state)
    else:
        again = "run the same command again" if config["output"] else f"add --resume {out_dir}"
        print(f"training into {out_dir}; if interrupted, {again} to resume")
    started = time.perf_counter()
    if checkpoint.finished(state, config["epochs"]):
        model.load_weights(partial / checkpoint.BEST_WEIGHTS)  # as EarlyStopping would have restored
        state_after = state
    else:
        state_after = _fit(model, config, prepared, partial, state, trim, chief)
    train_seconds = time.perf_counter() - started  # this invocation's training (a resumed run: since resuming)
    if not chief:
        print(f"worker {tf_config['task']['index']}: training done; the chief writes {out_dir}")
        return None

    from kerasrnn.metrics import classification_report

    if trim or strategy is not None:  # a fixed-length model outside any distribution strategy
        from kerasrnn.model import rebuild

        model = rebuild(model, model_config)
    y_true, y_pred = _predict_test(model, prepared, partial)
    report = classification_report(y_true, y_pred, labels)
    write_run(out_dir, partial, model, config, model_config, prepared, report, state_after["history"],
              train_seconds)
    return out_dir


def make_optimizer(config: dict, train_examples: int):
    """Adam with the configured learning-rate schedule and gradient clipping."""
    import keras

    lr = config["learning_rate"]
    if config["lr_schedule"] == "cosine":  # over every step of --epochs; early stopping may end sooner
        total = config["epochs"] * steps_per_epoch(train_examples, config["batch_size"])
        lr = keras.optimizers.schedules.CosineDecay(lr, total, alpha=COSINE_FLOOR)
    return keras.optimizers.Adam(lr, clipnorm=config["clipnorm"] or None)


def _predict_test(model, prepared: dict, partial: Path):
    """Test labels and predictions; a streamed test split is written to the run as it is read."""
    if "stream" not in prepared:
        return prepared["y_test"], model.predict(prepared["x_test"], batch_size=256, verbose=0).argmax(axis=1)
    from kerasrnn import run as R
    from kerasrnn.fileio import open_atomic
    from kerasrnn.stream import chunks

    labels, tokenizer = prepared["labels"], prepared["tokenizer"]
    index = {lab: i for i, lab in enumerate(labels)}
    y_true, y_pred = [], []
    with open_atomic(partial / R.SPLIT_FILE, "w") as split_file:
        for chunk in chunks(prepared["stream"].rows("test"), 1024):
            split_file.writelines(json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n"
                                  for _, text, label in chunk)
            y_true.append(np.array([index[label] for _, _, label in chunk], np.int32))
            ids = tokenizer.encode(text for _, text, _ in chunk)
            y_pred.append(model.predict(ids, batch_size=256, verbose=0).argmax(axis=1))
    return np.concatenate(y_true), np.concatenate(y_pred)


def training_input(x, y, batch_size: int, seed: int, sample_weight, first_epoch: int, epochs: int, trim):
    """What model.fit trains on for this backend: tf.data under TensorFlow, numpy batches otherwise."""
    import keras

    if keras.backend.backend() == "tensorflow":
        return make_dataset(x, y, batch_size, True, seed, sample_weight, first_epoch, epochs, trim=trim)
    return numpy_batches(x, y, batch_size, seed, sample_weight, first_epoch, epochs, trim)


def _trim_batches() -> str:
    """How batches are cut to their texts' length (see trim_lengths) on this backend."""
    import keras

    return {"tensorflow": "exact", "jax": "buckets"}.get(keras.backend.backend(), "exact")


def _fit(model, config: dict, prepared: dict, partial: Path, state: dict | None, trim: str | None,
         chief: bool = True) -> dict:
    import keras

    from kerasrnn.checkpoint import epoch_checkpoint

    labels, batch = prepared["labels"], config["batch_size"]
    seed, first_epoch = config["seed"], (state["epochs_done"] if state else 0)
    epochs = range(first_epoch, max(config["epochs"], first_epoch + 1))
    streamed = "stream" in prepared
    y_train = None if streamed else prepared["y_train"]
    class_weights = None
    if config["class_weight"] == "balanced":
        if streamed:
            counts = np.array([prepared["label_counts"].get(lab, 0) for lab in labels], float)
        else:
            counts = np.bincount(y_train, minlength=len(labels)).astype(float)
        total = counts.sum()
        class_weights = np.where(counts > 0, total / (len(labels) * np.maximum(counts, 1)), 0.0).astype("float32")
    n_train, n_val = prepared["summary"]["train"], prepared["summary"]["validation"]
    has_val = n_val > 0
    fit = {}
    if streamed:
        corpus, tokenizer = prepared["stream"], prepared["tokenizer"]
        index = {lab: i for i, lab in enumerate(labels)}
        width = None if trim else tokenizer.max_len
        lengths = trim_lengths(tokenizer.max_len, trim)
        train_ds = stream_dataset(lambda e: corpus.batches("train", tokenizer, index, batch, seed * 100_003 + e,
                                                           lengths, class_weights), epochs, width, class_weights is not None)
        fit = dict(x=train_ds, steps_per_epoch=steps_per_epoch(n_train, batch))
        if has_val:
            fit["validation_data"] = stream_dataset(
                lambda e: corpus.batches("validation", tokenizer, index, batch, None, lengths),
                range(len(epochs)), width, False)
            fit["validation_steps"] = steps_per_epoch(n_val, batch)
    else:
        sample_weight = None if class_weights is None else class_weights[y_train]
        fit = dict(x=training_input(prepared["x_train"], y_train, batch, seed, sample_weight, first_epoch,
                                    config["epochs"], trim),
                   steps_per_epoch=steps_per_epoch(n_train, batch))
        if has_val and keras.backend.backend() == "tensorflow":
            fit["validation_data"] = make_dataset(prepared["x_val"], prepared["y_val"], batch, False, seed, trim=trim)
        elif has_val:  # arrays at max_len: one more shape to compile, however the training batches are cut
            fit.update(validation_data=(prepared["x_val"], prepared["y_val"]), validation_batch_size=batch)
    if config["distribute"] != "none":
        from kerasrnn.distribute import prepare_model, shard_by_data

        prepare_model(model, None if trim else prepared["tokenizer"].max_len, class_weights is not None)
    if config["distribute"] == "multiworker":
        fit["x"] = shard_by_data(fit["x"])
        if fit.get("validation_data") is not None:
            fit["validation_data"] = shard_by_data(fit["validation_data"])
    early = keras.callbacks.EarlyStopping(monitor="val_loss" if has_val else "loss",
                                          patience=config["patience"], restore_best_weights=True)
    saver = epoch_checkpoint(partial, config, early, state, write=chief)
    verbose = config["verbose"] if config["verbose"] is not None else (1 if sys.stdout.isatty() else 2)
    with warnings.catch_warnings():
        # Keras warns that fit's default shuffle=True is ignored for a tf.data input: ours is shuffled.
        warnings.filterwarnings("ignore", message=".*shuffle=True.*")
        model.fit(**fit, epochs=config["epochs"], initial_epoch=saver.state["epochs_done"],
                  callbacks=[early, saver], verbose=verbose)
    return saver.state


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def write_run(out_dir: Path, partial: Path, model, config, model_config, prepared, report, history_rows,
              train_seconds) -> None:
    """Write every run file into the partial folder, then rename it into place in one step."""
    from kerasrnn import checkpoint
    from kerasrnn import run as R
    from kerasrnn.fileio import write_json_atomic, write_text_atomic
    from kerasrnn.plots import plot_confusion, plot_history
    from kerasrnn.report import model_card

    tokenizer, labels, summary = prepared["tokenizer"], prepared["labels"], prepared["summary"]
    model.save(partial / R.MODEL_FILE)
    tokenizer.save_vocab(partial / R.VOCAB_FILE)
    write_text_atomic(partial / R.LABELS_FILE, "\n".join(labels) + "\n")
    full_config = {
        **{k: v for k, v in config.items() if k != "output"},
        "data": summary["source"],
        **model_config,
        "labels": labels,
        "tokenizer": tokenizer.spec(),
        "data_summary": {k: v for k, v in summary.items() if k != "source"},
        "training": {"epochs_run": len(history_rows), "seconds": round(train_seconds, 2),
                     "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")},
        "versions": versions(),
    }
    write_json_atomic(partial / R.CONFIG_FILE, full_config)
    write_json_atomic(partial / R.METRICS_FILE, report)
    keys = [k for k in (history_rows[0] if history_rows else {}) if k != "epoch"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["epoch", *keys])
    for row in history_rows:
        writer.writerow([row["epoch"], *(f"{row[k]:.6f}" for k in keys)])
    write_text_atomic(partial / "history.csv", buf.getvalue())
    if "test_texts" in prepared:  # a streamed test split was written while it was predicted
        write_text_atomic(partial / R.SPLIT_FILE, "".join(
            json.dumps({"text": t, "label": labels[int(y)]}, ensure_ascii=False) + "\n"
            for t, y in zip(prepared["test_texts"], prepared["y_test"])))

    plot_history({k: [row[k] for row in history_rows] for k in keys}, partial / "training_curves.png")
    plot_confusion(np.array(report["confusion_matrix"]["rows_true_cols_predicted"]), labels,
                   partial / "confusion_matrix.png")
    write_text_atomic(partial / "README.md", model_card(out_dir, full_config, report))
    checkpoint.clean(partial)
    if out_dir.exists():
        out_dir.rmdir()  # empty (checked before training)
    os.replace(partial, out_dir)
    if out_dir.parent.name == "runs" or config["output"] is None:
        write_text_atomic(out_dir.parent / R.LATEST, out_dir.name + "\n")


def main(argv=None) -> int:
    config = parse_args(argv)
    out_dir = train(config)
    if out_dir is None:  # a multi-worker run's non-chief worker
        return 0
    from kerasrnn.run import METRICS_FILE, read_json

    metrics = read_json(out_dir / METRICS_FILE)
    print(f"test accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}  "
          f"({metrics['num_examples']} texts)")
    print(f"run folder: {out_dir}")
    print(f"next: python tools/export.py --format all --run {out_dir}")
    return 0


def cli() -> None:
    """Console-script entry point."""
    from kerasrnn.errors import cli_main

    sys.exit(cli_main(main))


if __name__ == "__main__":
    cli()
