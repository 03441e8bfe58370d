"""Regenerates the export shelf, export/<name>/, from the pretrained entries, and prints the
parity tables.

    .venv/bin/python tools/export_zoo.py                 # one entry per architecture
    .venv/bin/python tools/export_zoo.py --all           # every exportable entry
    .venv/bin/python tools/export_zoo.py maf-moons       # only these entries
    .venv/bin/python tools/export_zoo.py --plan          # what would be exported or skipped
    .venv/bin/python tools/export_zoo.py --table         # print the table of export/*
    .venv/bin/python tools/export_zoo.py --builders      # every builder, small, in a temp dir

By default the shelf holds the smallest entry of each architecture (to 0.1 MB, then the
first by name), which keeps export/
well inside its 60 MB budget (ONNX holds one file per endpoint, each with its own copy of
the weights). Every other entry is skipped with its reason, printed first: another entry
stands for its architecture, or its kind does not export (a FlowVAE is not a Flow). Each
export runs the mandatory parity check (SavedModel in TensorFlow, ONNX in onnxruntime, TFLite
in LiteRT, batch 1, 1000 and 10,000 against the Keras model); the SavedModel is kept only where the
folder stays within SAVED_MODEL_BUDGET. Folders not named after a current entry (an entry's
former name) are removed, and export/README.md's table of folders is rewritten to list
exactly the folders there.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

import nfzoo
from nfzoo.exporting import FORMATS, export
from nfzoo.exporting.cli import parity_table
from nfzoo.files import write_file_atomically
from nfzoo.kinds import KINDS

REPO = Path(__file__).resolve().parents[1]
EXPORT_DIR = REPO / "export"
README = EXPORT_DIR / "README.md"
#: a SavedModel is shipped only when the entry's folder stays under this many bytes
SAVED_MODEL_BUDGET = 5_000_000
#: all of export/ must stay under this
TOTAL_BUDGET = 60_000_000
#: export/README.md's table of folders sits between these lines
#: the entry that stands for its architecture where it is not the smallest: the one the
#: README's examples use
SHELF_CHOICE = {"npe": "npe-two-moons"}
SHELF_BEGIN, SHELF_END = "<!-- shelf: written by tools/export_zoo.py -->", "<!-- end of shelf -->"


def plan(names: list[str] | None = None, every: bool = False) -> tuple[list[str], dict[str, str]]:
    """(entries to export, {entry: why it is skipped}). ``names``: just these entries; else
    ``every`` exportable entry, or the smallest entry of each architecture."""
    entries = nfzoo.list_pretrained()
    if names:
        wanted = {nfzoo.pretrained_entry(n).name for n in names}
        entries = [e for e in entries if e.name in wanted]
    chosen, skipped = [], {}
    stands_for: dict[str, str] = {
        arch: name for arch, name in SHELF_CHOICE.items() if any(e.name == name for e in entries)
    }
    # the smallest to 0.1 MB (so that a few bytes do not decide), then the first by name
    for e in sorted(entries, key=lambda e: (round(e.size_bytes / 1e5), e.name)):
        reason = KINDS.get(e.kind).not_exportable
        if reason is not None:
            skipped[e.name] = f"{e.kind}: {reason}"
        elif names or every or stands_for.setdefault(e.architecture, e.name) == e.name:
            chosen.append(e.name)
        else:
            why = "the README's example" if e.architecture in SHELF_CHOICE else "its smallest entry"
            skipped[e.name] = (
                f"{e.architecture} is on the shelf as {stands_for[e.architecture]} ({why}); "
                "name this one or pass --all to export it too"
            )
    return sorted(chosen), dict(sorted(skipped.items()))


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
    """The existing manifest of ``name`` if it was exported from the current files."""
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
    flow = nfzoo.load(name, source="pretrained")
    out = EXPORT_DIR / name
    source = entry_source(name)
    manifest = export(flow, out, formats=FORMATS, overwrite=True, name=name, source=source)
    if folder_size(out) > SAVED_MODEL_BUDGET:  # too big to ship with the SavedModel as well
        formats = ("onnx", "tflite")
        manifest = export(flow, out, formats=formats, overwrite=True, name=name, source=source)
    return manifest


def remove_stale_folders() -> list[str]:
    """Removes export/<folder>s whose name is not a current entry's (a former name, or an
    entry no longer shipped); returns their names."""
    current = {e.name for e in nfzoo.list_pretrained()}
    stale = sorted(p.name for p in EXPORT_DIR.iterdir() if p.is_dir() and p.name not in current)
    for name in stale:
        shutil.rmtree(EXPORT_DIR / name)
    return stale


def shelf_table() -> str:
    """The Markdown table of export/'s folders: entry, architecture, formats, size."""
    lines = [
        "| folder | architecture | kind | formats | size |",
        "|---|---|---|---|---|",
    ]
    for path in sorted(EXPORT_DIR.glob("*/manifest.json")):
        manifest = json.loads(path.read_text())
        entry = nfzoo.pretrained_entry(manifest["source"]["pretrained"])
        formats = ", ".join(manifest["formats"])
        size = folder_size(path.parent) / 1e6
        lines.append(
            f"| `{path.parent.name}/` | {entry.architecture} | {entry.kind} | {formats} | "
            f"{size:.1f} MB |"
        )
    total = folder_size(EXPORT_DIR) / 1e6
    lines.append(f"| all of export/ | | | | {total:.1f} MB |")
    return "\n".join(lines)


def write_readme_table() -> None:
    """Rewrites the table of folders in export/README.md (between the shelf markers)."""
    text = README.read_text()
    pattern = re.compile(re.escape(SHELF_BEGIN) + ".*?" + re.escape(SHELF_END), re.S)
    if not pattern.search(text):
        raise ValueError(f"{README} lacks the lines {SHELF_BEGIN!r} ... {SHELF_END!r}.")
    block = f"{SHELF_BEGIN}\n{shelf_table()}\n{SHELF_END}"
    new = pattern.sub(lambda _: block, text)
    write_file_atomically(README, lambda tmp: tmp.write_text(new))


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
        small = {"num_layers": 2, "hidden_units": [16]}
        options = {k: v for k, v in small.items() if k in entry.options}
        flow = nfzoo.build(arch, dim, seed=seed, **options)
        flow.initialize((2.0 * rng.standard_normal((256, dim)) + 1.0).astype(np.float32))
    for w in flow.trainable_weights:
        w.assign(w.numpy() + scale * rng.standard_normal(w.shape).astype(np.float32))
    return flow


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="entries to export (default: one per arch)")
    parser.add_argument("--all", action="store_true", help="every entry, not one per arch")
    parser.add_argument("--force", action="store_true", help="re-export up-to-date entries")
    parser.add_argument("--plan", action="store_true", help="print the plan, export nothing")
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

    try:
        names, skipped = plan(args.names, every=args.all)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")
    print(f"exporting {len(names)}: {', '.join(names) or 'nothing'}", flush=True)
    if args.plan:
        return 0
    manifests = {}
    for name in names:
        manifests[name] = export_entry(name, force=args.force)
        print(f"export/{name}: {folder_size(EXPORT_DIR / name) / 1e6:.2f} MB", flush=True)
    if not args.names:
        for name in remove_stale_folders():
            print(f"removed export/{name}: not the name of a current entry")
    write_readme_table()
    total = folder_size(EXPORT_DIR)
    if manifests:
        print(parity_table(manifests))
    print(f"export/ holds {total / 1e6:.2f} MB")
    if total > TOTAL_BUDGET:
        print(f"export/ exceeds its budget of {TOTAL_BUDGET / 1e6:.0f} MB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
