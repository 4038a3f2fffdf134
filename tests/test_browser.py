"""The shipped files in a real browser, as web users run them: headless Chromium (Debian's
package) driven by puppeteer-core, MediaPipe Tasks Text for Web on every .tflite, onnxruntime-web on
model.onnx, and the exported web page typed into. Everything is served from 127.0.0.1; the npm
packages are the ones tests/browser/package-lock.json pins (`npm ci` in tests/browser).

Without node, the npm packages or chromium these tests skip, unless KERASRNN_REQUIRE_BROWSER=1
(.ci/run sets it), where a missing piece fails them.
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest

from conftest import REPO, run_cli

BROWSER = REPO / "tests" / "browser"
NPM = BROWSER / "node_modules"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# The one request the pages may send off this machine: MediaPipe's usage logging (README,
# "Deploying to the web"); it fails harmlessly offline. Anything else offsite is a bug.
USAGE_LOG_HOSTS = ("odml.pa.googleapis.com",)  # POST /v1/log, from text_bundle.mjs
# Browser vs Python on the same file: the WASM kernels are not the x86 ones, so float sums may
# round differently; the rules against Keras are parity's own (TOLERANCES).
SAME_FILE_MAX_ABS = {"float32": 1e-5, "float16": 1e-4, "dynamic": 5e-4, "int8": 5e-4}

pytestmark = pytest.mark.slow


def _missing() -> str | None:
    if shutil.which("node") is None:
        return "node not found"
    if not (NPM / "puppeteer-core").is_dir() or not (NPM / "@mediapipe" / "tasks-text").is_dir():
        return "npm packages not installed (cd tests/browser && npm ci)"
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} not found (apt install chromium, or set CHROMIUM)"
    return None


@pytest.fixture(scope="module", autouse=True)
def _browser_available():
    reason = _missing()
    if reason:
        if os.environ.get("KERASRNN_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser check required but {reason}")
        pytest.skip(reason)


class _Handler(http.server.SimpleHTTPRequestHandler):
    """/npm/ -> tests/browser/node_modules, /harness/ -> tests/browser, /exports/ -> the exports."""

    roots: dict = {}
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm",
                      ".tflite": "application/octet-stream", ".onnx": "application/octet-stream"}

    def translate_path(self, path):
        path = unquote(urlparse(path).path)
        for prefix, root in self.roots.items():
            if path.startswith(prefix):
                target = (root / path[len(prefix):]).resolve()
                if target == root or root in target.parents:
                    return str(target)
        return str(REPO / "does-not-exist")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_exports):
    """The tiny run's exports plus a web page with local MediaPipe assets, served on 127.0.0.1."""
    exports = tmp_path_factory.mktemp("browser") / "exports"
    shutil.copytree(tiny_exports, exports)
    proc = run_cli(["tools/export.py", "--format", "web", "--run", json.loads(
        (exports / "manifest.json").read_text())["source_run"], "--out", str(exports),
        "--web-assets", str(NPM / "@mediapipe" / "tasks-text")])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    handler = type("Handler", (_Handler,), {"roots": {"/npm/": NPM.resolve(), "/harness/": BROWSER.resolve(),
                                                      "/exports/": exports.resolve()}})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield exports, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _drive(mode: str, url: str, payload: dict, tmp_path: Path) -> dict:
    job, out = tmp_path / f"{mode}.json", tmp_path / f"{mode}-out.json"
    job.write_text(json.dumps(payload), encoding="utf-8")
    proc = subprocess.run(["node", str(BROWSER / "drive.mjs"), mode, url, str(job), str(out)], cwd=BROWSER,
                          capture_output=True, text=True, timeout=900)
    result = json.loads(out.read_text()) if out.is_file() else {}
    assert proc.returncode == 0 and "failed" not in result, (result.get("failed"), result.get("errors"), proc.stderr[-2000:])
    assert not result["errors"], result["errors"]
    offsite = [u for u in result["offsite"] if urlparse(u).hostname not in USAGE_LOG_HOSTS]
    assert not offsite, f"requests that left 127.0.0.1: {offsite}"
    return result


