"""Trains pretrained entries from their presets (``nfzoo.presets``) into pretrained/<name>/,
writes each one's record and card, and records it in pretrained/index.json (the registry).

    .venv/bin/python tools/train_zoo.py NAME [NAME ...]    # or: --all, --list
    .venv/bin/python tools/train_zoo.py --rewrite [NAME ...]

Every entry is trained with its preset's fixed seed (on a 2-core CPU machine for the shipped
ones); the record and the card hold the metrics measured right after training, which
``nfzoo verify`` and tests/test_pretrained.py recompute from the shipped weights.
``--rewrite`` writes the records, cards and index again from the presets and the measured
metrics already recorded, without training (after a change to the card's wording; it refuses
an entry whose recorded declaration differs from its preset, since that needs retraining).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from nfzoo import kinds, presets
from nfzoo.files import (
    CARD_FILE,
    CONFIG_FILE,
    WEIGHTS_FILE,
    config_text,
    sha256_file,
    write_file_atomically,
)
from nfzoo.pretrained import (
    INDEX_FILE,
    list_pretrained,
    pretrained_dir,
    save_pretrained,
)


def train(preset: presets.Preset) -> dict:
    """Trains ``preset``, writes pretrained/<name>/ and returns its record."""
    trained = kinds.KINDS.get(preset.kind).train(preset)
    record = kinds.record(preset, trained.metrics, trained.run)
    folder = pretrained_dir() / preset.name
    card = kinds.card(preset, record)
    save_pretrained(trained.model, folder, metadata=record, card=card, overwrite=True)
    return record


def rewrite(preset: presets.Preset) -> dict:
    """Writes the record and card of the shipped entry ``preset`` again from the preset and
    its recorded metrics and run; the weights stay as they are."""
    folder = pretrained_dir() / preset.name
    config = json.loads((folder / CONFIG_FILE).read_text())
    stale = kinds.stale_declaration(preset, config)
    if stale:
        raise ValueError(
            f"{preset.name}: the recorded {', '.join(stale)} differ from the preset; retrain "
            f"it (python tools/train_zoo.py {preset.name})."
        )
    record = kinds.record(preset, config["metrics"], config["run"])
    config.update(record)
    write_file_atomically(folder / CONFIG_FILE, lambda tmp: tmp.write_text(config_text(config)))
    card = kinds.card(preset, record)
    write_file_atomically(folder / CARD_FILE, lambda tmp: tmp.write_text(card))
    return record


def index_record(name: str, record: dict) -> dict:
    """The registry's line of an entry: digests, size, metrics."""
    folder = pretrained_dir() / name
    return {
        "config_sha256": sha256_file(folder / CONFIG_FILE),
        "weights_sha256": sha256_file(folder / WEIGHTS_FILE),
        "size_bytes": sum(p.stat().st_size for p in folder.iterdir()),
        "metrics": record["metrics"],
    }


def write_index(updates: dict[str, dict]) -> Path:
    """Adds or replaces entries of pretrained/index.json (rewritten atomically)."""
    path = pretrained_dir() / INDEX_FILE
    index = json.loads(path.read_text()) if path.exists() else {}
    index.update(updates)
    text = json.dumps(dict(sorted(index.items())), indent=2) + "\n"
    return write_file_atomically(path, lambda tmp: tmp.write_text(text))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="presets (or their former names)")
    parser.add_argument("--all", action="store_true", help="every preset")
    parser.add_argument("--list", action="store_true", help="list the presets")
    parser.add_argument(
        "--rewrite", action="store_true", help="rewrite records and cards without training"
    )
    args = parser.parse_args()
    if args.list:
        for preset in presets.list_presets():
            print(f"{preset.name:38s} {preset.kind:10s} {preset.summary}")
        return 0
    names = args.names
    if not names and args.rewrite:
        names = [entry.name for entry in list_pretrained()]
    elif not names and args.all:
        names = presets.PRESETS.names()
    if not names:
        parser.error("name at least one preset (see --list), or pass --all")
    try:
        chosen = [presets.get(name) for name in names]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for preset in chosen:
        record = rewrite(preset) if args.rewrite else train(preset)
        write_index({preset.name: index_record(preset.name, record)})
        headline = kinds.KINDS.get(preset.kind).headline
        print(
            f"{preset.name}: {headline.label} {record['metrics'][headline.key]:.4f}, "
            f"{record['run']['steps']} steps, {record['run']['wall_time_seconds']} s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
