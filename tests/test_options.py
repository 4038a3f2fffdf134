"""Options: defaults, the config file, flag checks, and the one list of model keys."""
from __future__ import annotations

import json

import pytest

from conftest import run_cli
from kerasrnn.errors import UserError
from kerasrnn.options import DEFAULTS, MODEL_ARGS, MODEL_KEYS, parse_args


def test_config_file_then_flags_override_in_process(tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"units": 6, "embed-dim": 4, "pooling": "mean"}))
    config = parse_args(["--config", str(cfg), "--units", "5"])
    assert config["units"] == 5 and config["embed_dim"] == 4 and config["pooling"] == "mean"
    assert config["epochs"] == DEFAULTS["epochs"] and "config" not in config


@pytest.mark.parametrize("content, message", [
    ('{"unit": 3}', "unknown option(s) unit"),
    ("[1, 2]", "expected a JSON object"),
    ('{"units": ', "invalid JSON"),
    ('{"bidirectional": "yes"}', "--bidirectional must be true or false"),
    ('{"dropout": 1.5}', "--dropout"),
    ('{"val_split": 0.6, "test_split": 0.5}', "--val-split and --test-split"),
    ('{"workers": "a:1"}', "--workers and --task-index go with --distribute multiworker"),
])
def test_bad_config_files_raise_user_errors(tmp_path, content, message):
    cfg = tmp_path / "c.json"
    cfg.write_text(content)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_args(["--config", str(cfg)])
    with pytest.raises(UserError, match="cannot read config"):
        parse_args(["--config", str(tmp_path / "missing.json")])


def test_pooling_choices_come_from_the_pooling_module(capsys):
    from kerasrnn import pooling

    assert DEFAULTS["pooling"] == pooling.DEFAULT
    for name in pooling.POOLINGS:
        assert parse_args(["--pooling", name])["pooling"] == name
    with pytest.raises(SystemExit):
        parse_args(["--pooling", "median"])
    assert "invalid choice" in capsys.readouterr().err


def test_one_list_of_model_keys():
    from kerasrnn.checkpoint import RESUME_KEYS
    from kerasrnn.model import model_kwargs

    from kerasrnn.checkpoint import ADDED_LATER

    # Checkpoints of interrupted runs are compared on RESUME_KEYS: it keeps every key it had, and a
    # key added since has the value a run from before it ran with, so that run still resumes.
    before = {"data", "text_column", "label_column", "test_data", "val_split", "test_split", "vocab_size", "max_len",
              "embed_dim", "units", "num_layers", "dropout", "pooling", "batch_size", "learning_rate", "class_weight",
              "seed", "split_seed", "epochs", "patience", "backend", "stream"}
    assert before <= set(RESUME_KEYS) and set(RESUME_KEYS) - before <= set(ADDED_LATER)
    assert set(MODEL_KEYS) <= set(RESUME_KEYS) and set(MODEL_KEYS) <= set(DEFAULTS)
    config = {"vocab_size": 10, "num_classes": 2, "max_len": 8, **{k: DEFAULTS[k] for k in MODEL_KEYS}}
    assert tuple(model_kwargs(config)) == MODEL_ARGS
    old = {k: v for k, v in config.items() if k not in ("bidirectional", "bag_dim")}  # from before the options
    assert model_kwargs(old)["bidirectional"] is False and model_kwargs(old)["bag_dim"] == 0


@pytest.mark.slow
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


@pytest.mark.slow
def test_bad_training_options_get_one_line_errors(tmp_path, tiny_csv):
    config_file = tmp_path / "c.json"
    config_file.write_text('{"bidirectional": "yes"}')
    for args, message in ((["--clipnorm", "-1"], "--clipnorm"), (["--config", str(config_file)], "--bidirectional"),
                          (["--lr-schedule", "step"], "invalid choice")):
        proc = run_cli(["-m", "kerasrnn.train", "--data", str(tiny_csv), "--output", str(tmp_path / "x"), *args])
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "x").exists()
