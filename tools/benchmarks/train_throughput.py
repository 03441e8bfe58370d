"""train-throughput: training steps/s (batch 512, Adam at 1e-3, negative log-likelihood) of MAF
and RealNVP (``--archs``: also nsf and nsf-ar, against zuko's NSF as in density-quality; TFP
has no stock spline flow), 5 layers, hidden [256, 256], at every D of ``--dims``, on one fixed
float32 sample of a Gaussian mixture (``peers.mixture_sample``), for the systems of ``peers``:
  - nfzoo: trained by Keras ``fit`` with the default ``flow.compile()`` (XLA, 10 steps per
    call of the compiled function) on a repeated tf.data pipeline; every block is one
    ``fit(epochs=1, steps_per_epoch=steps)`` call, timed from the epoch's start to its end by
    a callback (the time of the whole ``fit`` call is kept in the JSON too); ``nfzoo-graph``
    (not in the default set) is the same with ``compile(jit_compile=False)``, and
    ``nfzoo-plain-matmul`` (not in the default set) the same XLA flow whose dense layers'
    kernel gradients are the plain product (``nfzoo.ops.SWAP_RATIO = inf``), so that one run
    compares nfzoo's custom-gradient Dense with plain Keras matmul (column
    "nfzoo / nfzoo-plain-matmul");
  - TFP stock: trained by a ``tf.function`` step with tf_keras' Adam, once in graph mode and
    once with ``jit_compile=True``, fed by the same tf.data pipeline;
  - zuko (PyTorch, CPU): a plain loop with ``torch.optim.Adam`` over the same batches; torch
    is set to as many intra- and inter-op threads as TF uses by default (the cores this
    process may run on); ``--threads N`` gives both N intra- and N inter-op threads;
  - bayesflow (not in the default set; realnvp and nsf only): BayesFlow's ``CouplingFlow``
    (affine or spline, ``peers.BayesFlowTrainer``) trained by its Keras ``fit`` on the same
    batches, in a worker process run by ``--bayesflow-python``, which times its own blocks
    (the pipe to it is outside the time); its rounds interleave with the others' in the same
    run. With it the table adds "nfzoo / bayesflow".
Interleaved with them, the machine's limit (see matmul-limit), so that each system's rate is
also given as achieved matmul FLOP/s (``step_flops`` of its own kernels x steps/s) over that
limit. With ``--memory`` (default), each system then trains again alone in a subprocess
(``peak-memory``: first block + one block) whose peak RSS is reported with the increment over
the same interpreter's RSS after its imports (the baseline); BayesFlow's is a fresh worker, its
increment over that interpreter's own RSS after its imports (TensorFlow, Keras, BayesFlow),
not counted in the baseline column.
"""

from __future__ import annotations

import argparse
import functools
import statistics

from . import tables
from .matmul_limit import limit, limit_makers, limit_rows, step_flops
from .peak_memory import peak_memory
from .peers import (
    BAYESFLOW,
    PLAIN_MATMUL,
    TRAIN_BATCH,
    TRAIN_HIDDEN,
    TRAIN_LAYERS,
    TRAIN_SYSTEMS,
    TRAINED_SYSTEMS,
    add_bayesflow_option,
    close,
    make_trainer,
    mixture_sample,
    supports,
)
from .timing import error_text, interleaved, rate_stats

COMMAND = "train-throughput"
HELP = "training steps/s vs TFP's, zuko's and BayesFlow's flows"
THREADS = True


def add_arguments(p) -> None:
    archs = ["maf", "realnvp", "nsf", "nsf-ar"]
    p.add_argument("--archs", nargs="+", default=archs[:2], choices=archs)
    p.add_argument("--dims", nargs="+", type=int, default=[8, 64])
    p.add_argument("--steps", type=int, default=20, help="training steps per timed block")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--systems", nargs="+", default=list(TRAIN_SYSTEMS), choices=TRAINED_SYSTEMS)
    p.add_argument(
        "--limit",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="interleave the matmul-limit programs and report fractions of it",
    )
    p.add_argument(
        "--memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="peak RSS of each system training alone, in a subprocess",
    )
    add_bayesflow_option(p)


def train_throughput(
    archs: list[str],
    dims: list[int],
    steps: int,
    repeats: int,
    systems=TRAIN_SYSTEMS,
    with_limit: bool = True,
    memory: bool = True,
    threads: int = 0,
    bayesflow_python: str = "python",
) -> tuple[list[dict], list[dict], list[dict]]:
    """Returns (rows per system, matmul-limit rows, peak-memory rows)."""
    rows, all_limit_rows, memory_rows = [], [], []
    for dim in dims:
        x = mixture_sample(dim)
        for arch in archs:
            arch_systems = [s for s in systems if supports(s, arch)]
            makers = {
                s: functools.partial(
                    make_trainer, s, arch, x, bayesflow_python=bayesflow_python, threads=threads
                )
                for s in arch_systems
            }
            if with_limit:
                makers.update(limit_makers(arch, dim))
            results = interleaved(makers, steps, repeats, f"{arch} D={dim}")
            lim_rows = limit_rows(arch, dim, steps, results) if with_limit else []
            lim = limit(lim_rows)
            all_limit_rows += lim_rows
            for system in arch_systems:
                row = {"arch": arch, "dim": dim, "system": system, "steps_per_block": steps}
                res = results[system]
                if "error" in res:
                    row["error"] = res["error"]
                    rows.append(row)
                    continue
                row.update(rate_stats(steps, res, "steps_per_s"))
                runner = res["runner"]
                try:
                    kernels = runner.kernels
                except RuntimeError as e:  # a worker that answered its blocks but not this
                    row["error"] = error_text(e)
                    rows.append(row)
                    continue
                flops = step_flops(kernels)
                rate = row["median_steps_per_s"] * flops
                row.update(kernels=kernels, flops_per_step=flops, flop_per_s=rate)
                if lim:
                    row["limit_fraction"] = rate / lim
                if system.startswith("nfzoo"):
                    row["fit_call_s"] = runner.fit_call_s
                if system == BAYESFLOW:
                    row["bayesflow"] = runner.info
                print(
                    f"{arch} D={dim} {system}: {row['median_steps_per_s']:.1f} steps/s, "
                    f"compile {row['compile_s']:.1f} s, {rate / 1e9:.1f} GFLOP/s"
                    + (f" = {row['limit_fraction']:.2f} of the limit" if lim else "")
                )
                rows.append(row)
            for res in results.values():
                close(res.get("runner"))
            del results, makers
            if memory:
                memory_rows += [
                    peak_memory(s, arch, dim, steps, threads, bayesflow_python)
                    for s in arch_systems
                ]
    return rows, all_limit_rows, memory_rows


