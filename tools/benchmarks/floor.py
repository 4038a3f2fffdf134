"""The floor row of the inference benchmark: the model's forward pass as a tight C loop.

What the hardware can do for this model, to show each runtime's latency as a multiple of it (#17):
the same weights and texts, one text after another, in plain C built at bench time with the system
C compiler (`cc -O3 -march=native -ffast-math`), called through ctypes as the runtimes are called
from Python.

Per text: the real tokens' rows of the input-product table (embedding x the first layer's input
kernel + bias, as the exports fold it), the recurrence h = tanh(x_t + h R), pooling (max, mean or
last), the Dense layer; the linear TF-IDF path when the model has one (word pairs by the same
two-probe hash table, each distinct term's count by sorting the text's terms, sublinear TF-IDF, L2
norm); softmax. It covers one forward SimpleRNN layer without a bag-of-words path (the default and
the synthetic models); other architectures get no floor row, with the reason.
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

NAME = "C floor (cc -O3 -march=native -ffast-math)"
# -ffast-math lets gcc call glibc's vectorized tanhf (libmvec): 22 -> 7 us per SMS text at batch 1
# on this VM, the answers unchanged (max |dp| vs Keras 1.8e-7 either way; checked before timing).
# Compile only: linking a shared library with -ffast-math adds crtfastmath.o, whose constructor
# turns on flush-to-zero for the whole process that loads it, every runtime timed after it included.
FLAGS = ["-O3", "-march=native", "-ffast-math", "-fPIC"]

SOURCE = r"""
#include <math.h>
#include <stdint.h>

static const float *table, *recurrent, *dense_w, *dense_b;    /* table [V, H]: input products + bias */
static const float *lin_rows, *lin_bias;                       /* [terms, C + 1]: idf x kernel | idf^2 */
static const int64_t *pair_keys; static const int32_t *pair_rows;
static int V, H, C, L, pooling, linear, pairs;
static int64_t slots, m1, m2;

void floor_init(const float *t, const float *r, const float *dw, const float *db, int v, int h, int c, int l,
                int pool, const float *lrows, const float *lbias, const int64_t *keys, const int32_t *rows,
                int64_t nslots, int64_t mult1, int64_t mult2) {
    table = t; recurrent = r; dense_w = dw; dense_b = db; V = v; H = h; C = c; L = l; pooling = pool;
    lin_rows = lrows; lin_bias = lbias; linear = lrows != 0; pair_keys = keys; pair_rows = rows;
    pairs = keys != 0; slots = nslots; m1 = mult1; m2 = mult2;
}

static void sort_ints(int32_t *a, int n) {  /* insertion sort: a text's few dozen terms */
    for (int i = 1; i < n; i++) {
        int32_t v = a[i]; int j = i - 1;
        while (j >= 0 && a[j] > v) { a[j + 1] = a[j]; j--; }
        a[j + 1] = v;
    }
}