@functools.lru_cache(maxsize=1)
def _case(run: str):
    from kerasrnn.export import parity
    from kerasrnn.run import RunInfo

    info = RunInfo.load(run)
    texts, labels = info.test_split()
    texts = list(texts) + parity.edge_cases(info.tokenizer.max_len)
    index = {lab: i for i, lab in enumerate(info.labels)}
    y = np.array([index[lab] for lab in labels] + [-1] * (len(texts) - len(labels)))
    ids = info.tokenizer.encode(texts)
    return info, texts, y, ids, info.load_model().predict(ids, verbose=0)


def test_every_shipped_file_answers_in_the_browser_as_in_python(served, tiny_run, tmp_path):
    from kerasrnn.export import parity
    from kerasrnn.runtimes import MediaPipeRuntime, OnnxRuntime

    exports, base = served
    info, texts, y, ids, keras_probs = _case(str(tiny_run))
    artifacts = [a for a in parity.artifacts_from_manifest(exports) if a.path.suffix in (".tflite", ".onnx")]
    tflite = [a for a in artifacts if a.path.suffix == ".tflite"]
    onnx = [a for a in artifacts if a.path.suffix == ".onnx"]
    assert {a.quantization for a in tflite} == {"float32", "float16", "dynamic", "int8"} and len(onnx) == 1
    url = {a.name: f"{base}/exports/{a.name}" for a in artifacts}
    result = _drive("job", f"{base}/harness/harness.html",
                    {"mediapipe": [url[a.name] for a in tflite], "onnx": [url[a.name] for a in onnx],
                     "texts": texts, "ids": ids.tolist(), "batch": 32}, tmp_path)
    for artifact in artifacts:
        if artifact.path.suffix == ".tflite":
            browser = np.array(result["mediapipe"][url[artifact.name]], np.float32)
            mp = MediaPipeRuntime(artifact.path)
            python = mp.predict_texts(texts)
            mp.close()
        else:
            browser = np.array(result["onnx"][url[artifact.name]], np.float32)
            python = OnnxRuntime(artifact.path).predict_ids(ids)
        assert browser.shape == keras_probs.shape, artifact.name
        judged = parity._compare(artifact, "browser", browser, keras_probs, y, artifact.path.stat().st_size)
        assert judged.passed, f"{artifact.name} in the browser: {judged.reasons}"
        same_file = float(np.abs(browser - python).max())
        assert same_file <= SAME_FILE_MAX_ABS[artifact.quantization], (artifact.name, same_file)
        assert (browser.argmax(1) == python.argmax(1)).all(), artifact.name


def test_the_exported_web_page_classifies_typed_text(served, tiny_run, tmp_path):
    from kerasrnn.runtimes import MediaPipeRuntime

    exports, base = served
    info, texts, _, _, keras_probs = _case(str(tiny_run))
    page = exports / "web"
    assert (page / "mediapipe" / "wasm" / "text_wasm_internal.wasm").is_file()  # local copy: no CDN
    picked = [i for i, t in enumerate(texts) if t.strip() and not any(c in t for c in "\n\r\t")][:6]  # keys, not text
    typed = [texts[i] for i in picked] + ["FREE entry! Call now to WIN", "ok see you at lunch"]
    shown = _drive("page", f"{base}/exports/web/index.html", {"texts": typed}, tmp_path)["shown"]
    mp = MediaPipeRuntime(page / "model.tflite")
    python = mp.predict_texts(typed)
    mp.close()
    assert len(shown) == len(typed)
    for text, row, expected in zip(typed, shown, python):
        assert [b["label"] for b in row["bars"]] == info.labels, text
        scores = np.array([b["score"] for b in row["bars"]])
        assert np.abs(scores - expected).max() <= 1e-5, text
        assert row["label"] == info.labels[int(expected.argmax())], text
    # The page's answers are the trained model's, not only the file's.
    assert np.abs(python[:len(picked)] - keras_probs[picked]).max() <= 1e-5
