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

__all__ = ["load_flow", "main", "parity_table"]


def load_flow(source: str):
    """The Flow named by ``source``: a ``.keras`` file, or anything ``nfzoo.load`` accepts."""
    if source.endswith(".keras"):
        import keras

        import nfzoo.flow  # registers the classes the .keras file names
        import nfzoo.layers

        return keras.saving.load_model(source)
    import nfzoo

    load = getattr(nfzoo, "load", None)
    if load is None:
        raise ValueError(
            f"cannot load {source!r}: this nfzoo has no pretrained registry (nfzoo.load); "
            "pass a .keras file saved with flow.save."
        )
    return load(source)


def parity_table(manifests: dict[str, dict]) -> str:
    """Markdown table name x format x endpoint of the max parity error (over batch 1 and
    1000); ``sample`` shows the z-score of its mean against the Keras samples."""
    lines = [
        "| flow | format | endpoint | max error (batch 1) | max error (batch 1000) |",
        "|---|---|---|---|---|",
    ]
    for name, m in manifests.items():
        for fmt, eps in m["parity"]["results"].items():
            for ep, res in eps.items():
                cells = []
                for batch in ("batch_1", "batch_1000"):
                    r = res[batch]
                    cells.append(
                        f"{r['max_error']:.1e}"
                        if r.get("max_error") is not None
                        else f"mean z {r['mean_z_score']:.1f}"
                    )
                lines.append(f"| {name} | {fmt} | {ep} | {cells[0]} | {cells[1]} |")
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


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        flow = load_flow(args.source)
        manifest = export(
            flow,
            Path(args.out),
            formats=args.formats,
            overwrite=args.overwrite,
            name=Path(args.source).stem if args.source.endswith(".keras") else args.source,
        )
    except (ExportError, ValueError, OSError) as e:
        print(f"nfzoo export: {e}", file=sys.stderr)
        return 1
    print(parity_table({manifest["name"]: manifest}))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
