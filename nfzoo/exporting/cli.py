"""``nfzoo export NAME|PATH --formats saved_model onnx tflite --out DIR``.

NAME is a pretrained entry (``nfzoo.load``); PATH is a folder that ``nfzoo.load`` reads
(config.json + model.weights.h5) or a ``.keras`` file saved with ``flow.save``. The export
runs the mandatory parity check and prints its figures; the exit status is 1 when the export
fails (nothing is written then).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nfzoo.exporting import FORMATS, ExportError, export

__all__ = ["build_parser", "load_flow", "main", "parity_table", "run"]


def load_flow(source: str):
    """The Flow named by ``source``: a ``.keras`` file, or anything ``nfzoo.load`` accepts."""
    if source.endswith(".keras"):
        import keras

        import nfzoo  # registers the classes the .keras file names

        return keras.saving.load_model(source)
    import nfzoo

    return nfzoo.load(source)


def parity_table(manifests: dict[str, dict]) -> str:
    """Markdown table (flow x endpoint) x format of the max parity error over batch 1 and
    1000; ``sample`` (random) shows the largest z-score of its mean against the Keras samples,
    and a dash marks an endpoint the flow does not have."""
    formats = [
        f
        for f in ("saved_model", "onnx", "tflite")
        if any(f in m["parity"]["results"] for m in manifests.values())
    ]
    lines = [
        "| flow | endpoint | " + " | ".join(formats) + " |",
        "|---|---|" + "---|" * len(formats),
    ]
    for name, m in manifests.items():
        results = m["parity"]["results"]
        for ep in m["endpoints"]:
            cells = []
            for fmt in formats:
                records = list(results.get(fmt, {}).get(ep, {}).values())
                if not records:
                    cells.append("-")
                elif ep == "sample":
                    cells.append(f"z {max(r['mean_z_score'] for r in records):.1f}")
                else:
                    cells.append(f"{max(r['max_error'] for r in records):.1e}")
            lines.append(f"| {name} | {ep} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        prog="nfzoo export", description="Export a flow with a parity check in each runtime."
    )
    parser.add_argument("source", help="pretrained name, pretrained folder, or .keras file")
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    parser.add_argument("--out", required=True, help="destination folder (created atomically)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return parser


def run(args: argparse.Namespace) -> None:
    """Loads and exports ``args.source``; prints the parity table. Raises ValueError
    (ExportError included) or OSError with a message naming what went wrong."""
    flow = load_flow(args.source)
    is_file = args.source.endswith(".keras")
    manifest = export(
        flow,
        Path(args.out),
        formats=args.formats,
        overwrite=args.overwrite,
        name=Path(args.source).stem if is_file else Path(args.source).name,
    )
    print(parity_table({manifest["name"]: manifest}))
    print(f"wrote {args.out}")


def main(argv=None) -> int:
    """Standalone entry point; ``nfzoo export`` is the same parser and ``run``."""
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (ExportError, ValueError, OSError) as e:
        print(f"nfzoo export: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
