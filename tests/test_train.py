"""Training end to end through the CLI: the run folder, determinism, backends, distribution,
the `python -m kerasrnn <verb>` entry point and a quiet stderr."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, TINY, run_cli

RUN_FILES = ["model.keras", "vocab.txt", "labels.txt", "config.json", "metrics.json", "history.csv",
             "training_curves.png", "confusion_matrix.png", "README.md", "test_split.jsonl"]


@pytest.mark.slow
def test_run_folder_has_every_file(tiny_run):
    for name in RUN_FILES:
        assert (tiny_run / name).is_file(), name
    config = json.loads((tiny_run / "config.json").read_text())
    for key in ("embed_dim", "units", "vocab_size", "max_len", "labels", "tokenizer", "versions", "seed"):
        assert key in config
    assert config["tokenizer"]["max_len"] == 24 and config["labels"] == ["ham", "spam"]
    # auto: JAX is installed with the package and this machine has no GPU
    assert config["backend"] == config["versions"]["backend"] == "jax"
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    cm = np.array(metrics["confusion_matrix"]["rows_true_cols_predicted"])
    assert cm.sum() == metrics["num_examples"] == config["data_summary"]["test"]
    assert abs(np.trace(cm) / cm.sum() - metrics["accuracy"]) < 1e-6
    assert set(metrics["per_class"]) == {"ham", "spam"}
    # The linear baseline on the same split; its timing is in config.json, so metrics.json stays reproducible.
    baseline = metrics["linear_baseline"]
    assert 0 < baseline["accuracy"] <= 1 and "seconds" not in baseline
    assert config["training"]["linear_baseline_cpu_seconds"] >= 0
    assert f"{baseline['accuracy']:.4f}" in (tiny_run / "README.md").read_text()
    assert (tiny_run / "training_curves.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_same_seed_gives_identical_metrics_and_weights(tmp_path, tiny_csv, tiny_run):
    out = tmp_path / "again"
    proc = run_cli(["-m", "kerasrnn.train", "--data", str(tiny_csv), "--output", str(out), *TINY])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "metrics.json").read_bytes() == (tiny_run / "metrics.json").read_bytes()
    import keras

    import kerasrnn.linear  # noqa: F401  what a user's own code imports to load model.keras (README)

    a = keras.saving.load_model(tiny_run / "model.keras").get_weights()
    b = keras.saving.load_model(out / "model.keras").get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.slow
def test_jax_training_reloads_under_tensorflow(tmp_path, tiny_csv):
    out = tmp_path / "jaxrun"
    proc = run_cli(["-m", "kerasrnn.train", "--data", str(tiny_csv), "--output", str(out), *TINY],
                   env={"KERAS_BACKEND": "jax"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "config.json").read_text())["versions"]["backend"] == "jax"
    # Predictions from the JAX process, then from TensorFlow (this process) on the same file.
    script = ("import sys, json, numpy as np, keras; from kerasrnn.run import RunInfo;"
              "i = RunInfo.load(sys.argv[1]); t, _ = i.test_split();"
              "p = i.load_model().predict(i.tokenizer.encode(t[:64]), verbose=0);"
              "print(json.dumps(np.asarray(p).tolist()))")
    proc = run_cli(["-c", script, str(out)], env={"KERAS_BACKEND": "jax"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    jax_probs = np.array(json.loads(proc.stdout.strip().splitlines()[-1]))
    from kerasrnn.run import RunInfo

    info = RunInfo.load(out)
    texts, _ = info.test_split()
    tf_probs = info.load_model().predict(info.tokenizer.encode(texts[:64]), verbose=0)
    assert np.abs(tf_probs - jax_probs).max() <= 1e-5


@pytest.mark.slow
def test_tensorflow_backend_trains_on_trimmed_batches(tmp_path, tiny_csv):
    # The tensorflow path differs from JAX's: variable-length model, batches cut to their longest text.
    out = tmp_path / "tfrun"
    proc = run_cli(["-m", "kerasrnn.train", "--data", str(tiny_csv), "--output", str(out), *TINY,
                    "--backend", "tensorflow"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert config["backend"] == config["versions"]["backend"] == "tensorflow"
    from kerasrnn.run import RunInfo

    model = RunInfo.load(out).load_model()
    assert tuple(model.inputs[0].shape) == (None, config["max_len"])
    assert json.loads((out / "metrics.json").read_text())["accuracy"] > 0.5


@pytest.mark.slow
def test_backend_choice_errors(tmp_path, tiny_csv):
    proc = run_cli(["-m", "kerasrnn.train", "--data", str(tiny_csv), "--output", str(tmp_path / "x"),
                    "--backend", "torch", "--distribute", "mirrored"])
    assert proc.returncode == 2 and "runs on JAX" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli(["-m", "kerasrnn.train", "--data", str(tiny_csv), "--output", str(tmp_path / "y")],
                   env={"KERAS_BACKEND": "mxnet"})
    assert proc.returncode == 2 and "'mxnet'" in proc.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.slow
def test_tensorflow_mirrored_strategy_on_two_logical_cpus(tmp_path, tiny_csv):
    out = tmp_path / "mirrored"
    proc = run_cli(["-m", "kerasrnn.train", "--data", str(tiny_csv), "--output", str(out), *TINY,
                    "--epochs", "1", "--distribute", "mirrored", "--replicas", "2", "--backend", "tensorflow"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MirroredStrategy, replicas: 2" in proc.stdout
    assert (out / "model.keras").is_file()


@pytest.mark.slow
def test_predict_cli_text_and_json(tiny_run):
    proc = run_cli(["-m", "kerasrnn.predict", "--run", str(tiny_run), "--json", "hello", "FREE prize"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    assert [r["text"] for r in rows] == ["hello", "FREE prize"]
    for r in rows:
        assert r["label"] in ("ham", "spam")
        assert abs(sum(r["probabilities"].values()) - 1) < 1e-5
        assert r["probability"] == max(r["probabilities"].values())
    proc = run_cli(["-m", "kerasrnn.predict", "--run", str(tiny_run / "nope"), "x"])
    assert proc.returncode == 2 and proc.stderr.startswith("error:")


def test_optimizer_schedule_and_clipping():
    from kerasrnn.batching import steps_per_epoch
    from kerasrnn.options import COSINE_FLOOR, DEFAULTS
    from kerasrnn.train import make_optimizer

    constant = make_optimizer(DEFAULTS, 1000)
    assert constant.clipnorm is None and np.isclose(float(constant.learning_rate), DEFAULTS["learning_rate"])
    config = {**DEFAULTS, "lr_schedule": "cosine", "clipnorm": 1.5, "epochs": 4, "batch_size": 100}
    optimizer = make_optimizer(config, 1000)
    schedule, total = optimizer._learning_rate, 4 * steps_per_epoch(1000, 100)
    lr0, lr_end = float(schedule(0)), float(schedule(total))
    assert optimizer.clipnorm == 1.5
    assert np.isclose(lr0, config["learning_rate"]) and np.isclose(lr_end, COSINE_FLOOR * lr0)
    assert lr_end < float(schedule(total // 2)) < lr0


# --- stderr: no native start-up noise (kerasrnn.native_logs), unless KERASRNN_VERBOSE=1

NOISE = ("absl::InitializeLog", "InitGoogle", "cpu_feature_guard", "oneDNN", "node_def_util", "XNNPACK",
         "rebuild TensorFlow")


def noise_in(stderr: str) -> list[str]:
    import re

    return [line for line in stderr.splitlines()
            if any(n in line for n in NOISE) or re.match(r"[IWE]\d{4} \d\d:\d\d:", line)]


def run_as_user(args: list[str], **env) -> subprocess.CompletedProcess:
    """Like run_cli, but with the environment a user has: no TF_CPP_MIN_LOG_LEVEL."""
    full = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERASRNN_VERBOSE")}
    full.update(PYTHONPATH=str(REPO), **env)
    return subprocess.run([sys.executable, *args], cwd=REPO, env=full, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_training_prints_no_native_startup_noise(tmp_path, tiny_csv):
    # the TensorFlow backend: absl's pre-init line and tf.data's NodeDef error line without the filter
    proc = run_as_user(["-m", "kerasrnn.train", "--data", str(tiny_csv), "--output", str(tmp_path / "run"), *TINY,
                        "--epochs", "1", "--backend", "tensorflow"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert noise_in(proc.stderr) == [], proc.stderr
    assert "test accuracy" in proc.stdout


@pytest.mark.slow
def test_quiet_stderr_keeps_errors_and_verbose_brings_the_noise_back():
    script = ("import sys; from kerasrnn.errors import UserError, cli_main\n"
              "def main(argv):\n"
              "    import tensorflow\n"
              "    tensorflow.constant(1.0) + 1\n"
              "    print('real problem', file=sys.stderr)\n"
              "    raise UserError('bad input')\n"
              "sys.exit(cli_main(main))")
    quiet = run_as_user(["-c", script])
    assert quiet.returncode == 2 and noise_in(quiet.stderr) == [], quiet.stderr
    assert quiet.stderr.splitlines()[-2:] == ["real problem", "error: bad input"]
    unfiltered = run_as_user(["-c", "import tensorflow; tensorflow.constant(1.0) + 1"])
    if noise_in(unfiltered.stderr):  # this TensorFlow build is noisy here: --verbose shows it again
        verbose = run_as_user(["-c", script], KERASRNN_VERBOSE="1")
        assert noise_in(verbose.stderr) and verbose.stderr.splitlines()[-1] == "error: bad input"


# --- python -m kerasrnn <verb>

@pytest.mark.slow
def test_python_m_kerasrnn_lists_and_dispatches_verbs(tmp_path):
    listing = run_cli(["-m", "kerasrnn", "--help"])
    assert listing.returncode == 0
    for verb in ("train", "predict", "export", "parity", "bench"):
        assert f"  {verb} " in listing.stdout
    assert run_cli(["-m", "kerasrnn"]).returncode == 2
    unknown = run_cli(["-m", "kerasrnn", "fly"])
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1 and "'fly'" in unknown.stderr
    for args in (["--data", str(tmp_path / "nope.csv")], ["train", "--data", str(tmp_path / "nope.csv")]):
        proc = run_cli(["-m", "kerasrnn", *args])  # options alone: train, as before the verbs
        assert proc.returncode == 2 and proc.stderr.startswith("error:") and "nope.csv" in proc.stderr
    proc = run_cli(["-m", "kerasrnn", "predict", "--run", str(tmp_path / "none"), "hi"])
    assert proc.returncode == 2 and proc.stderr.startswith("error:")
    for verb, prog in (("export", "tools/export.py"), ("parity", "tools/check_parity.py"), ("bench", "tools/bench.py")):
        proc = run_cli(["-m", "kerasrnn", verb, "--help"])
        assert proc.returncode == 0 and prog in proc.stdout, proc.stderr


@pytest.mark.slow
def test_bench_verb_outside_a_checkout_says_so(tmp_path):
    site = tmp_path / "site"
    shutil.copytree(REPO / "kerasrnn", site / "kerasrnn", ignore=shutil.ignore_patterns("__pycache__"))
    proc = run_cli(["-m", "kerasrnn", "bench"], cwd=tmp_path, env={"PYTHONPATH": str(site)})
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "source checkout" in proc.stderr
