"""The export core: what every format shares.

Each format writes into its own folder inside a staging folder beside the target; the core loads
every new file back and runs the parity check on it (reading what each file is from the entries
the formats returned, the same entries the manifest records), and only then swaps the formats'
folders into place and rewrites manifest.json. A failed export leaves the previous exports as
they were; a staging folder left by a killed export is removed by the next one.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping

from kerasrnn.errors import UserError

MANIFEST = "manifest.json"
PARITY_SAMPLE = 300  # test texts checked during export (check_parity checks them all)


@dataclass
class ExportContext:
    """What a format exporter gets: the model, the run it came from, and the export options."""

    model: object
    info: object                     # kerasrnn.run.RunInfo
    quantize: list[str] = field(default_factory=list)
    onnx_impl: str = "rnn"
    tflite_impl: str = "auto"
    texts: list[str] = field(default_factory=list)        # the run's test texts (calibration, parity)
    text_labels: list[str] = field(default_factory=list)
    web_assets: str = "cdn"          # the web page's MediaPipe library: "cdn" or a local package folder
    log: Callable = print

    @property
    def tokenizer(self):
        return self.info.tokenizer

    @property
    def labels(self) -> list[str]:
        return self.info.labels

    @property
    def config(self) -> dict:
        """The architecture, with the one max_len every exporter reads (RunInfo.max_len)."""
        return self.info.architecture

    @functools.cached_property
    def inference_model(self):
        """The model without dropout, same weights (model.without_dropout): what the SavedModel traces."""
        from kerasrnn.model import without_dropout

        return without_dropout(self.model, self.config)

    @property
    def source_run(self) -> str:
        return str(self.info.path)

    def write_tokenizer_files(self, folder: Path) -> None:
        """vocab.txt, labels.txt and tokenizer.json: what a client needs to encode texts."""
        from kerasrnn.fileio import write_json_atomic

        folder.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_vocab(folder / "vocab.txt")
        (folder / "labels.txt").write_text("\n".join(self.labels) + "\n", encoding="utf-8")
        write_json_atomic(folder / "tokenizer.json", self.tokenizer.spec())


@dataclass(frozen=True)
class ExportFolder:
    """Where one format writes (`path`, in staging) and its name in the exports folder (`name`)."""

    path: Path
    name: str

    def rel(self, file: Path | str | None = None) -> str:
        """`file` (inside `path`, or relative to it) as the manifest names it once swapped in."""
        if file is None:
            return self.name
        file = Path(file)
        inner = file.relative_to(self.path) if file.is_absolute() else file
        return (Path(self.name) / inner).as_posix()


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
               onnx_impl: str = "rnn", tflite_impl: str = "auto", web_assets: str = "cdn", log=print) -> dict:
    """Export `run` in `formats` into `out`; returns the new manifest."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from kerasrnn import backends

    backends.use("tensorflow", "export")  # converters trace Keras graphs as TensorFlow functions
    from kerasrnn.run import RunInfo

    info = RunInfo.load(run)
    out = _check_writable_target(out)
    if "web" in formats:  # a bad --web-assets fails before the model is loaded
        from kerasrnn.export.web import check_assets

        check_assets(web_assets)
    model = info.load_model()
    texts, text_labels = info.test_split()
    context = ExportContext(model, info, list(quantize or []), onnx_impl, tflite_impl, texts, text_labels,
                            web_assets, log)
    return export_formats(context, out, formats, validate=parity_gate, log=log)


def export_formats(context, out: Path, formats: list[str], validate: Callable, log=print,
                   exporters: Mapping[str, object] | None = None) -> dict:
    """Stage every format, `validate(context, staging, entries, out, log)` them (raises to stop),
    then swap them in. `exporters`: format -> module with export(context, folder); default the table."""
    from kerasrnn.export.formats import exporter

    out = Path(out)
    remove_stale_staging(out)
    staging = out / f".staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        entries = {}
        for fmt in formats:
            log(f"exporting {fmt} ...")
            module = exporters[fmt] if exporters is not None else exporter(fmt)
            entries[fmt] = module.export(context, ExportFolder(staging / fmt, fmt))
        validate(context, staging, entries, out, log)
        return swap_in(staging, out, entries, context)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def parity_gate(context, staging: Path, entries: dict, out: Path, log=print) -> None:
    """Parity of the staged files on the first PARITY_SAMPLE test texts; ParityFailed names what failed."""
    from kerasrnn.export import parity

    log("checking parity of the new files ...")
    results = parity.check(context.model, context.tokenizer, context.labels,
                           parity.artifacts_from_entries(staging, entries),
                           context.texts[:PARITY_SAMPLE], context.text_labels[:PARITY_SAMPLE], batch1_limit=50,
                           log=lambda line: None)
    for r in results:
        log("  " + parity.format_row(r))
    failures = [f for r in results for f in r.failures]
    if failures:
        from kerasrnn.export.tflite import QUANTIZATIONS

        hint = ""
        failed_variants = {f.quantization for f in failures if f.format == "tflite" and f.quantization in QUANTIZATIONS}
        if failed_variants:  # a quantized file can be left out; the others still ship
            keep = [v for v in context.quantize if v not in failed_variants] or ["none"]
            hint = f"; to export without it: --quantize {','.join(keep)}"
        raise parity.ParityFailed(failures, tail=f" -- nothing in {out} was changed" + hint)


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


def swap_in(staging: Path, out: Path, entries: dict, context) -> dict:
    """Replace each exported format's folder by its staged copy, then write the manifest (atomic
    rename); the other formats' folders and manifest entries stay as they were."""
    from kerasrnn.fileio import write_json_atomic

    formats = list(entries)
    old_manifest = {}
    if (out / MANIFEST).is_file():
        try:
            old_manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            old_manifest = {}
    manifest = {
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source_run": context.source_run,
        "labels": context.labels,
        "tokenizer": context.tokenizer.spec(),
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
        manifest["artifacts"][fmt] = {"source_run": context.source_run, **entries[fmt]}
        manifest["files"].update(_files_of(out, target))
    manifest["files"] = dict(sorted(manifest["files"].items()))
    write_json_atomic(out / MANIFEST, manifest)
    return manifest
