"""Train a recurrent text classifier: `python -m kerasrnn.train [--data FILE] [options]`.

Reads the data, splits it (stratified, seeded), learns the vocabulary on the training split,
trains Embedding -> SimpleRNN -> Dense with model.fit and writes a run folder (see kerasrnn.run).
Every option can also come from a JSON config file (`--config`); flags given on the command line
win over the file, the file wins over the defaults (kerasrnn.options).

The story, top to bottom: options -> device and backend -> run folder (or the interrupted run to
resume) -> data (kerasrnn.prepare) -> model -> fit on batches (kerasrnn.batching), checkpointed
after every epoch (kerasrnn.checkpoint) -> test predictions -> run folder (kerasrnn.run_writer).
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np

from kerasrnn.options import COSINE_FLOOR, MODEL_KEYS, parse_args
from kerasrnn.prepare import Prepared, prepare_data


def prepare_device(config: dict) -> None:
    """Environment settings that must be in place before TensorFlow / JAX / torch start."""
    from kerasrnn import backends

    if config["device"] == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    config["backend"] = backends.choose_training_backend(config["backend"], config["distribute"])
    backends.use(config["backend"], "training")
    if config["backend"] == "jax":
        from kerasrnn.data_parallel import configure_devices

        configure_devices(config)


def new_output_dir(config: dict) -> Path:
    """The run folder to write: --output (or --resume), else a new runs/<timestamp>; never a full one."""
    from kerasrnn.checkpoint import STATE, partial_dir
    from kerasrnn.errors import UserError

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


def train(config: dict) -> Path | None:
    """Run one training job as configured (resuming an interrupted one); return the run folder
    (None on a multi-worker run's non-chief worker, which writes nothing)."""
    from kerasrnn import checkpoint
    from kerasrnn.errors import UserError

    prepare_device(config)
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
    data = prepare_data(config)  # all input checks happen here, before anything is written
    workers = None  # JAX's data-parallel run (kerasrnn.data_parallel); tf.distribute's is `strategy` below
    if config["distribute"] != "none" and config["backend"] == "jax":
        from kerasrnn import data_parallel

        workers = data_parallel.start(config, tf_config)

    import keras

    from kerasrnn import paths
    from kerasrnn.batching import trim_for_backend
    from kerasrnn.model import LINEAR, RNN_LOGITS, build_model, path_outputs

    keras.utils.set_random_seed(config["seed"])
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    # The network's arguments (options.MODEL_ARGS): the sizes the data decided, then the options.
    statistics = paths.linear_statistics(data, config)
    model_config = {"vocab_size": data.tokenizer.vocab_size, "num_classes": len(data.labels),
                    "max_len": data.tokenizer.max_len,
                    "linear_terms": len(statistics["idf"]) if statistics else None,
                    "linear_slots": statistics["slots"] if statistics else None,
                    **{k: config[k] for k in MODEL_KEYS}}
    trim = trim_for_backend(keras.backend.backend())
    strategy = distribute.strategy_for(config)
    if strategy is not None:
        print(f"distribute: {type(strategy).__name__}, replicas: {strategy.num_replicas_in_sync}")
    with strategy.scope() if strategy else contextlib.nullcontext():
        # Training runs on batches cut to their longest text (variable length: see kerasrnn.batching);
        # the saved model has the fixed [batch, max_len] input every export needs, same weights.
        model = build_model(**{**model_config, "max_len": None if trim else model_config["max_len"]},
                            linear_l2=paths.svm_l2(data.summary["train"]))
        fit_model, loss, metrics = model, "sparse_categorical_crossentropy", ["accuracy"]
        if statistics:
            model.get_layer(LINEAR).set_statistics(statistics)
            if statistics["solver"] == "liblinear":
                # The linear path is solved already: model.fit trains the RNN's logits alone.
                linear = model.get_layer(LINEAR)
                linear.kernel.assign(statistics["svm"]["kernel"])
                linear.bias.assign(statistics["svm"]["bias"])
                fit_model = keras.Model(model.inputs, model.get_layer(RNN_LOGITS).output, name="kerasrnn_rnn")
                loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            else:
                # Each path its own loss (kerasrnn.paths): fit the two paths' scores side by side.
                fit_model = path_outputs(model)
                loss, metrics = paths.losses_and_metrics(len(data.labels))
        fit_model.compile(optimizer=make_optimizer(config, data.summary["train"]), loss=loss, metrics=metrics)
    if workers is not None and workers.devices > 1:
        data_parallel.reduce_once_per_step(fit_model)

    if chief:
        partial.mkdir(parents=True, exist_ok=True)
    if state:
        print(f"resuming {out_dir} after epoch {state['epochs_done']} (checkpoint in {partial})")
        checkpoint.restore(fit_model, partial, state)
    else:
        again = "run the same command again" if config["output"] else f"add --resume {out_dir}"
        print(f"training into {out_dir}; if interrupted, {again} to resume")
    started = time.perf_counter()
    if checkpoint.finished(state, config["epochs"]):
        fit_model.load_weights(checkpoint.weights_file(partial, state, "best"))  # as the early stop would have restored
        state_after = state
    else:
        state_after = fit(fit_model, config, data, partial, state, trim, chief,
                          two_paths=bool(statistics) and statistics["solver"] == "fit", workers=workers)
    train_seconds = time.perf_counter() - started  # this invocation's training (a resumed run: since resuming)
    if workers is not None:  # every worker's input work, in config.json; the chief then works alone
        from kerasrnn.model import rebuild

        config["data_parallel"] = data_parallel.finish(workers, data, config)
        model = rebuild(model, model_config)  # on every process: a local model, set from the replicated weights
        data_parallel.leave(workers)
    if not chief:
        print(f"worker {tf_config['task']['index']}: training done; the chief writes {out_dir}")
        return None

    from kerasrnn.evaluate import evaluate
    from kerasrnn.run_writer import write_run

    if (trim or strategy is not None) and workers is None:  # a fixed-length model outside any distribution
        from kerasrnn.model import rebuild

        model = rebuild(model, model_config)
    report = evaluate(model, data, partial, statistics)
    write_run(out_dir, partial, model, config, model_config, data, report, state_after["history"], train_seconds)
    return out_dir


def make_optimizer(config: dict, train_examples: int):
    """Adam with the configured learning-rate schedule and gradient clipping."""
    import keras

    from kerasrnn.batching import steps_per_epoch

    lr = config["learning_rate"]
    if config["lr_schedule"] == "cosine":  # over every step of --epochs; early stopping may end sooner
        total = config["epochs"] * steps_per_epoch(train_examples, config["batch_size"])
        lr = keras.optimizers.schedules.CosineDecay(lr, total, alpha=COSINE_FLOOR)
    return keras.optimizers.Adam(lr, clipnorm=config["clipnorm"] or None)


def balanced_class_weights(train_counts: np.ndarray) -> np.ndarray:
    """--class-weight balanced: total / (classes x count) per label; 0 for a label training lacks."""
    total = train_counts.sum()
    return np.where(train_counts > 0, total / (len(train_counts) * np.maximum(train_counts, 1)),
                    0.0).astype("float32")


def fit(model, config: dict, data: Prepared, partial: Path, state: dict | None, trim: str | None,
        chief: bool = True, two_paths: bool = False, workers=None) -> dict:
    """model.fit from the checkpointed epoch on, with early stopping (`two_paths`: each path's own,
    kerasrnn.paths); the checkpoint state after it."""
    from kerasrnn.batching import fit_inputs
    from kerasrnn.checkpoint import epoch_checkpoint
    from kerasrnn.paths import path_stopping

    first_epoch = state["epochs_done"] if state else 0
    class_weights = balanced_class_weights(data.train_counts) if config["class_weight"] == "balanced" else None
    if workers is not None:  # JAX: this worker's rows of every global batch
        from kerasrnn.data_parallel import fit_inputs as worker_inputs

        inputs = worker_inputs(data, config, workers, first_epoch, trim, class_weights)
    else:
        inputs = fit_inputs(data, config["batch_size"], config["seed"], first_epoch, config["epochs"], trim,
                            class_weights)
    if config["distribute"] != "none" and workers is None:  # tf.distribute
        from kerasrnn.distribute import prepare_model, shard_by_data

        prepare_model(model, None if trim else data.tokenizer.max_len, class_weights is not None)
        if config["distribute"] == "multiworker":
            inputs["x"] = shard_by_data(inputs["x"])
            if inputs.get("validation_data") is not None:
                inputs["validation_data"] = shard_by_data(inputs["validation_data"])
    has_val = data.summary["validation"] > 0
    early = path_stopping(model, two_paths, has_val, config["patience"])
    verbose = config["verbose"] if config["verbose"] is not None else (1 if sys.stdout.isatty() else 2)
    # Under JAX, setting distributed weights (as the checkpoint does around saving the best ones) is a
    # collective: every process must take part. A worker other than the chief saves too, into a
    # folder of its own that goes when fit ends.
    scratch = tempfile.TemporaryDirectory(prefix="kerasrnn-worker-") if workers and not chief else None
    with scratch or contextlib.nullcontext(), warnings.catch_warnings():
        saver = epoch_checkpoint(Path(scratch.name) if scratch else partial, config, early, state,
                                 write=chief or scratch is not None)
        # Keras warns that fit's default shuffle=True is ignored for a tf.data input: ours is shuffled.
        warnings.filterwarnings("ignore", message=".*shuffle=True.*")
        model.fit(**inputs, epochs=config["epochs"], initial_epoch=saver.state["epochs_done"],
                  callbacks=[early, saver] + ([workers.clock()] if workers else []), verbose=verbose)
    return saver.state


def main(argv=None) -> int:
    config = parse_args(argv)
    out_dir = train(config)
    if out_dir is None:  # a multi-worker run's non-chief worker
        return 0
    from kerasrnn.run import METRICS_FILE, read_json

    metrics = read_json(out_dir / METRICS_FILE)
    print(f"test accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}  "
          f"({metrics['num_examples']} texts)")
    baseline = metrics.get("linear_baseline", {})
    if "accuracy" in baseline:
        print(f"linear baseline ({baseline['model']}, same split): accuracy {baseline['accuracy']:.4f}  "
              f"macro-F1 {baseline['macro_f1']:.4f}")
    elif baseline:
        print(f"linear baseline: skipped ({baseline['skipped']})")
    print(f"run folder: {out_dir}")
    print(f"next: python tools/export.py --format all --run {out_dir}")
    return 0


def cli() -> None:
    """Console-script entry point."""
    from kerasrnn.errors import cli_main

    sys.exit(cli_main(main))


if __name__ == "__main__":
    cli()
