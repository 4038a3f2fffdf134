"""Export a run: one module per format (savedmodel, onnx_export, tflite) over this small core.

The core stages every artifact in a temporary folder beside the target, loads it back and runs the
parity check on it, and only then swaps it into place and rewrites manifest.json. A failed export
leaves the previous exports as they were.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

from kerasrnn.errors import ParityError, UserError

FORMATS = ("savedmodel", "onnx", "tflite")
MANIFEST = "manifest.json"
PARITY_SAMPLE = 300  # test texts checked during export (check_parity checks them all)


def _versions() -> dict:
    import importlib.metadata as im

    out = {"python": sys.version.split()[0]}
    for dist in ("tensorflow-cpu", "tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert",
                 "mediapipe", "numpy"):
        try:
            out[dist] = im.version(dist)
        except im.PackageNotFoundError:
            pass
    return out


def _copy_tokenizer_files(info, folder: Path) -> None:
    from kerasrnn.fileio import write_json_atomic

    folder.mkdir(parents=True, exist_ok=True)
    info.tokenizer.save_vocab(folder / "vocab.txt")
    (folder / "labels.txt").write_text("\n".join(info.labels) + "\n", encoding="utf-8")
    write_json_atomic(folder / "tokenizer.json", info.tokenizer.spec())


def _files_of(root: Path, folder: Path) -> dict:
    from kerasrnn.fileio import sha256_file

    return {str(f.relative_to(root)): {"sha256": sha256_file(f), "size": f.stat().st_size}
            for f in sorted(folder.rglob("*")) if f.is_file()}


def _check_writable_target(out: Path) -> Path:
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; choose another --out")
    return out


def export_run(run: str | Path, out: str | Path, formats: list[str], quantize: list[str] | None = None,
               onnx_impl: str = "rnn", tflite_impl: str = "auto", log=print) -> dict:
    """Export `run` in `formats` into `out`; returns the new manifest."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from kerasrnn import backends

    backends.use("tensorflow", "export")  # converters trace Keras graphs as TensorFlow functions
    from kerasrnn.export import parity
    from kerasrnn.run import RunInfo

    info = RunInfo.load(run)
    out = _check_writable_target(out)
    model = info.load_model()
    texts, text_labels = info.test_split()
    remove_stale_staging(out)
    staging = out / f".staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        details = {}
        for fmt in formats:
            log(f"exporting {fmt} ...")
            folder = staging / fmt
            if fmt == "savedmodel":
                from kerasrnn.export.savedmodel import export_savedmodel

                details[fmt] = export_savedmodel(model, info.tokenizer, info.labels, folder)
                _copy_tokenizer_files(info, folder / "assets")
            elif fmt == "onnx":
                from kerasrnn.export.onnx_export import export_onnx

                details[fmt] = export_onnx(model, info.config, info.tokenizer, info.labels,
                                           folder / "model.onnx", onnx_impl, str(info.path))
                _copy_tokenizer_files(info, folder)
            elif fmt == "tflite":
                from kerasrnn.export.tflite import export_tflite

                details[fmt] = export_tflite(model, info.config, info.tokenizer, info.labels, folder,
                                             quantize or [], texts, str(info.path), tflite_impl)
                _copy_tokenizer_files(info, folder)
        log("checking parity of the new files ...")
        results = parity.check(model, info.tokenizer, info.labels, parity.find_artifacts(staging),
                               texts[:PARITY_SAMPLE], text_labels[:PARITY_SAMPLE], batch1_limit=50,
                               log=lambda line: None)
        failed = [r for r in results if not r.passed]
        for r in results:
            log("  " + parity.format_row(r))
        if failed:
            from kerasrnn.export.tflite import QUANTIZATIONS

            hint = ""
            failed_variants = {v for r in failed for v in QUANTIZATIONS if r.artifact.endswith(f"model_{v}.tflite")}
            if failed_variants:  # a quantized file can be left out; the others still ship
                keep = [v for v in (quantize or []) if v not in failed_variants] or ["none"]
                hint = f"; to export without it: --quantize {','.join(keep)}"
            raise ParityError("; ".join(f"{r.artifact} ({r.route}): {', '.join(r.reasons)}" for r in failed)
                              + f" -- nothing in {out} was changed" + hint)
        manifest = _swap_in(staging, out, formats, info, details)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def remove_stale_staging(out: Path) -> list[Path]:
    """Delete staging / old folders left by exports that were killed (their process is gone)."""
    removed = []
    for folder in list(out.glob(".staging-*")) + list(out.glob(".old-*-*")):
        pid = folder.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _swap_in(staging: Path, out: Path, formats: list[str], info, details: dict) -> dict:
    """Replace each format folder by its staged copy, then write the manifest (atomic rename)."""
    from kerasrnn.fileio import write_json_atomic

    old_manifest = {}
    if (out / MANIFEST).is_file():
        try:
            old_manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            old_manifest = {}
    manifest = {
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source_run": str(info.path),
        "labels": info.labels,
        "tokenizer": info.tokenizer.spec(),
        "versions": _versions(),
        "artifacts": {k: v for k, v in old_manifest.get("artifacts", {}).items() if k not in formats},
        "files": {k: v for k, v in old_manifest.get("files", {}).items() if k.split("/")[0] not in formats},
    }
    for fmt in formats:
        target, trash = out / fmt, out / f".old-{fmt}-{os.getpid()}"
        if target.exists():
            os.replace(target, trash)
        os.replace(staging / fmt, target)
        shutil.rmtree(trash, ignore_errors=True)
        manifest["artifacts"][fmt] = {"source_run": str(info.path), **details[fmt]}
        manifest["files"].update(_files_of(out, target))
    manifest["files"] = dict(sorted(manifest["files"].items()))
    write_json_atomic(out / MANIFEST, manifest)
    return manifest
