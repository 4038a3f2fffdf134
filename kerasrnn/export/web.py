"""A static web page that classifies typed text in the browser (the text stays there): MediaPipe Tasks Text for Web
on the float32 .tflite (the same graph and metadata as tflite/model.tflite).

The page (index.html, one file, no build step) loads the MediaPipe library and its WASM either from
the jsDelivr CDN at the version it was checked with, or from a local copy of the npm package that
the export copies into the folder (`--web-assets PATH`), so the folder can be served with no
network at all. Browsers refuse WASM and fetch() from file:// pages, so the folder must be served
over HTTP (any static server). Text never leaves the browser; the MediaPipe library itself sends
usage logs to a Google endpoint (README, "Deploying to the web").
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from kerasrnn.errors import UserError

MEDIAPIPE_TEXT_VERSION = "1.0.1"  # the @mediapipe/tasks-text release tests/test_browser.py checks
CDN = f"https://cdn.jsdelivr.net/npm/@mediapipe/tasks-text@{MEDIAPIPE_TEXT_VERSION}"
# What the page needs from the package: the ES module and the WASM loader pairs FilesetResolver
# picks from (SIMD, or no SIMD on older browsers).
PACKAGE_FILES = ("text_bundle.mjs", "wasm/text_wasm_internal.js", "wasm/text_wasm_internal.wasm",
                 "wasm/text_wasm_nosimd_internal.js", "wasm/text_wasm_nosimd_internal.wasm")
LOCAL_ASSETS = "mediapipe"


def check_assets(assets: str) -> str:
    """`assets` as given: "cdn", or a folder holding the @mediapipe/tasks-text npm package."""
    if assets == "cdn":
        return assets
    folder = Path(assets)
    missing = [f for f in PACKAGE_FILES if not (folder / f).is_file()]
    if missing:
        raise UserError(f"--web-assets {assets}: not an @mediapipe/tasks-text package folder (no {missing[0]}); "
                        f"run `npm install @mediapipe/tasks-text@{MEDIAPIPE_TEXT_VERSION}` and pass "
                        "node_modules/@mediapipe/tasks-text, or use --web-assets cdn")
    return assets


def package_version(folder: Path) -> str | None:
    try:
        return json.loads((folder / "package.json").read_text(encoding="utf-8")).get("version")
    except (OSError, ValueError):
        return None


def export(context, folder) -> dict:
    """The format entry point (see export/formats.py): index.html, model.tflite, README.txt, the
    tokenizer files and, with local assets, mediapipe/ (the package's files)."""
    from kerasrnn.export.tflite import export_tflite

    assets = check_assets(context.web_assets)
    files = export_tflite(context.model, context.config, context.tokenizer, context.labels, folder.path, [],
                          context.texts, context.source_run, context.tflite_impl)
    base, version = CDN, MEDIAPIPE_TEXT_VERSION
    if assets != "cdn":
        source = Path(assets)
        version = package_version(source) or "unknown"
        if version != MEDIAPIPE_TEXT_VERSION:
            context.log(f"  note: --web-assets holds @mediapipe/tasks-text {version}; the page was checked "
                        f"with {MEDIAPIPE_TEXT_VERSION}")
        for rel in PACKAGE_FILES:
            target = folder.path / LOCAL_ASSETS / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(source / rel, target)
            except OSError as exc:
                raise UserError(f"--web-assets {source / rel}: cannot copy ({exc.strerror})") from None
        base = f"./{LOCAL_ASSETS}"
    page = PAGE.replace("__CONFIG__", json.dumps({"assets": base, "model": "model.tflite"}).replace("</", "<\\/"))
    (folder.path / "index.html").write_text(page, encoding="utf-8")
    context.write_tokenizer_files(folder.path)
    (folder.path / "README.txt").write_text(SERVE_NOTE.format(version=version, base=base), encoding="utf-8")
    return {"path": folder.rel("model.tflite"), **files["model.tflite"], "page": folder.rel("index.html"),
            "mediapipe_tasks_text": {"version": version, "assets": base}}


SERVE_NOTE = """\
A web page that classifies text in the browser (MediaPipe Tasks Text for Web {version}).
Serve this folder over HTTP (browsers refuse WASM from file:// pages), e.g.

    python -m http.server --bind 127.0.0.1 --directory . 8000

and open http://127.0.0.1:8000/. The library and its WASM load from {base}.
Typed text stays in the browser; the MediaPipe library sends usage logs to a Google endpoint.
"""

PAGE = """\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Text classifier</title>
<style>
  body { font: 16px/1.4 system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem; }
  textarea { width: 100%; min-height: 6rem; font: inherit; box-sizing: border-box; }
  .bar { display: grid; grid-template-columns: 10rem 1fr 4rem; gap: .5rem; align-items: center; margin: .2rem 0; }
  .bar .fill { height: 1rem; background: #3b7dd8; }
  .bar .name { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  #status[data-state=error] { color: #b00; }
</style>
</head>
<body>
<h1>Text classifier</h1>
<p id="status" data-state="loading">Loading the model...</p>
<textarea id="text" placeholder="Type a text to classify" disabled></textarea>
<p><button id="classify" disabled>Classify</button></p>
<div id="result" aria-live="polite"></div>
<script type="application/json" id="config">__CONFIG__</script>
<script type="module">
const config = JSON.parse(document.getElementById("config").textContent);
const status = document.getElementById("status"), input = document.getElementById("text");
const button = document.getElementById("classify"), result = document.getElementById("result");
let classifier;

function show(text) {
  try {
    render(text);
  } catch (e) {
    status.textContent = `Could not classify: ${e}`;
    status.dataset.state = "error";
  }
}

function render(text) {
  // Every label with its probability, in the model's label order, the top one named first.
  const categories = classifier.classify(text).classifications[0].categories.slice().sort((a, b) => a.index - b.index);
  const top = categories.reduce((a, b) => (b.score > a.score ? b : a));
  const heading = document.createElement("p");
  heading.dataset.top = top.categoryName;
  heading.textContent = `Label: ${top.categoryName}`;
  const bars = categories.map((c) => {
    const row = document.createElement("div"), name = document.createElement("span");
    const track = document.createElement("span"), fill = document.createElement("span"), value = document.createElement("span");
    row.className = "bar";
    row.dataset.label = c.categoryName;
    row.dataset.score = String(c.score);
    name.className = "name";
    name.textContent = c.categoryName;
    fill.className = "fill";
    fill.style.display = "block";
    fill.style.width = `${(100 * c.score).toFixed(1)}%`;
    track.appendChild(fill);
    value.textContent = `${(100 * c.score).toFixed(1)}%`;
    row.append(name, track, value);
    return row;
  });
  result.replaceChildren(heading, ...bars);
  result.dataset.text = text;
}

button.addEventListener("click", () => show(input.value));
// Enter classifies, unless it confirms an input method's candidate (CJK typing) or adds a line.
input.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); show(input.value); }
});

try {
  const { FilesetResolver, TextClassifier } = await import(`${config.assets}/text_bundle.mjs`);
  const fileset = await FilesetResolver.forTextTasks(`${config.assets}/wasm`);
  classifier = await TextClassifier.createFromOptions(fileset, {
    baseOptions: { modelAssetPath: config.model }, maxResults: -1,
  });
  input.disabled = button.disabled = false;
  status.textContent = "Ready: the text is classified in this browser.";
  status.dataset.state = "ready";
} catch (e) {
  status.textContent = `Could not load the model: ${e}`;
  status.dataset.state = "error";
}
</script>
</body>
</html>
"""
