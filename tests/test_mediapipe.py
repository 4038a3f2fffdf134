"""On-device behaviour, proven with MediaPipe's own TextClassifier (as an app would call it)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kerasrnn.tokenizer import Tokenizer, build_vocabulary


def _capitalise_words(text: str) -> str:
    return " ".join(w[:1].upper() + w[1:] for w in text.split(" "))


@pytest.mark.slow
def test_capitalised_and_upper_case_text_scores_like_keras_on_lower_case(tiny_run, tiny_exports):
    from kerasrnn.run import RunInfo
    from kerasrnn.runtimes import MediaPipeRuntime

    info = RunInfo.load(tiny_run)
    texts, _ = info.test_split()
    lower = [t.lower() for t in texts]
    keras_probs = info.load_model().predict(info.tokenizer.encode(lower), verbose=0)
    mp = MediaPipeRuntime(tiny_exports / "tflite/model.tflite")
    try:
        for variant in ([_capitalise_words(t) for t in lower], [t.upper() for t in lower]):
            # Same ids in Python first (the case rule), then the same scores on the device.
            same_ids = (info.tokenizer.encode(variant) == info.tokenizer.encode(lower)).all(axis=1)
            assert same_ids.mean() > 0.98, "case variants should map to the same ids"
            probs = mp.predict_texts(variant)
            assert np.abs(probs[same_ids] - keras_probs[same_ids]).max() <= 1e-5
    finally:
        mp.close()


@pytest.fixture(scope="module")
def id_probe(tmp_path_factory):
    """A .tflite whose 'scores' are its input ids: MediaPipe then shows us the ids it computed."""
    import keras

    from kerasrnn.export import mediapipe_metadata as mpm
    from kerasrnn.export.tflite import _convert

    words = build_vocabulary(["free entry win prize call now ünïcödé 漢字 🙂 ok lunch"] * 2 + ["Straße café"], 100)
    tok = Tokenizer(words, max_len=12)
    inp = keras.Input((tok.max_len,), batch_size=1, dtype="int32")
    model = keras.Model(inp, keras.ops.cast(inp, "float32"))
    labels = [f"position_{i}" for i in range(tok.max_len)]
    raw = _convert(model, "float32", None)
    meta = mpm.build_metadata(tok.delim_regex, labels, "probe", "ids as scores", "1")
    data = mpm.attach(raw, meta, {"vocab.txt": ("\n".join(tok.vocab_lines()) + "\n").encode(),
                                  "labels.txt": ("\n".join(labels) + "\n").encode()})
    path = tmp_path_factory.mktemp("probe") / "probe.tflite"
    path.write_bytes(data)
    from kerasrnn.runtimes import MediaPipeRuntime

    mp = MediaPipeRuntime(path)
    yield tok, mp
    mp.close()


TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=60)
WORDY = st.lists(st.sampled_from(["free", "FREE", "Free", "fReE", "win", "WIN", "ünïcödé", "ÜNÏCÖDÉ", "漢字",
                                  "🙂", "ok", "Straße", "STRASSE", "café", " ", ",", "...", "\n", "’", "—",
                                  "\u00a0", "\u3000", "\u2028", "_", "'"]), max_size=20).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(TEXT, WORDY))
def test_python_ids_equal_mediapipe_ids(id_probe, text):
    tok, mp = id_probe
    device_ids = mp.predict_texts([text])[0].round().astype(int)
    assert device_ids.tolist() == tok.encode_one(text)
