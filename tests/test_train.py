"""Training end to end through the CLI, the run folder, determinism, backends, distribution."""
from __future__ import annotations

import json

import numpy as np

from conftest import TINY, run_cli

RUN_FILES = ["model.keras", "vocab.txt", "labels.txt", "config.json", "metrics.json", "history.csv",
             "training_curves.png", "confusion_matrix.png", "README.md", "test_split.jsonl"]


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
    assert (tiny_run / "training_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_same_seed_gives_identical_metrics_and_weights(tmp_path, tiny_csv, tiny_run):
    out = tmp_path / "again"
    proc = run_cli(["-m", "kerasrnn.train", "--data", str(tiny_csv), "--output", str(out), *TINY])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "metrics.json").read_bytes() == (tiny_run / "metrics.json").read_bytes()
    import keras

    a = keras.saving.load_model(tiny_run / "model.keras").get_weights()
    b = keras.saving.load_model(out / "model.keras").get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_config_file_and_flag_precedence(tmp_path, tiny_csv):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"units": 6, "embed_dim": 4, "epochs": 1, "max_len": 12, "vocab_size": 300,
                               "verbose": 0, "class_weight": "balanced", "pooling": "mean"}))
    out = tmp_path / "run"
    proc = run_cli(["-m", "kerasrnn.train", "--config", str(cfg), "--data", str(tiny_csv), "--units", "5",
                    "--output", str(out)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    config = json.loads((out / "config.json").read_text())
    assert config["units"] == 5 and config["embed_dim"] == 4 and config["max_len"] == 12
    assert config["class_weight"] == "balanced" and config["pooling"] == "mean"
    bad = tmp_path / "bad.json"
    bad.write_text('{"unit": 3}')
    proc = run_cli(["-m", "kerasrnn.train", "--config", str(bad)])
    assert proc.returncode == 2 and "unknown option(s) unit" in proc.stderr


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


def test_backend_choice_errors(tmp_path, tiny_csv):
    proc = run_cli(["-m", "kerasrnn.train", "--data", str(tiny_csv), "--output", str(tmp_path / "x"),
                    "--backend", "jax", "--distribute", "mirrored"])
    assert proc.returncode == 2 and "--backend tensorflow" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli(["-m", "kerasrnn.train", "--data", str(tiny_csv), "--output", str(tmp_path / "y")],
                   env={"KERAS_BACKEND": "mxnet"})
    assert proc.returncode == 2 and "'mxnet'" in proc.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_mirrored_strategy_on_two_logical_cpus(tmp_path, tiny_csv):
    out = tmp_path / "mirrored"
    proc = run_cli(["-m", "kerasrnn.train", "--data", str(tiny_csv), "--output", str(out), *TINY,
                    "--epochs", "1", "--distribute", "mirrored", "--replicas", "2"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "replicas: 2" in proc.stdout
    assert (out / "model.keras").is_file()


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


def test_batches_are_cut_to_their_longest_text_or_its_bucket():
    from kerasrnn.train import make_dataset, trim_lengths

    assert trim_lengths(35, "buckets") == [35] and trim_lengths(200, "buckets") == [32, 64, 200]
    rng = np.random.default_rng(0)
    x = np.zeros((200, 200), np.int32)
    for i, n in enumerate(rng.integers(1, 120, 200)):
        x[i, :n] = rng.integers(3, 50, n)
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
    from kerasrnn.train import numpy_batches

    rng = np.random.default_rng(1)
    x = np.zeros((100, 200), np.int32)
    for i, n in enumerate(rng.integers(1, 120, 100)):
        x[i, :n] = rng.integers(3, 50, n)
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


def test_optimizer_schedule_and_clipping():
    from kerasrnn.train import COSINE_FLOOR, DEFAULTS, make_optimizer, steps_per_epoch

    constant = make_optimizer(DEFAULTS, 1000)
    assert constant.clipnorm is None and np.isclose(float(constant.learning_rate), DEFAULTS["learning_rate"])
    config = {**DEFAULTS, "lr_schedule": "cosine", "clipnorm": 1.5, "epochs": 4, "batch_size": 100}
    optimizer = make_optimizer(config, 1000)
    schedule, total = optimizer._learning_rate, 4 * steps_per_epoch(1000, 100)
    lr0, lr_end = float(schedule(0)), float(schedule(total))
    assert optimizer.clipnorm == 1.5
    assert np.isclose(lr0, config["learning_rate"]) and np.isclose(lr_end, COSINE_FLOOR * lr0)
    assert lr_end < float(schedule(total // 2)) < lr0


def test_bad_training_options_get_one_line_errors(tmp_path, tiny_csv):
    config_file = tmp_path / "c.json"
    config_file.write_text('{"bidirectional": "yes"}')
    for args, message in ((["--clipnorm", "-1"], "--clipnorm"), (["--config", str(config_file)], "--bidirectional"),
                          (["--lr-schedule", "step"], "invalid choice")):
        proc = run_cli(["-m", "kerasrnn.train", "--data", str(tiny_csv), "--output", str(tmp_path / "x"), *args])
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "x").exists()
