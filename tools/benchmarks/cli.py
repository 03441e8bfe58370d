"""The ``tools/bench.py`` command: one subcommand per module, common flags added here."""

from __future__ import annotations

import argparse
import importlib
import os
import platform
from pathlib import Path

#: the subcommand modules, in the order of ``--help``
SUBCOMMANDS = (
    "export_latency",
    "train_throughput",
    "matmul_limit",
    "dot_orientation",
    "density_throughput",
    "density_quality",
    "glow_throughput",
    "peak_memory",
    "npe",
)
ROOT = Path(__file__).resolve().parents[2]


def modules() -> dict:
    """Subcommand name -> its module."""
    found = (importlib.import_module(f"{__package__}.{name}") for name in SUBCOMMANDS)
    return {m.COMMAND: m for m in found}


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    sub = parser.add_subparsers(dest="bench", required=True)
    for name, module in modules().items():
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.add_argument("--out", type=Path, default=ROOT / "out" / "bench")
        if module.THREADS:
            p.add_argument(
                "--threads",
                type=int,
                default=0,
                help="intra- and inter-op threads of TF and torch alike (0: all cores)",
            )
    return parser


def main(argv: list[str] | None = None, description: str | None = None) -> int:
    args = build_parser(description).parse_args(argv)
    module = modules()[args.bench]
    if not getattr(module, "WRITES_TABLES", True):
        return module.run(args, None)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "args": {k: v for k, v in vars(args).items() if k != "out"},
    }
    if module.THREADS:
        from .timing import set_threads

        meta["threads"] = set_threads(args.threads)
    return module.run(args, meta)
