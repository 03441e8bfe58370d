"""The one output path of every subcommand: its rows as JSON and its table as Markdown, both
written atomically (a reader never sees half a file), and the cell formats tables share."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from nfzoo.files import write_file_atomically

#: how each system is named in table headers
NAMES = {
    "nfzoo": "nfzoo (fit, XLA)",
    "nfzoo-graph": "nfzoo (fit, graph)",
    "nfzoo-plain-matmul": "nfzoo (fit, XLA, plain matmul gradient)",
    "tfp-graph": "TFP (tf.function)",
    "tfp-xla": "TFP (XLA)",
    "zuko": "zuko (torch)",
    "bayesflow": "BayesFlow (fit, graph)",
    "matmul-xla": "TF matmuls (XLA)",
    "matmul-graph": "TF matmuls (graph)",
}


def write(out: Path, stem: str, meta: dict, table: str, title: str) -> None:
    """Writes ``out/<stem>.json`` (``meta``, rows included) and ``out/<stem>.md`` (``title``,
    then ``table``), each atomically, and prints the table."""
    text = json.dumps(meta, indent=1) + "\n"
    write_file_atomically(Path(out) / f"{stem}.json", lambda p: p.write_text(text))
    markdown_text = title + "\n\n" + table + "\n"
    write_file_atomically(Path(out) / f"{stem}.md", lambda p: p.write_text(markdown_text))
    print(f"\n{title}\n")
    print(table)


def markdown(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table: ``header``, its rule, then one line per row of cells."""
    lines = [_line(header), "|" + "---|" * len(header)]
    lines += [_line(row) for row in rows]
    return "\n".join(lines)


def _line(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


#: appended to a title whose table has BayesFlow in it
BAYESFLOW_NOTE = (
    "; BayesFlow's blocks are timed inside its worker process (the JSON pipe to it is outside "
    "the time), each of its flows 3 dual couplings (6 couplings against nfzoo's 5)"
)


def bayesflow_note(systems) -> str:
    """``BAYESFLOW_NOTE`` where ``systems`` has bayesflow, else ""."""
    return BAYESFLOW_NOTE if "bayesflow" in systems else ""


#: the row of a system that has no flow of the row's architecture: an empty cell
UNSUPPORTED = {"unsupported": True}


def cell(row: dict, unit: str, scale: float = 1.0, fmt: str = ".1f") -> str:
    """ "median (min-max)" of a row's rate, its error, or "" for no such flow."""
    if row.get("unsupported"):
        return ""
    if "error" in row:
        return f"failed: {row['error'][:120]}"
    med, lo, hi = (row[f"{k}_{unit}"] / scale for k in ("median", "min", "max"))
    return f"{med:{fmt}} ({lo:{fmt}}-{hi:{fmt}})"


def ratio_cell(
    by: dict[str, dict], systems: list[str], unit: str, against: str | None = None
) -> str:
    """nfzoo's median over ``against``'s (by default the fastest peer's; peers: systems not
    named nfzoo*, BayesFlow among them), then the median (min-max) of the same ratio taken
    round by round: both systems ran one block in every round of ``interleaved``, seconds
    apart, so the per-round ratio is the one least moved by the machine's load drifting during
    the run. Systems that failed or have no such flow count as no peer."""
    key = f"median_{unit}"
    if against is None:
        peers = [s for s in systems if not s.startswith("nfzoo") and key in by.get(s, {})]
    else:
        peers = [s for s in systems if s == against and key in by.get(s, {})]
    if key not in by.get("nfzoo", {}) or not peers:
        return "-"
    best = max(peers, key=lambda s: by[s][f"median_{unit}"])
    ratio = by["nfzoo"][f"median_{unit}"] / by[best][f"median_{unit}"]
    rounds = sorted(
        a / b for a, b in zip(by["nfzoo"][f"{unit}_by_round"], by[best][f"{unit}_by_round"])
    )
    return (
        f"{ratio:.2f} (vs {NAMES[best]}; by round {statistics.median(rounds):.2f}, "
        f"{rounds[0]:.2f}-{rounds[-1]:.2f})"
    )


def compile_cell(row: dict) -> str:
    """A row's first-block overhead, s, or "-"."""
    return f"{row['compile_s']:.1f}" if "compile_s" in row else "-"


def mean_se(values: list[float]) -> str:
    """ "mean +- standard error" of ``values`` (the value alone for one, "-" for none)."""
    if len(values) > 1:
        return f"{np.mean(values):.4f} +- {np.std(values, ddof=1) / np.sqrt(len(values)):.4f}"
    return f"{values[0]:.4f}" if values else "-"
