"""Regenerates export/<name>/ for every pretrained entry, and prints the parity tables.

    .venv/bin/python tools/export_zoo.py                 # one entry per architecture
    .venv/bin/python tools/export_zoo.py --all           # every pretrained entry
    .venv/bin/python tools/export_zoo.py maf-moons       # only these entries
    .venv/bin/python tools/export_zoo.py --table         # print the table of export/*
    .venv/bin/python tools/export_zoo.py --builders      # every builder, small, in a temp dir

Entries come from ``nfzoo.list_pretrained()``: by default the smallest entry of each
architecture, which keeps export/ well inside its 60 MB budget (ONNX holds one file per
endpoint, each with its own copy of the weights). Each export runs the mandatory parity
check (SavedModel in TensorFlow, ONNX in onnxruntime, TFLite in LiteRT, batch 1 and 1000
against the Keras model); the SavedModel is kept only where the folder stays within the size
budget.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

import nfzoo
from nfzoo.exporting import FORMATS, export
from nfzoo.exporting.cli import parity_table

REPO = Path(__file__).resolve().parents[1]
EXPORT_DIR = REPO / "export"
#: a SavedModel is shipped only when the entry's folder stays under this many bytes
SAVED_MODEL_BUDGET = 5_000_000
#: all of export/ must stay under this
TOTAL_BUDGET = 60_000_000


def pretrained_names(every: bool = False) -> list[str]:
    """Names of the pretrained entries to export: the smallest entry of each architecture
    (``every``: all of them)."""
    entries = sorted(nfzoo.list_pretrained(), key=lambda e: (e.size_bytes, e.name))
    if every:
        return sorted(e.name for e in entries)
    chosen = {}
    for e in entries:
        chosen.setdefault(e.architecture, e.name)
    return sorted(chosen.values())


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def entry_source(name: str) -> dict:
    """What the export was made from: the entry and the sha256 of its config and weights, so
    that a stale export (weights retrained since) is detectable."""
    entry = nfzoo.pretrained_entry(name)
    return {
        "pretrained": name,
        "config_sha256": entry.config_sha256,
        "weights_sha256": entry.weights_sha256,
    }


def up_to_date(name: str) -> dict | None:
    """The existing manifest of ``name`` if it was exported from the current weights."""
    path = EXPORT_DIR / name / "manifest.json"
    if not path.exists():
        return None
    manifest = json.loads(path.read_text())
    return manifest if manifest.get("source") == entry_source(name) else None


def export_entry(name: str, force: bool = False) -> dict:
    """Exports ``name`` unless its export is up to date (tf2onnx output is not byte-stable,
    so re-exporting unchanged weights would only churn binary files)."""
    if not force and (manifest := up_to_date(name)) is not None:
        print(f"{name}: up to date (same config and weights sha256); --force re-exports it")
        return manifest
    flow = nfzoo.load(name)
    out = EXPORT_DIR / name
    source = entry_source(name)
    manifest = export(flow, out, formats=FORMATS, overwrite=True, name=name, source=source)
    if folder_size(out) > SAVED_MODEL_BUDGET:  # too big to ship with the SavedModel as well
        formats = ("onnx", "tflite")
        manifest = export(flow, out, formats=formats, overwrite=True, name=name, source=source)
    return manifest


def small_builder_flow(arch: str, dim: int = 3, seed: int = 0, scale: float = 0.1):
    """The small, perturbed flow of tests/test_export.py for ``arch`` (image architectures:
    their registered example, initialised on dequantized counts)."""
    entry = nfzoo.architecture(arch)
    rng = np.random.RandomState(seed)
    if entry.event_rank == 3:
        flow = nfzoo.build(arch, entry.example_shape, seed=seed, **dict(entry.example_options))
        shape = (256, *entry.example_shape)
        flow.initialize((rng.randint(0, 4, shape) + rng.rand(*shape)).astype(np.float32))
    else:
        params = inspect.signature(entry.builder).parameters
        options = {k: v for k, v in (("num_layers", 2), ("num_steps", 2), ("hidden_units", [16]))}
        options = {k: v for k, v in options.items() if k in params}
        flow = nfzoo.build(arch, dim, seed=seed, **options)
        flow.initialize((2.0 * rng.standard_normal((256, dim)) + 1.0).astype(np.float32))
    for w in flow.trainable_weights:
        w.assign(w.numpy() + scale * rng.standard_normal(w.shape).astype(np.float32))
    return flow


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="entries to export (default: all)")
    parser.add_argument("--all", action="store_true", help="every entry, not one per arch")
    parser.add_argument("--force", action="store_true", help="re-export up-to-date entries")
    parser.add_argument("--table", action="store_true", help="print the table of export/*")
    parser.add_argument("--builders", action="store_true", help="export every builder, small")
    args = parser.parse_args(argv)

    if args.builders:
        manifests = {}
        with tempfile.TemporaryDirectory() as tmp:
            for arch in nfzoo.list_architectures():
                manifests[arch] = export(small_builder_flow(arch), Path(tmp) / arch, name=arch)
        print(parity_table(manifests))
        return 0
    if args.table:
        manifests = {
            p.parent.name: json.loads(p.read_text())
            for p in sorted(EXPORT_DIR.glob("*/manifest.json"))
        }
        print(parity_table(manifests) if manifests else "export/ holds no artifacts.")
        return 0

    names = args.names or pretrained_names(every=args.all)
    if not names:
        print("No pretrained entries (nfzoo.list_pretrained() is empty or missing): nothing to do.")
        return 0
    manifests = {}
    for name in names:
        manifests[name] = export_entry(name, force=args.force)
        print(f"export/{name}: {folder_size(EXPORT_DIR / name) / 1e6:.2f} MB", flush=True)
    total = folder_size(EXPORT_DIR)
    print(parity_table(manifests))
    print(f"export/ holds {total / 1e6:.2f} MB")
    if total > TOTAL_BUDGET:
        print(f"export/ exceeds its budget of {TOTAL_BUDGET / 1e6:.0f} MB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
