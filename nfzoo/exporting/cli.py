"""``nfzoo export NAME|PATH --formats saved_model onnx tflite --out DIR``.

NAME is a pretrained entry (``nfzoo.load``); PATH is a folder that ``nfzoo.load`` reads
(config.json + model.weights.h5) or a ``.keras`` file saved with ``flow.save``. Before any
work, the command checks that the runtimes of the requested formats are installed (the
``export`` extra: onnxruntime, ai-edge-litert) and that ``--out`` can be written; the export
then runs the mandatory parity check and prints its figures. Errors and exit statuses are
those of the ``nfzoo`` command (``nfzoo.cli``): 1 when the export fails (nothing is written
then), 2 for a wrong command line, source or destination.
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from nfzoo.cli import EXPORT_RUNTIMES, CLIError, add_export_arguments

if TYPE_CHECKING:  # the library loads when a flow is loaded: the command line starts without it
    from nfzoo.flow import Flow

__all__ = ["build_parser", "check_runtimes", "load_flow", "parity_table", "run"]


def check_runtimes(formats: Iterable[str]) -> None:
    """Refuses formats whose runtime (for the parity check) or converter is not installed."""
    for fmt in formats:
        missing = [m for m in EXPORT_RUNTIMES.get(fmt, ()) if importlib.util.find_spec(m) is None]
        if missing:
            raise CLIError(
                f"exporting to {fmt} needs {', '.join(missing)}, which is not installed: "
                "pip install 'nfzoo[export]'"
            )


def load_flow(source: str) -> Flow:
    """The Flow named by ``source``: a ``.keras`` file, or anything ``nfzoo.load`` accepts."""
    if source.endswith(".keras"):
        if not Path(source).is_file():
            raise CLIError(f"{source} does not exist")
        import keras

        import nfzoo.layers  # noqa: F401  (registers the classes the .keras file names)
        from nfzoo.flow import Flow

        model = keras.saving.load_model(source)
        if not isinstance(model, Flow):
            raise CLIError(f"{source} holds a {type(model).__name__}; nfzoo export takes flows")
        return model
    from nfzoo.cli import _load

    return _load(source)


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
    """The options of ``nfzoo export`` (``nfzoo.cli.add_export_arguments``)."""
    from nfzoo.cli import _Parser

    parser = parser or _Parser(
        prog="nfzoo export", description="Export a flow with a parity check in each runtime."
    )
    return add_export_arguments(parser)


def run(args: argparse.Namespace) -> None:
    """Checks the runtimes and the destination, loads and exports ``args.source``, prints
    the parity table. Raises the errors ``nfzoo.cli.main`` reports."""
    from nfzoo import files
    from nfzoo.console import native_stderr_silenced
    from nfzoo.exporting import FORMATS, export

    formats = [f for f in FORMATS if f in args.formats]
    check_runtimes(formats)
    out = files.check_destination(args.out, args.overwrite, hint="--overwrite")
    flow = load_flow(args.source)
    is_file = args.source.endswith(".keras")
    name = Path(args.source).stem if is_file else Path(args.source).name
    print(
        f"exporting {name} to {', '.join(formats)}: converting, then running each artifact "
        "in its runtime against the Keras model ...",
        flush=True,
    )

    def progress(line: str) -> None:
        print(f"  {line}", flush=True)

    with native_stderr_silenced():  # LiteRT announces its CPU delegate on stderr
        manifest = export(
            flow, out, formats=formats, overwrite=args.overwrite, name=name, progress=progress
        )
    print(parity_table({manifest["name"]: manifest}))
    print(f"wrote {args.out}")
