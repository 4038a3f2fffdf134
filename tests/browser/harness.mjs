// Classify in the browser exactly as a web app would: MediaPipe Tasks Text for Web on each .tflite
// (raw text in, its own tokenizer from the file's metadata) and onnxruntime-web on model.onnx
// (token ids in, from the Python tokenizer, as an ONNX client encodes). Everything is served from
// 127.0.0.1: the WASM files come from the pinned npm packages, not a CDN.
import { FilesetResolver, TextClassifier } from "/npm/@mediapipe/tasks-text/text_bundle.mjs";
import * as ort from "/npm/onnxruntime-web/dist/ort.wasm.min.mjs";

ort.env.wasm.wasmPaths = "/npm/onnxruntime-web/dist/";
ort.env.wasm.numThreads = 1;  // threads need cross-origin isolation, which a plain static server lacks

async function classifyMediaPipe(fileset, url, texts) {
  const classifier = await TextClassifier.createFromOptions(fileset, {
    baseOptions: { modelAssetPath: url }, maxResults: -1,
  });
  try {
    return texts.map((text) => {
      const scores = [];
      for (const c of classifier.classify(text).classifications[0].categories) scores[c.index] = c.score;
      return scores;
    });
  } finally {
    classifier.close();
  }
}

async function classifyOnnx(url, ids, batch) {
  const session = await ort.InferenceSession.create(url, { executionProviders: ["wasm"] });
  const input = session.inputNames[0], output = session.outputNames[0];
  const maxLen = ids[0].length, rows = [];
  for (let start = 0; start < ids.length; start += batch) {
    const part = ids.slice(start, start + batch);
    const tensor = new ort.Tensor("int32", Int32Array.from(part.flat()), [part.length, maxLen]);
    const probs = (await session.run({ [input]: tensor }))[output];
    const classes = probs.dims[1];
    for (let r = 0; r < part.length; r++) rows.push(Array.from(probs.data.slice(r * classes, (r + 1) * classes)));
  }
  await session.release();
  return rows;
}

// job: {mediapipe: [url, ...], onnx: [url, ...], texts: [...], ids: [[...], ...], batch: n}
// -> {mediapipe: {url: scores[][]}, onnx: {url: probs[][]}, userAgent}
window.runJob = async (job) => {
  const out = { mediapipe: {}, onnx: {}, userAgent: navigator.userAgent, ortVersion: ort.env.versions.web };
  if (job.mediapipe.length) {
    const fileset = await FilesetResolver.forTextTasks("/npm/@mediapipe/tasks-text/wasm");
    for (const url of job.mediapipe) out.mediapipe[url] = await classifyMediaPipe(fileset, url, job.texts);
  }
  for (const url of job.onnx) out.onnx[url] = await classifyOnnx(url, job.ids, job.batch);
  return out;
};
window.harnessReady = true;
