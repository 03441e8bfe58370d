"""dot-orientation: under XLA, the time of one kernel gradient dW = X^T dY (X [512, n_in]) of a
dense product Y = X W, for every kernel shape of the train-throughput models, computed by
XLA's own gradient of ``tf.matmul`` and by ``nfzoo.ops.matmul``'s (which computes (dY^T X)^T
where n_in > n_out); 20 gradients per compiled call, each followed by a tiny update of X and W
so that none is dead code or loop-invariant.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from . import tables
from .peers import TRAIN_BATCH, nfzoo_flow, nfzoo_kernels
from .timing import CallRunner, interleaved, rate_stats

COMMAND = "dot-orientation"
HELP = "XLA kernel-gradient time by orientation"
THREADS = True
DOT_SYSTEMS = ("tf.matmul", "nfzoo.ops.matmul")
GRADIENTS_PER_CALL = 20


def add_arguments(p) -> None:
    archs = ["maf", "realnvp"]
    p.add_argument("--archs", nargs="+", default=archs, choices=archs)
    p.add_argument("--dims", nargs="+", type=int, default=[8, 64])
    p.add_argument("--calls", type=int, default=20, help="compiled calls per timed block")
    p.add_argument("--repeats", type=int, default=7)


def kernel_gradient_runner(n_in: int, n_out: int, product: Callable, batch: int = TRAIN_BATCH):
    """``GRADIENTS_PER_CALL`` kernel gradients of Y = X W under XLA per call (see the module
    docstring), with ``product`` = ``tf.matmul`` or ``nfzoo.ops.matmul``."""
    import tensorflow as tf

    rng = np.random.RandomState(0)
    x = tf.Variable(rng.randn(batch, n_in).astype(np.float32))
    w = tf.Variable((rng.randn(n_in, n_out) / np.sqrt(n_in)).astype(np.float32))
    dy = tf.constant(rng.randn(batch, n_out).astype(np.float32))

    @tf.function(jit_compile=True)
    def call():
        for _ in range(GRADIENTS_PER_CALL):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(product(x, w) * dy)
            w.assign_sub(1e-9 * tape.gradient(loss, w))
            x.assign_add(1e-9 * w[:1, :1] * tf.ones_like(x))
        return w[0, 0]

    return CallRunner(call)


def dot_orientation(archs: list[str], dims: list[int], calls: int, repeats: int) -> list[dict]:
    import tensorflow as tf

    from nfzoo.ops import matmul

    products = {"tf.matmul": tf.matmul, "nfzoo.ops.matmul": matmul}
    shapes = sorted(
        {k for dim in dims for arch in archs for k in nfzoo_kernels(nfzoo_flow(arch, dim))}
    )
    rows = []
    for n_in, n_out in shapes:
        makers = {
            name: functools.partial(kernel_gradient_runner, n_in, n_out, products[name])
            for name in DOT_SYSTEMS
        }
        results = interleaved(makers, calls, repeats, f"[{n_in}, {n_out}]")
        for name in DOT_SYSTEMS:
            row = {"kernel": [n_in, n_out], "system": name, "calls_per_block": calls}
            if "error" in results[name]:
                row["error"] = results[name]["error"]
            else:
                row.update(rate_stats(calls * GRADIENTS_PER_CALL, results[name], "grads_per_s"))
            rows.append(row)
        print(f"[{n_in}, {n_out}]: " + ", ".join(tables.cell(r, "grads_per_s") for r in rows[-2:]))
    return rows


def dot_table(rows: list[dict]) -> str:
    header = ["kernel [n_in, n_out]", *(f"{s}, ms per gradient" for s in DOT_SYSTEMS), "speed-up"]
    lines = []
    for kernel in sorted({tuple(r["kernel"]) for r in rows}):
        by = {r["system"]: r for r in rows if tuple(r["kernel"]) == kernel}
        ms = [
            1e3 / by[s]["median_grads_per_s"] if "median_grads_per_s" in by[s] else None
            for s in DOT_SYSTEMS
        ]
        cells = [f"{m:.3f}" if m else "error" for m in ms]
        speedup = f"{ms[0] / ms[1]:.2f}x" if all(ms) else "-"
        lines.append([list(kernel), *cells, speedup])
    return tables.markdown(header, lines)


def run(args, meta: dict) -> int:
    rows = dot_orientation(args.archs, args.dims, args.calls, args.repeats)
    meta.update(batch=TRAIN_BATCH, gradients_per_call=GRADIENTS_PER_CALL, rows=rows)
    title = (
        f"XLA, ms per kernel gradient of a dense product (batch {TRAIN_BATCH}): from the "
        f"median of {args.repeats} repeats of {args.calls} calls x {GRADIENTS_PER_CALL}; "
        f"threads {meta['threads']}"
    )
    tables.write(args.out, "dot_orientation", meta, dot_table(rows), title)
    return 0
