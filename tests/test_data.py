"""Data input: every format, and a one-line error with exit code 2 for every bad input."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from conftest import TINY, run_cli, write_csv
from kerasrnn.data import load_dataset, stratified_split
from kerasrnn.errors import UserError

ROWS = [("free prize now", "spam"), ("see you at lunch", "ham"), ("win cash", "spam"), ("ok thanks", "ham")]


def test_csv_tsv_jsonl_folder_gz_read_the_same(tmp_path):
    write_csv(tmp_path / "d.csv", ROWS)
    (tmp_path / "d.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{l}\n" for t, l in ROWS), encoding="utf-8")
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in ROWS))
    (tmp_path / "d.csv.gz").write_bytes(gzip.compress((tmp_path / "d.csv").read_bytes()))
    for i, (t, l) in enumerate(ROWS):
        (tmp_path / "folder" / l).mkdir(parents=True, exist_ok=True)
        (tmp_path / "folder" / l / f"{i}.txt").write_text(t, encoding="utf-8")
    expected = sorted(ROWS)
    for name in ("d.csv", "d.tsv", "d.jsonl", "d.csv.gz", "folder"):
        data = load_dataset(tmp_path / name)
        assert sorted(zip(data.texts, data.labels)) == expected, name


def test_custom_columns_bom_crlf_and_integer_labels(tmp_path):
    f = tmp_path / "d.csv"
    f.write_bytes("\ufeffbody,cls\r\nhello there,1\r\nbuy now,0\r\n".encode("utf-8"))
    data = load_dataset(f, "body", "cls")
    assert data.texts == ["hello there", "buy now"] and data.labels == ["1", "0"]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"text": "a b", "label": 3}\n{"text": "c d", "label": 10}\n')
    from kerasrnn.data import label_order

    assert label_order(load_dataset(jsonl).labels) == ["3", "10"]  # integers sort numerically


def test_blank_texts_are_skipped_and_counted(tmp_path):
    data = load_dataset(write_csv(tmp_path / "d.csv", ROWS + [("   ", "ham"), ("", "spam")]))
    assert len(data.texts) == 4 and data.skipped_blank == 2


def test_stratified_split_is_seeded_and_keeps_classes():
    y = np.array([0] * 90 + [1] * 10)
    a = stratified_split(y, [0.1, 0.2], seed=3)
    b = stratified_split(y, [0.1, 0.2], seed=3)
    assert all((x == z).all() for x, z in zip(a, b))
    assert sorted(np.concatenate(a).tolist()) == list(range(100))
    assert (y[a[2]] == 1).sum() == 2 and (y[a[1]] == 1).sum() == 1


def _bad_inputs(tmp_path):
    cases = {}
    cases["missing file"] = (tmp_path / "nope.csv", [], "no such file")
    cases["unknown column"] = (write_csv(tmp_path / "cols.csv", ROWS, header=("body", "label")), [],
                               "no column 'text'; available: 'body', 'label'")
    (tmp_path / "empty.csv").write_text("")
    cases["empty file"] = (tmp_path / "empty.csv", [], "empty")
    cases["one class"] = (write_csv(tmp_path / "one.csv", [("a b", "x"), ("c d", "x")]), [], "only one class")
    (tmp_path / "latin1.csv").write_bytes(b"text,label\nok fine,ham\ncaf\xe9 au lait,ham\n")
    cases["undecodable bytes"] = (tmp_path / "latin1.csv", [], "latin1.csv:3:4: byte 0xe9 is not valid UTF-8")
    cases["all blank"] = (write_csv(tmp_path / "blank.csv", [(" ", "a"), ("", "b")]), [], "no non-empty texts (2 blank")
    (tmp_path / "quotes.csv").write_text('text,label\n"unbalanced,ham\nfine,spam\n')
    cases["unbalanced quotes"] = (tmp_path / "quotes.csv", [], "quotes.csv:")
    (tmp_path / "ragged.csv").write_text("text,label\na b,ham,extra\n")
    cases["ragged row"] = (tmp_path / "ragged.csv", [], "ragged.csv:2: 3 fields where the header has 2")
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": oops}\n')
    cases["bad json line"] = (tmp_path / "bad.jsonl", [], "bad.jsonl:2:")
    (tmp_path / "d.xlsx").write_text("x")
    cases["unknown type"] = (tmp_path / "d.xlsx", [], "unknown file type '.xlsx'")
    good = write_csv(tmp_path / "good.csv", ROWS * 5)
    test = write_csv(tmp_path / "test.csv", [("hello", "ham"), ("new thing", "other")])
    cases["unseen test label"] = (good, ["--test-data", str(test)], "test.csv:3: label 'other' in --test-data was never seen")
    return cases


def test_bad_inputs_in_process(tmp_path):
    for name, (path, extra, message) in _bad_inputs(tmp_path).items():
        if extra:
            continue
        with pytest.raises(UserError) as err:
            data = load_dataset(path)
            if len(set(data.labels)) < 2:
                raise UserError("only one class")
        assert message in str(err.value), (name, str(err.value))


@pytest.mark.parametrize("case", ["missing file", "unknown column", "undecodable bytes", "one class",
                                  "unseen test label", "ragged row"])
@pytest.mark.slow
def test_bad_input_cli_one_line_exit_2_nothing_written(tmp_path, case):
    path, extra, message = _bad_inputs(tmp_path)[case]
    out = tmp_path / "run"
    proc = run_cli(["-m", "kerasrnn.train", "--data", str(path), "--output", str(out), *extra, *TINY])
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()
    assert not list(tmp_path.glob(".run.partial*"))


@pytest.mark.slow
def test_existing_output_is_never_overwritten(tmp_path, tiny_csv):
    out = tmp_path / "run"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    proc = run_cli(["-m", "kerasrnn.train", "--data", str(tiny_csv), "--output", str(out), *TINY])
    assert proc.returncode == 2 and "already exists" in proc.stderr
    assert (out / "mine.txt").read_text() == "keep me" and len(list(out.iterdir())) == 1


def test_split_seed_fixes_the_split_across_model_seeds(tiny_csv):
    from kerasrnn.options import parse_args
    from kerasrnn.prepare import prepare_data

    def test_texts(*args):
        return prepare_data(parse_args(["--data", str(tiny_csv), "--max-len", "16", *args])).arrays.test_texts

    assert test_texts("--seed", "0", "--split-seed", "0") == test_texts("--seed", "1", "--split-seed", "0")
    assert test_texts("--seed", "0") != test_texts("--seed", "1")


def test_in_memory_and_streamed_preparation_give_one_type(tiny_csv):
    from kerasrnn.options import parse_args
    from kerasrnn.prepare import Prepared, prepare_data

    memory = prepare_data(parse_args(["--data", str(tiny_csv), "--max-len", "16"]))
    streamed = prepare_data(parse_args(["--data", str(tiny_csv), "--max-len", "16", "--stream"]))
    for data in (memory, streamed):
        assert isinstance(data, Prepared) and data.labels == ["ham", "spam"]
        assert data.train_counts.sum() == data.summary["train"]
        assert set(data.summary) >= {"source", "rows_used", "blank_texts_skipped", "train", "validation", "test"}
    assert not memory.streamed and memory.corpus is None and memory.arrays.x_train.shape[1] == 16
    assert streamed.streamed and streamed.arrays is None


# --- max_len: one rule (kerasrnn.max_len) for the in-memory and the streamed path

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=1, max_size=400))
def test_max_len_from_a_histogram_is_the_interpolated_percentile(token_counts):
    from kerasrnn import max_len

    lengths = [min(n, 256) + 1 for n in token_counts]
    counts = max_len.empty_histogram()
    for n in token_counts:
        counts[max_len.length_of(n)] += 1
    assert max_len.percentile_of_histogram(counts) == np.percentile(lengths, 95)
    assert max_len.from_histogram(counts) == int(min(256, max(8, int(np.ceil(np.percentile(lengths, 95))))))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=1, max_size=120))
def test_derived_max_len_of_texts_is_the_percentile_of_their_token_counts(token_counts):
    """Through the tokenizer: texts of n tokens give np.percentile of min(n, 256) + 1 (<START>),
    rounded up, within [8, 256] (what tokenizer.derive_max_len, which this rule replaced, computed)."""
    from kerasrnn import max_len

    texts = [" ".join(["w"] * n) for n in token_counts]
    lengths = [min(n, 256) + 1 for n in token_counts]
    assert max_len.derive(texts) == int(min(256, max(8, int(np.ceil(np.percentile(lengths, 95))))))


def test_streamed_and_in_memory_paths_derive_the_same_max_len(tmp_path):
    """Lengths where the old histogram rule (no interpolation, counts capped at 255) was off by one."""
    from kerasrnn import max_len
    from kerasrnn.stream import Corpus

    rng = np.random.default_rng(5)
    for trial in range(6):
        n_words = rng.integers(1, 320, 150)
        rows = [(" ".join(f"w{j}" for j in range(n)) + f" t{trial}x{i}", "ab"[i % 2]) for i, n in enumerate(n_words)]
        path = write_csv(tmp_path / f"d{trial}.csv", rows)
        corpus = Corpus([path], val_split=0.0, test_split=0.0)
        streamed = corpus.scan(1000, None, count_cap=100_000)["max_len"]
        assert streamed == max_len.derive([t for t, _ in rows])


def test_label_with_a_line_break_is_refused_with_its_line(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text('text,label\nhello there,ham\n"free prize","spam\nham"\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"d\.csv:4: label 'spam\\nham' contains a line break"):
        load_dataset(f)
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text(json.dumps({"text": "a", "label": "x\u2028y"}) + "\n")
    with pytest.raises(UserError, match=r"d\.jsonl:1: .*line break"):
        load_dataset(jsonl)


def test_duplicated_column_name_is_refused(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("text,label,text\nhello,ham,other\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"d\.csv:1: column 'text' appears 2 times \(columns 1, 3\)"):
        load_dataset(f)
    f.write_text("text,label,label\nhello,ham,spam\n", encoding="utf-8")
    with pytest.raises(UserError, match="column 'label' appears 2 times"):
        load_dataset(f)


def test_labels_with_surrounding_spaces_are_merged_and_counted(tmp_path):
    data = load_dataset(write_csv(tmp_path / "d.csv", ROWS + [("more cash", " spam"), ("hi", "ham ")]))
    assert set(data.labels) == {"ham", "spam"} and data.labels_trimmed == 2
    assert load_dataset(write_csv(tmp_path / "e.csv", ROWS)).labels_trimmed == 0
