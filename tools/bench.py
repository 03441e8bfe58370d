"""Benchmarks: every speed figure nfzoo states comes from here, as medians of repeated,
interleaved measurements taken in one run (these machines are shared and noisy).

    .venv/bin/python tools/bench.py export-latency [--flows maf-moons realnvp-moons] [--repeats 7]

export-latency: per-call latency of the exported ``log_prob`` and ``generate`` endpoints at
batch 1 and 1024, in TensorFlow (the SavedModel signature, as TF Serving runs it),
onnxruntime and LiteRT. Each flow is exported afresh (with its parity check) into a temporary
folder; the runtimes are called in rotating order within every repeat, each repeat timing a
block of calls after one warm-up call. Writes JSON and a Markdown table to out/bench/.

(The training-throughput comparison against TFP's and zuko's flows is to come here too.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

import nfzoo
from nfzoo.exporting.formats import OnnxRunner, SavedModelRunner, TFLiteRunner

ROOT = Path(__file__).resolve().parents[1]
RUNTIMES = ("tensorflow", "onnxruntime", "litert")


def _time_block(runner, endpoint: str, inputs: dict, calls: int) -> float:
    """Seconds per call, over ``calls`` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(calls):
        runner(endpoint, inputs)
    return (time.perf_counter() - start) / calls


def export_latency(flows: list[str], repeats: int, batches=(1, 1024)) -> list[dict]:
    rows = []
    for name in flows:
        flow = nfzoo.load(name)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / name
            nfzoo.export(flow, folder)
            runners = {
                "tensorflow": SavedModelRunner(folder / "saved_model"),
                "onnxruntime": OnnxRunner(folder),
                "litert": TFLiteRunner(folder / "model.tflite"),
            }
            rng = np.random.RandomState(0)
            for endpoint, arg in (("log_prob", "x"), ("generate", "z")):
                for batch in batches:
                    inputs = {arg: rng.randn(batch, flow.event_size).astype(np.float32)}
                    calls = 200 if batch == 1 else 20
                    times = {r: [] for r in RUNTIMES}
                    for r in RUNTIMES:
                        runners[r](endpoint, inputs)  # warm-up (session creation, tracing)
                    for rep in range(repeats):
                        order = RUNTIMES[rep % 3 :] + RUNTIMES[: rep % 3]
                        for r in order:
                            times[r].append(_time_block(runners[r], endpoint, inputs, calls))
                    for r in RUNTIMES:
                        t = sorted(times[r])
                        rows.append(
                            {
                                "flow": name,
                                "endpoint": endpoint,
                                "batch": batch,
                                "runtime": r,
                                "median_ms": 1e3 * statistics.median(t),
                                "min_ms": 1e3 * t[0],
                                "max_ms": 1e3 * t[-1],
                                "repeats": repeats,
                                "calls_per_repeat": calls,
                            }
                        )
                        print(
                            f"{name} {endpoint} batch {batch} {r}: {rows[-1]['median_ms']:.3f} ms"
                        )
    return rows


def latency_table(rows: list[dict]) -> str:
    lines = [
        "| flow | endpoint | batch | TensorFlow (SavedModel) | onnxruntime | LiteRT |",
        "|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["flow"], r["endpoint"], r["batch"]) for r in rows}, key=str)
    for flow, endpoint, batch in keys:
        cells = []
        for runtime in RUNTIMES:
            (r,) = [
                r
                for r in rows
                if (r["flow"], r["endpoint"], r["batch"], r["runtime"])
                == (flow, endpoint, batch, runtime)
            ]
            cells.append(f"{r['median_ms']:.3f} ({r['min_ms']:.3f}-{r['max_ms']:.3f})")
        lines.append(f"| {flow} | {endpoint} | {batch} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="bench", required=True)
    p = sub.add_parser("export-latency", help="exported endpoints in TF, onnxruntime, LiteRT")
    p.add_argument("--flows", nargs="+", default=["maf-moons", "realnvp-moons", "glow1d-moons"])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", type=Path, default=ROOT / "out" / "bench")
    args = parser.parse_args()
    rows = export_latency(args.flows, args.repeats)
    table = latency_table(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "rows": rows}
    (args.out / "export_latency.json").write_text(json.dumps(meta, indent=1) + "\n")
    (args.out / "export_latency.md").write_text(table + "\n")
    print("\nper-call latency, ms: median (min-max) of", args.repeats, "repeats\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
