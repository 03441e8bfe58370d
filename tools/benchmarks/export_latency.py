"""export-latency: per-call latency of the exported ``log_prob`` and ``generate`` endpoints at
batch 1 and 1024, in TensorFlow (the SavedModel signature, as TF Serving runs it),
onnxruntime and LiteRT. Each flow is exported afresh (with its parity check) into a temporary
folder; a block is 200 calls (batch 1) or 20 calls (batch 1024).
"""

from __future__ import annotations

import functools
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import nfzoo

from . import tables
from .timing import interleaved

COMMAND = "export-latency"
HELP = "exported endpoints in TF, onnxruntime, LiteRT"
THREADS = False
RUNTIMES = ("tensorflow", "onnxruntime", "litert")


def add_arguments(p) -> None:
    p.add_argument("--flows", nargs="+", default=["maf-moons", "realnvp-moons", "glow1d-moons"])
    p.add_argument("--repeats", type=int, default=7)


class EndpointRunner:
    """One exported endpoint in one runtime; a block is ``calls`` back-to-back calls."""

    def __init__(self, runner, endpoint: str, inputs: dict):
        self.runner, self.endpoint, self.inputs = runner, endpoint, inputs

    def block(self, calls: int) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            self.runner(self.endpoint, self.inputs)
        return time.perf_counter() - start


def export_latency(flows: list[str], repeats: int, batches=(1, 1024)) -> list[dict]:
    from nfzoo.exporting.formats import OnnxRunner, SavedModelRunner, TFLiteRunner

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
                    makers = {
                        r: functools.partial(EndpointRunner, runners[r], endpoint, inputs)
                        for r in RUNTIMES
                    }
                    label = f"{name} {endpoint} batch {batch}"
                    results = interleaved(makers, calls, repeats, label)
                    for r in RUNTIMES:
                        t = sorted(s / calls for s in results[r]["times_s"])
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
                        print(f"{label} {r}: {rows[-1]['median_ms']:.3f} ms")
    return rows


def latency_table(rows: list[dict]) -> str:
    header = ["flow", "endpoint", "batch", "TensorFlow (SavedModel)", "onnxruntime", "LiteRT"]
    keys = sorted({(r["flow"], r["endpoint"], r["batch"]) for r in rows}, key=str)
    lines = []
    for key in keys:
        by = {r["runtime"]: r for r in rows if (r["flow"], r["endpoint"], r["batch"]) == key}
        cells = [
            f"{r['median_ms']:.3f} ({r['min_ms']:.3f}-{r['max_ms']:.3f})"
            for r in (by[runtime] for runtime in RUNTIMES)
        ]
        lines.append([*key, *cells])
    return tables.markdown(header, lines)


def run(args, meta: dict) -> int:
    rows = export_latency(args.flows, args.repeats)
    title = f"per-call latency, ms: median (min-max) of {args.repeats} repeats"
    tables.write(args.out, "export_latency", {**meta, "rows": rows}, latency_table(rows), title)
    return 0
