"""matmul-limit: the float32 matmul rate (FLOP/s) TensorFlow reaches on exactly the dense
matmuls of one training step of the train-throughput models (nfzoo's kernel shapes at batch
512: per kernel the forward product and the two backward products, see ``MatmulRunner``),
compiled with XLA and as a TF graph; the limit is the faster of the two.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import numpy as np

from . import tables
from .peers import TRAIN_BATCH, nfzoo_flow, nfzoo_kernels
from .timing import interleaved, rate_stats

COMMAND = "matmul-limit"
HELP = "TF float32 matmul FLOP/s on the training shapes"
THREADS = True
LIMIT_SYSTEMS = ("matmul-xla", "matmul-graph")


def add_arguments(p) -> None:
    archs = ["maf", "realnvp"]
    p.add_argument("--archs", nargs="+", default=archs, choices=archs)
    p.add_argument("--dims", nargs="+", type=int, default=[8, 64])
    p.add_argument("--steps", type=int, default=20, help="steps' matmuls per timed block")
    p.add_argument("--repeats", type=int, default=5)


def step_flops(kernels: list[tuple[int, int]], batch: int = TRAIN_BATCH) -> float:
    """FLOPs of the dense matmuls of one training step, counted from the kernel shapes:

        forward = sum over kernels W [n_in, n_out] of 2 * batch * n_in * n_out
        step    = 3 * forward

    since the backward pass does two products of the forward one's size per kernel
    (dX = dY W^T and dW = X^T dY). MADE masks do not reduce it: the masked kernel W * M is
    still multiplied densely. Not counted: biases, activations, log-dets, the optimizer update
    and the mask products W * M (all O(batch * width) or O(parameters))."""
    return 3.0 * sum(2.0 * batch * n_in * n_out for n_in, n_out in kernels)


class MatmulRunner:
    """The dense matmuls of one training step and nothing else: for every kernel W
    [n_in, n_out] and an input X [batch, n_in], Y = X W, then dX = Y W^T and dW = X^T Y (Y
    standing in for dY), so ``step_flops(kernels, batch)`` FLOPs per step. dX and dW are
    applied to X and W as tiny SGD updates, so that no product is dead code or can be folded
    into a cheaper reduction. ``jit``: compiled by XLA, else a TF graph."""

    def __init__(self, kernels: list[tuple[int, int]], batch: int = TRAIN_BATCH, jit=True):
        import tensorflow as tf

        rng = np.random.RandomState(0)
        self.kernels = kernels
        self.xs = [tf.Variable(rng.randn(batch, i).astype(np.float32)) for i, _ in kernels]
        self.ws = [
            tf.Variable((rng.randn(i, o) / np.sqrt(i)).astype(np.float32)) for i, o in kernels
        ]

        @tf.function(jit_compile=jit)
        def step():
            for x, w in zip(self.xs, self.ws):
                y = tf.matmul(x, w)
                dx = tf.matmul(y, w, transpose_b=True)
                dw = tf.matmul(x, y, transpose_a=True)
                x.assign_sub(1e-7 * dx)
                w.assign_sub(1e-7 * dw)
            return self.ws[0][0, 0]

        self.step = step

    def block(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            out = self.step()
        out.numpy()
        return time.perf_counter() - start


def limit_makers(arch: str, dim: int) -> dict[str, Callable[[], object]]:
    """The matmul-limit runners for nfzoo's kernel shapes of ``arch`` at ``dim``."""
    kernels = nfzoo_kernels(nfzoo_flow(arch, dim))
    return {
        name: functools.partial(MatmulRunner, kernels, TRAIN_BATCH, name == "matmul-xla")
        for name in LIMIT_SYSTEMS
    }


def limit_rows(arch: str, dim: int, steps: int, results: dict) -> list[dict]:
    rows = []
    for name in LIMIT_SYSTEMS:
        row = {"arch": arch, "dim": dim, "system": name, "steps_per_block": steps}
        if "error" in results[name]:
            row["error"] = results[name]["error"]
        else:
            kernels = results[name]["runner"].kernels
            flops = step_flops(kernels)
            row.update(rate_stats(steps * flops, results[name], "flop_per_s"))
            row.update(kernels=kernels, flops_per_step=flops)
            print(f"{arch} D={dim} {name}: {row['median_flop_per_s'] / 1e9:.1f} GFLOP/s")
        rows.append(row)
    return rows


def limit(rows: list[dict]) -> float | None:
    """The limit: the fastest matmul program's median FLOP/s."""
    rates = [r["median_flop_per_s"] for r in rows if "median_flop_per_s" in r]
    return max(rates) if rates else None


def matmul_limit(archs: list[str], dims: list[int], steps: int, repeats: int) -> list[dict]:
    rows = []
    for dim in dims:
        for arch in archs:
            results = interleaved(limit_makers(arch, dim), steps, repeats, f"{arch} D={dim}")
            rows += limit_rows(arch, dim, steps, results)
    return rows


def limit_table(rows: list[dict]) -> str:
    header = ["kernel shapes of", "D", "matmuls / step", "GFLOP / step"]
    header += [f"{tables.NAMES[s]}, GFLOP/s" for s in LIMIT_SYSTEMS] + ["limit, GFLOP/s"]
    lines = []
    for arch, dim in sorted({(r["arch"], r["dim"]) for r in rows}, key=lambda k: (k[1], k[0])):
        by = {r["system"]: r for r in rows if (r["arch"], r["dim"]) == (arch, dim)}
        ok = [r for r in by.values() if "error" not in r]
        kernels = len(ok[0]["kernels"]) * 3 if ok else "-"
        gflop = f"{ok[0]['flops_per_step'] / 1e9:.3f}" if ok else "-"
        lim = limit(list(by.values()))
        cells = [tables.cell(by[s], "flop_per_s", 1e9) for s in LIMIT_SYSTEMS]
        lines.append(
            [f"{arch} (nfzoo)", dim, kernels, gflop, *cells, f"{lim / 1e9:.1f}" if lim else "-"]
        )
    return tables.markdown(header, lines)


def run(args, meta: dict) -> int:
    rows = matmul_limit(args.archs, args.dims, args.steps, args.repeats)
    meta.update(batch=TRAIN_BATCH, rows=rows)
    title = (
        f"float32 matmul GFLOP/s of one training step's dense products (batch {TRAIN_BATCH}"
        f"): median (min-max) of {args.repeats} repeats of {args.steps} steps"
    )
    tables.write(args.out, "matmul_limit", meta, limit_table(rows), title)
    return 0