def throughput_table(
    rows: list[dict], limit_rows: list[dict] = (), memory_rows: list[dict] = ()
) -> str:
    systems = [s for s in TRAINED_SYSTEMS if any(r["system"] == s for r in rows)]
    names = [tables.NAMES[s] for s in systems]
    short = " / ".join(systems)
    header = ["flow", "D", *names, "nfzoo / fastest peer"]
    against = [s for s in (PLAIN_MATMUL, BAYESFLOW) if s in systems]
    header += [f"nfzoo / {s}" for s in against]
    if limit_rows:
        header += ["limit, GFLOP/s", f"fraction of limit ({short})"]
    if memory_rows:
        header.append(f"peak RSS increment, MiB ({short})")
    lines, compile_lines, memory_lines = [], [], []
    for arch, dim in sorted({(r["arch"], r["dim"]) for r in rows}, key=lambda k: (k[1], k[0])):
        by = {r["system"]: r for r in rows if (r["arch"], r["dim"]) == (arch, dim)}
        for s in systems:
            by.setdefault(s, tables.UNSUPPORTED)
        line = [arch, dim, *(tables.cell(by[s], "steps_per_s") for s in systems)]
        line.append(tables.ratio_cell(by, systems, "steps_per_s"))
        line += [tables.ratio_cell(by, systems, "steps_per_s", against=s) for s in against]
        if limit_rows:
            lim = limit([r for r in limit_rows if (r["arch"], r["dim"]) == (arch, dim)])
            fr = " / ".join(
                f"{by[s]['limit_fraction']:.2f}" if "limit_fraction" in by[s] else "-"
                for s in systems
            )
            line += [f"{lim / 1e9:.1f}", fr] if lim else ["-", "-"]
        if memory_rows:
            mem = {r["system"]: r for r in memory_rows if (r["arch"], r["dim"]) == (arch, dim)}
            line.append(
                " / ".join(
                    f"+{mem[s]['increment_mib']:.0f}" if "increment_mib" in mem.get(s, {}) else "-"
                    for s in systems
                )
            )
            # BayesFlow's baseline is another interpreter's (its worker's)
            base = [
                m["baseline_mib"] for s, m in mem.items() if "baseline_mib" in m and s != BAYESFLOW
            ]
            mcells = [
                f"{mem[s]['peak_mib']:.0f} (+{mem[s]['increment_mib']:.0f})"
                if "peak_mib" in mem.get(s, {})
                else f"failed: {mem[s].get('error', '-')[:120]}"
                if s in mem
                else ""
                for s in systems
            ]
            memory_lines.append(
                [arch, dim, f"{statistics.median(base):.0f}" if base else "-", *mcells]
            )
        lines.append(line)
        compile_lines.append([arch, dim, *(tables.compile_cell(by[s]) for s in systems)])
    text = (
        tables.markdown(header, lines)
        + "\n\ncompile / first-block overhead, s (first block - steps / median steps/s)\n\n"
        + tables.markdown(["flow", "D", *names], compile_lines)
    )
    if memory_rows:
        text += (
            "\n\npeak RSS, MiB, of each system training alone in a fresh interpreter "
            "(first block + one block), with the increment over its RSS after the imports\n\n"
            + tables.markdown(["flow", "D", "baseline (after imports)", *names], memory_lines)
        )
    return text


def run(args, meta: dict) -> int:
    rows, limit_rows, memory_rows = train_throughput(
        args.archs,
        args.dims,
        args.steps,
        args.repeats,
        args.systems,
        args.limit,
        args.memory,
        args.threads,
        args.bayesflow_python,
    )
    meta.update(
        batch=TRAIN_BATCH,
        layers=TRAIN_LAYERS,
        hidden=TRAIN_HIDDEN,
        rows=rows,
        limit_rows=limit_rows,
        memory_rows=memory_rows,
    )
    title = (
        f"training steps/s (batch {TRAIN_BATCH}): median (min-max) of {args.repeats} "
        f"repeats of {args.steps} steps; threads {meta['threads']}; fraction of limit = "
        "steps/s x FLOPs per step (3 x forward dense-matmul FLOPs of each system's kernels) "
        "/ the faster TF matmul program's FLOP/s on nfzoo's kernel shapes"
    )
    title += tables.bayesflow_note(args.systems)
    table = throughput_table(rows, limit_rows, memory_rows)
    tables.write(args.out, "train_throughput", meta, table, title)
    return 0
