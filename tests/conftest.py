"""Shared fixtures: a tiny dataset, one tiny trained run and its exports, reused across tests."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Small model, few epochs: tests check behaviour, not accuracy (that is the benchmarks' job).
TINY = ["--embed-dim", "16", "--units", "16", "--epochs", "4", "--learning-rate", "0.005", "--vocab-size", "1500", "--max-len", "24",
        "--batch-size", "32", "--verbose", "0"]


def datasets_dir() -> Path:
    return Path(os.environ.get("KERASRNN_DATASETS", REPO.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    path = datasets_dir()
    if not (path / "sms_spam.csv").is_file():
        pytest.skip(f"shared datasets not found at {path} (set KERASRNN_DATASETS)")
    return path


def run_cli(args: list[str], cwd: Path | None = None, env: dict | None = None, timeout: int = 600,
            stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run `python <args>` as a user would; returns the completed process (text mode)."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd or REPO, env=full_env, capture_output=True,
                          text=True, timeout=timeout, input=stdin)


def write_csv(path: Path, rows: list[tuple[str, str]], header=("text", "label")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture(scope="session")
def sms_rows() -> list[tuple[str, str]]:
    """The packaged SMS data (always available: it ships in the package)."""
    from kerasrnn.data import load_dataset

    data = load_dataset(None)
    return list(zip(data.texts, data.labels))


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory, sms_rows) -> Path:
    """1000 SMS rows, stratified enough for both classes in every split."""
    ham = [r for r in sms_rows if r[1] == "ham"][:800]
    spam = [r for r in sms_rows if r[1] == "spam"][:200]
    return write_csv(tmp_path_factory.mktemp("data") / "tiny.csv", ham + spam)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_csv) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    proc = run_cli(["-m", "kerasrnn.train", "--data", str(tiny_csv), "--output", str(out), *TINY])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def tiny_exports(tmp_path_factory, tiny_run) -> Path:
    out = tmp_path_factory.mktemp("exports") / "exports"
    proc = run_cli(["tools/export.py", "--format", "all", "--run", str(tiny_run), "--out", str(out)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out
