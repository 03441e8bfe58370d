"""density-throughput: ``log_prob`` throughput (points/s at batch 10,000) and sampling
throughput (one call drawing 10,000 samples) of the train-throughput MAF and RealNVP models,
untrained, in nfzoo (``flow.log_prob`` / ``flow.sample`` in ``tf.function(jit_compile=True)``;
``nfzoo-graph`` without XLA), TFP stock (``dist.log_prob`` / ``dist.sample`` in
``tf.function``, graph and XLA) and zuko (``flow().log_prob`` / ``flow().sample`` under
``torch.inference_mode``). MAF sampling is the sequential direction (D conditioner passes per
layer) in all three. ``--archs nsf nsf-ar`` adds the spline flows (nfzoo and zuko; TFP has no
stock spline flow). ``bayesflow`` (not in the default set; realnvp and nsf only): BayesFlow's
``CouplingFlow`` (``peers.BayesFlowTrainer``), untrained, its network's ``log_prob`` /
``sample`` in one ``tf.function`` each, in a worker process run by ``--bayesflow-python``
that times its own blocks of calls (the pipe to it is outside the time), interleaved with the
others' rounds; with it the table adds "nfzoo / bayesflow".
"""

from __future__ import annotations

import functools

from . import tables
from .peers import (
    ALL_SYSTEMS,
    BAYESFLOW,
    TRAIN_SYSTEMS,
    BayesFlowTrainer,
    add_bayesflow_option,
    close,
    mixture_sample,
    nfzoo_flow,
    supports,
    tfp_flow,
    zuko_flow,
)
from .timing import CallRunner, error_text, interleaved, rate_stats

COMMAND = "density-throughput"
HELP = "log_prob and sample points/s"
THREADS = True
DENSITY_N = 10_000


def add_arguments(p) -> None:
    archs = ["maf", "realnvp", "nsf", "nsf-ar"]
    p.add_argument("--archs", nargs="+", default=archs[:2], choices=archs)
    p.add_argument("--dims", nargs="+", type=int, default=[8, 64])
    p.add_argument("--n", type=int, default=DENSITY_N, help="points per call")
    p.add_argument("--calls", type=int, default=1, help="calls per timed block")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--systems", nargs="+", default=list(TRAIN_SYSTEMS), choices=ALL_SYSTEMS)
    add_bayesflow_option(p)


def density_runner(
    system: str,
    arch: str,
    dim: int,
    task: str,
    n: int,
    bayesflow_python: str = "python",
    threads: int = 0,
):
    """``log_prob`` of ``n`` points or ``sample`` of ``n`` points, one per call."""
    x = mixture_sample(dim, n=n)
    if system == BAYESFLOW:
        worker = BayesFlowTrainer(arch, dim, python=bayesflow_python, threads=threads)
        return worker.calls(task, n, x if task == "log_prob" else None)
    if system == "zuko":
        import torch

        flow, xt = zuko_flow(arch, dim), torch.from_numpy(x)

        def call():
            with torch.inference_mode():
                return flow().log_prob(xt) if task == "log_prob" else flow().sample((n,))

        return CallRunner(call)
    import tensorflow as tf

    if system in ("nfzoo", "nfzoo-graph"):
        flow = nfzoo_flow(arch, dim)
        log_prob, sample = flow.log_prob, functools.partial(flow.sample, n)
        jit = system == "nfzoo"
    else:
        dist = tfp_flow(arch, dim)[0]
        log_prob, sample = dist.log_prob, functools.partial(dist.sample, n)
        jit = system == "tfp-xla"
    if task == "log_prob":
        fn, xt = tf.function(log_prob, jit_compile=jit), tf.constant(x)
        return CallRunner(functools.partial(fn, xt))
    return CallRunner(tf.function(sample, jit_compile=jit))


def density_throughput(
    archs: list[str],
    dims: list[int],
    calls: int,
    repeats: int,
    n: int,
    systems=TRAIN_SYSTEMS,
    bayesflow_python: str = "python",
    threads: int = 0,
) -> list[dict]:
    rows = []
    for dim in dims:
        for arch in archs:
            arch_systems = [s for s in systems if supports(s, arch)]
            for task in ("log_prob", "sample"):
                makers = {
                    s: functools.partial(
                        density_runner, s, arch, dim, task, n, bayesflow_python, threads
                    )
                    for s in arch_systems
                }
                label = f"{arch} D={dim} {task}"
                results = interleaved(makers, calls, repeats, label)
                for s in arch_systems:
                    row = {"arch": arch, "dim": dim, "task": task, "system": s, "n": n}
                    row["calls_per_block"] = calls
                    if "error" in results[s]:
                        row["error"] = results[s]["error"]
                    else:
                        row.update(rate_stats(calls * n, results[s], "points_per_s"))
                        print(f"{label} {s}: {row['median_points_per_s']:.0f} points/s")
                        if s == BAYESFLOW:
                            try:
                                row["bayesflow"] = results[s]["runner"].info
                            except RuntimeError as e:
                                row["error"] = error_text(e)
                    rows.append(row)
                for res in results.values():
                    close(res.get("runner"))
                del results, makers
    return rows


def density_table(rows: list[dict]) -> str:
    systems = [s for s in ALL_SYSTEMS if any(r["system"] == s for r in rows)]
    names = [tables.NAMES[s].replace("fit, ", "") for s in systems]
    lines, compile_lines = [], []
    keys = sorted({(r["arch"], r["dim"], r["task"]) for r in rows}, key=lambda k: (k[1], k))
    against = [BAYESFLOW] if BAYESFLOW in systems else []
    for key in keys:
        by = {r["system"]: r for r in rows if (r["arch"], r["dim"], r["task"]) == key}
        for s in systems:
            by.setdefault(s, tables.UNSUPPORTED)
        cells = [tables.cell(by[s], "points_per_s", 1e3) for s in systems]
        cells.append(tables.ratio_cell(by, systems, "points_per_s"))
        cells += [tables.ratio_cell(by, systems, "points_per_s", against=s) for s in against]
        lines.append([*key, *cells])
        compile_lines.append([*key, *(tables.compile_cell(by[s]) for s in systems)])
    ratios = ["nfzoo / fastest peer", *(f"nfzoo / {s}" for s in against)]
    return (
        tables.markdown(["flow", "D", "task", *names, *ratios], lines)
        + "\n\ncompile / first-block overhead, s\n\n"
        + tables.markdown(["flow", "D", "task", *names], compile_lines)
    )


def run(args, meta: dict) -> int:
    rows = density_throughput(
        args.archs,
        args.dims,
        args.calls,
        args.repeats,
        args.n,
        args.systems,
        args.bayesflow_python,
        args.threads,
    )
    meta.update(rows=rows)
    title = (
        f"thousands of points/s, {args.n} points per call: median (min-max) of "
        f"{args.repeats} repeats of {args.calls} call(s); threads {meta['threads']}"
    )
    title += tables.bayesflow_note(args.systems)
    tables.write(args.out, "density_throughput", meta, density_table(rows), title)
    return 0