void floor_predict(const int32_t *ids, int batch, float *out) {
    float h[1024], next[1024], pooled[1024], logits[256];
    int32_t terms[4096], id[2048];
    for (int b = 0; b < batch; b++) {
        const int32_t *row = ids + (int64_t)b * L;
        int n = 0;
        for (int t = 0; t < L; t++) {  /* post-padded: the real tokens are the non-zero prefix */
            int32_t x = row[t];
            id[t] = (x < 0 || x >= V) ? 2 : x;  /* out of range reads as <UNKNOWN> */
            if (x != 0) n++;
        }
        for (int j = 0; j < H; j++) { h[j] = 0.0f; pooled[j] = pooling == 0 ? -2.0f : 0.0f; }
        for (int t = 0; t < n; t++) {
            const float *x = table + (int64_t)id[t] * H;
            for (int j = 0; j < H; j++) next[j] = x[j];
            for (int k = 0; k < H; k++) {
                float hk = h[k];
                const float *rk = recurrent + (int64_t)k * H;
                for (int j = 0; j < H; j++) next[j] += hk * rk[j];
            }
            for (int j = 0; j < H; j++) {
                h[j] = tanhf(next[j]);
                if (pooling == 0) { if (h[j] > pooled[j]) pooled[j] = h[j]; }
                else if (pooling == 1) pooled[j] += h[j];
            }
        }
        if (pooling == 1) for (int j = 0; j < H; j++) pooled[j] /= (n > 0 ? n : 1);
        if (pooling == 2) for (int j = 0; j < H; j++) pooled[j] = h[j];
        if (n == 0 && pooling == 0) for (int j = 0; j < H; j++) pooled[j] = 0.0f;
        for (int c = 0; c < C; c++) logits[c] = dense_b[c];
        for (int j = 0; j < H; j++) {
            const float *w = dense_w + (int64_t)j * C;
            for (int c = 0; c < C; c++) logits[c] += pooled[j] * w[c];
        }
        if (linear) {
            int m = 0;
            for (int t = 0; t < n; t++) if (id[t] > 1) terms[m++] = id[t];  /* <PAD>, <START>: idf 0 */
            for (int t = 0; pairs && t + 1 < n; t++) {
                int64_t a = id[t], s = id[t + 1], key = a * V + s;
                int64_t p0 = ((a % slots) * m1 + s) % slots, p1 = ((s % slots) * m2 + a) % slots;
                if (pair_keys[p0] == key) terms[m++] = pair_rows[p0];
                else if (pair_keys[p1] == key) terms[m++] = pair_rows[p1];
            }
            sort_ints(terms, m);
            float raw[256], norm_sq = 0.0f;
            for (int c = 0; c < C; c++) raw[c] = 0.0f;
            for (int i = 0; i < m;) {
                int j = i;
                while (j < m && terms[j] == terms[i]) j++;
                float tf = 1.0f + logf((float)(j - i));
                const float *w = lin_rows + (int64_t)terms[i] * (C + 1);
                for (int c = 0; c < C; c++) raw[c] += tf * w[c];
                norm_sq += tf * tf * w[C];
                i = j;
            }
            float norm = sqrtf(norm_sq);
            if (norm < 1e-12f) norm = 1e-12f;
            for (int c = 0; c < C; c++) logits[c] += raw[c] / norm + lin_bias[c];
        }
        float top = logits[0], sum = 0.0f;
        for (int c = 1; c < C; c++) if (logits[c] > top) top = logits[c];
        for (int c = 0; c < C; c++) { logits[c] = expf(logits[c] - top); sum += logits[c]; }
        for (int c = 0; c < C; c++) out[(int64_t)b * C + c] = logits[c] / sum;
    }
}
"""

POOLING_CODES = {"max": 0, "mean": 1, "last": 2}


def unsupported(config: dict) -> str | None:
    """Why this model gets no floor row (None: it gets one)."""
    if config.get("num_layers", 1) != 1 or config.get("bidirectional") or config.get("bag_dim"):
        return "the C floor covers one forward SimpleRNN layer without a bag-of-words path"
    if config["pooling"] not in POOLING_CODES:
        return f"the C floor has no {config['pooling']} pooling"
    if config["units"] > 1024 or config["num_classes"] > 255 or config["max_len"] > 2048:
        return "the C floor's buffers are smaller than this model"
    return None


class Floor:
    """`predict_ids(ids [batch, max_len] int32) -> probabilities [batch, classes]`, in C."""

    def __init__(self, model, config: dict, workdir: Path):
        from kerasrnn.linear import folded_tables, multipliers
        from kerasrnn.model import export_weights, head_weights, input_product_table, linear_weights

        embedding, layers = export_weights(model, 1)
        kernel, recurrent, bias = layers[0][0]
        dense_w, dense_b, _ = head_weights(model)
        keep = {"table": input_product_table(embedding, kernel, bias), "recurrent": recurrent,
                "dense_w": dense_w, "dense_b": dense_b}
        linear = linear_weights(model)
        if linear is not None:
            tables = folded_tables(linear, 1)
            keep.update(lin_rows=tables["rows"], lin_bias=linear["bias"])
            if linear["keys"] is not None:
                keep.update(pair_keys=tables["pair_keys"], pair_rows=linear["rows"])
        self.arrays = {k: np.ascontiguousarray(v) for k, v in keep.items()}  # alive while C reads them
        self.classes, self.max_len = int(dense_b.shape[0]), int(config["max_len"])
        self.lib = ctypes.CDLL(str(compile_source(workdir)))
        ptr = lambda k: self.arrays[k].ctypes.data if k in self.arrays else None  # noqa: E731
        slots = linear["slots"] if linear is not None and linear["keys"] is not None else 1
        m1, m2 = multipliers(slots)
        f = self.lib.floor_init
        f.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int] * 5 + [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 3
        f(ptr("table"), ptr("recurrent"), ptr("dense_w"), ptr("dense_b"), int(embedding.shape[0]),
          int(recurrent.shape[0]), self.classes, self.max_len, POOLING_CODES[config["pooling"]], ptr("lin_rows"),
          ptr("lin_bias"), ptr("pair_keys"), ptr("pair_rows"), slots, m1, m2)
        self.lib.floor_predict.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
        self.lib.floor_predict.restype = None

    def predict_ids(self, ids: np.ndarray) -> np.ndarray:
        ids = np.ascontiguousarray(ids, np.int32)
        out = np.empty((len(ids), self.classes), np.float32)
        self.lib.floor_predict(ids.ctypes.data, len(ids), out.ctypes.data)
        return out


def compile_source(workdir: Path) -> Path:
    """The shared library built from SOURCE; RuntimeError with the reason when no compiler works."""
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        raise RuntimeError("no C compiler (cc, gcc or clang) on PATH")
    source, objects, library = workdir / "floor.c", workdir / "floor.o", workdir / "floor.so"
    source.write_text(SOURCE, encoding="utf-8")
    for command in ([compiler, *FLAGS, "-c", str(source), "-o", str(objects)],
                    [compiler, "-shared", str(objects), "-o", str(library), "-lm"]):  # linked without -ffast-math
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"{compiler} failed: {proc.stderr.strip()[:300]}")
    return library


def build_floor(model, config: dict, workdir: Path | None = None):
    """(Floor, None), or (None, why there is no floor row)."""
    reason = unsupported(config)
    if reason:
        return None, reason
    try:
        return Floor(model, config, Path(workdir or tempfile.mkdtemp(prefix="kerasrnn-floor-"))), None
    except RuntimeError as exc:
        return None, str(exc)
