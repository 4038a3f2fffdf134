"""The web page export (kerasrnn/export/web.py): what it writes and where its assets come from.
Running it in a browser is tests/test_browser.py's job."""
from __future__ import annotations

import json

from conftest import run_cli


def _config(page: str) -> dict:
    start = page.index('<script type="application/json" id="config">') + len('<script type="application/json" id="config">')
    return json.loads(page[start:page.index("</script>", start)])


def test_the_default_page_loads_mediapipe_from_the_cdn_at_the_checked_version(tiny_exports):
    from kerasrnn.export.web import CDN, MEDIAPIPE_TEXT_VERSION

    web = tiny_exports / "web"
    config = _config((web / "index.html").read_text(encoding="utf-8"))
    assert config == {"assets": CDN, "model": "model.tflite"} and MEDIAPIPE_TEXT_VERSION in CDN
    assert not (web / "mediapipe").exists()
    # The page's model is the float32 TFLite file: same graph, same answers.
    from kerasrnn.run import RunInfo
    from kerasrnn.runtimes import TfliteRuntime

    manifest = json.loads((tiny_exports / "manifest.json").read_text())
    info = RunInfo.load(manifest["source_run"])
    ids = info.tokenizer.encode(info.test_split()[0][:20])
    page_model, shipped = TfliteRuntime(web / "model.tflite"), TfliteRuntime(tiny_exports / "tflite" / "model.tflite")
    assert (page_model.predict_ids(ids) == shipped.predict_ids(ids)).all()
    assert manifest["artifacts"]["web"]["graph"] == manifest["artifacts"]["tflite"]["model.tflite"]["graph"]
    entry = manifest["artifacts"]["web"]
    assert entry["page"] == "web/index.html" and entry["mediapipe_tasks_text"]["assets"] == CDN


def test_local_assets_are_copied_into_the_page_folder(tmp_path, tiny_run):
    from kerasrnn.export.web import PACKAGE_FILES

    package = tmp_path / "node_modules" / "@mediapipe" / "tasks-text"
    for rel in PACKAGE_FILES:
        (package / rel).parent.mkdir(parents=True, exist_ok=True)
        (package / rel).write_bytes(rel.encode())
    (package / "package.json").write_text('{"name": "@mediapipe/tasks-text", "version": "9.9.9"}')
    out = tmp_path / "exports"
    proc = run_cli(["tools/export.py", "--format", "web", "--run", str(tiny_run), "--out", str(out),
                    "--web-assets", str(package)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "@mediapipe/tasks-text 9.9.9" in proc.stdout  # another version is named, not refused
    assert _config((out / "web" / "index.html").read_text())["assets"] == "./mediapipe"
    for rel in PACKAGE_FILES:
        assert (out / "web" / "mediapipe" / rel).read_bytes() == rel.encode()


def test_a_folder_that_is_not_the_package_is_refused_before_anything_is_written(tmp_path, tiny_run):
    out = tmp_path / "exports"
    proc = run_cli(["tools/export.py", "--format", "web", "--run", str(tiny_run), "--out", str(out),
                    "--web-assets", str(tmp_path)])
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path) in lines[0] and "text_bundle.mjs" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
