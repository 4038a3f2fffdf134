"""Training options: every default, the command line, the config file and the checks.

Every option can also come from a JSON config file (`--config`); flags given on the command line
win over the file, the file wins over the defaults below.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from kerasrnn import pooling
from kerasrnn.errors import UserError

# Plain data: every hyperparameter and its default.
DEFAULTS = {
    "data": None,               # None: the packaged SMS spam dataset
    "text_column": "text",
    "label_column": "label",
    "test_data": None,
    "val_split": 0.1,
    "test_split": 0.2,
    "vocab_size": 20000,
    "min_count": 2,             # a word seen once in training gets an id it learns nothing useful for (#15)
    "max_len": None,            # None: 95th percentile of training token counts, within [8, 256]
    "embed_dim": 128,           # 64 -> 128: +2.1 points on 20 Newsgroups for 1.2x the time (README, Accuracy)
    "units": 64,                # 128 units gained 0.1-1.5 points for 2-2.5x the time and half the speed
    "num_layers": 1,
    "dropout": 0.5,             # keeps the recurrence from fitting the training set first
    "bidirectional": False,
    "bag_dim": 0,               # a mean-of-embeddings path of this width inside the RNN's features; 0: none
    "linear": "tfidf",          # a linear TF-IDF path beside the RNN, scores added before the softmax (#15)
    "bigrams": 20000,           # word pairs the linear path knows (most frequent in training); 0: words only
    "linear_solver": "auto",    # auto: LinearSVC before model.fit when the texts are in memory, else in the fit
    "pooling": pooling.DEFAULT,  # max over the RNN outputs: far better than the last state on long texts
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
    "vocab": None,              # a vocabulary file of `python -m kerasrnn.vocab`: no corpus pass before training
    "output": None,             # None: runs/<timestamp>
    "resume": None,             # run folder of an interrupted run to continue
    "verbose": None,            # None: progress bar on a terminal, one line per epoch otherwise
}

# The options that shape the network, passed to model.build_model as they are. With the sizes the
# data decides (DATA_MODEL_KEYS: the tokenizer's vocabulary and max_len, the number of labels) they
# are build_model's arguments and what config.json records of the model (MODEL_ARGS); a resumed run
# must match them (checkpoint.RESUME_KEYS).
MODEL_KEYS = ("embed_dim", "units", "num_layers", "dropout", "pooling", "bidirectional", "bag_dim", "linear", "bigrams")
# What a run recorded before these options existed ran with (its config.json lacks the key).
MODEL_ADDED_LATER = {"bidirectional": False, "bag_dim": 0, "linear": "none", "bigrams": 0, "linear_terms": None,
                     "linear_slots": None}
# linear_terms: rows of the linear path (the vocabulary, then the word pairs the training split had);
# linear_slots: its pair hash table's size (kerasrnn.linear.term_statistics decides both).
DATA_MODEL_KEYS = ("vocab_size", "num_classes", "max_len", "linear_terms", "linear_slots")
LINEAR_CHOICES = ("tfidf", "none")
LINEAR_SOLVERS = ("auto", "liblinear", "fit")
MODEL_ARGS = DATA_MODEL_KEYS + MODEL_KEYS

LR_SCHEDULES = ("constant", "cosine")
COSINE_FLOOR = 0.05  # --lr-schedule cosine ends at this fraction of --learning-rate


def parse_args(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m kerasrnn.train",
                                description="Train a recurrent text classifier: `python -m kerasrnn.train "
                                            "[--data FILE] [options]`.",
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
    p.add_argument("--min-count", type=int, help="keep only words seen at least this often in training (and at "
                                                 "most --vocab-size of them)")
    p.add_argument("--max-len", type=int, help="tokens per text including <START>")
    p.add_argument("--embed-dim", type=int)
    p.add_argument("--units", type=int)
    p.add_argument("--num-layers", type=int)
    p.add_argument("--dropout", type=float)
    p.add_argument("--pooling", choices=pooling.POOLINGS, help="how the RNN outputs become one vector")
    p.add_argument("--bag-dim", type=int, help="width of a bag-of-words path beside the RNN (a second embedding "
                                               "averaged over the text, joined before the Dense layer); 0 = none")
    p.add_argument("--linear", choices=LINEAR_CHOICES,
                   help="tfidf (default): a linear model over the text's TF-IDF (words and --bigrams pairs) "
                        "beside the RNN (a linear SVM: see --linear-solver), its scores added to the RNN's; "
                        "none: RNN only")
    p.add_argument("--bigrams", type=int, help="word pairs in the linear path's vocabulary (the most frequent "
                                               "seen in 2+ training texts); 0: single words only")
    p.add_argument("--linear-solver", choices=LINEAR_SOLVERS,
                   help="how the linear path is trained: liblinear (scikit-learn's LinearSVC, exact, before "
                        "model.fit; needs the texts in memory), fit (hinge loss inside model.fit, as a streamed "
                        "corpus needs), auto (default): liblinear unless the data is streamed")
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
    p.add_argument("--vocab", metavar="FILE",
                   help="the vocabulary file `python -m kerasrnn.vocab` made for this streamed corpus: training "
                        "skips the passes over the whole corpus (every worker of a cluster would repeat them)")
    p.add_argument("--output", help="run folder to create (default runs/<timestamp>); "
                                    "an interrupted run with the same --output is resumed")
    p.add_argument("--resume", metavar="DIR", help="continue the interrupted run that was to write DIR")
    p.add_argument("--verbose", type=int, choices=[0, 1, 2], help="Keras progress output")
    args = vars(p.parse_args(argv))
    return resolve_config(args)


def resolve_config(cli: dict) -> dict:
    """Defaults, then the --config file, then the flags given; checked."""
    config = dict(DEFAULTS)
    path = cli.pop("config", None)
    if path:
        config.update(read_config_file(path))
    config.update(cli)
    check(config)
    return config


def read_config_file(path: str) -> dict:
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
    return {k.replace("-", "_"): v for k, v in from_file.items()}


def check(config: dict) -> None:
    """UserError naming the first option out of range (a config file bypasses argparse's checks)."""
    checks = [
        (0 <= config["val_split"] < 1 and 0 <= config["test_split"] < 1
         and config["val_split"] + config["test_split"] < 1, "--val-split and --test-split must be in [0, 1) with sum < 1"),
        (config["vocab_size"] >= 4, "--vocab-size must be at least 4"),
        (isinstance(config["min_count"], int) and config["min_count"] >= 1, "--min-count must be at least 1"),
        (isinstance(config["bag_dim"], int) and config["bag_dim"] >= 0, "--bag-dim must be 0 (none) or positive"),
        (config["linear"] in LINEAR_CHOICES, f"--linear must be one of {', '.join(LINEAR_CHOICES)}"),
        (config["linear_solver"] in LINEAR_SOLVERS, f"--linear-solver must be one of {', '.join(LINEAR_SOLVERS)}"),
        (isinstance(config["bigrams"], int) and 0 <= config["bigrams"] <= 1 << 24,
         "--bigrams must be between 0 (none) and 16777216"),
        (config["max_len"] is None or config["max_len"] >= 2, "--max-len must be at least 2"),
        (min(config["embed_dim"], config["units"], config["num_layers"], config["epochs"], config["batch_size"],
             config["replicas"]) >= 1, "--embed-dim, --units, --num-layers, --epochs, --batch-size and --replicas must "
                                      "be positive"),
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
