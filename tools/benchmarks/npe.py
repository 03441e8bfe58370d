"""npe: neural posterior estimation side by side, at one simulation budget.

    .venv/bin/python tools/bench.py npe [--tasks two-moons slcp] [--budget 10000]
        [--steps 500] [--repeats 4] [--samples 2000] [--observations 1 2 ... 10]
        [--systems nfzoo-nsf nfzoo-maf zuko-nsf zuko-maf bayesflow]
        [--bayesflow-python /path/to/python-with-bayesflow]

Per task, ``--budget`` pairs (theta ~ prior, x ~ simulator; ``nfzoo.npe``'s seeded
simulations) are cut into one fixed stream of batches of ``--batch`` (a new permutation of
the pairs for every pass), and every system trains on exactly that stream, in that order:
the same simulations, batches and number of steps (Adam at 1e-3, negative log-likelihood of
theta given x). Sizes: ``--layers`` transforms with MLP conditioners of ``--hidden`` units.

  - nfzoo-nsf, nfzoo-maf: ``nfzoo.npe.build_npe_flow(task, arch, num_layers, hidden_units)``
    (nsf: 10 bins), which standardises theta and x itself, trained by Keras ``fit`` with the
    default ``flow.compile()`` (XLA) on a tf.data pipeline of the stream;
  - zuko-nsf, zuko-maf (PyTorch, CPU): ``zuko.flows.NSF(D, X, transforms, hidden_features,
    bins=10, passes=2)`` (a coupling, as nfzoo's nsf) and ``zuko.flows.MAF(D, X, ...)``, on
    theta and x z-scored with the training pairs' means and standard deviations (zuko has no
    standardisation of its own; sbi z-scores the same way), a plain torch loop with Adam;
  - bayesflow: BayesFlow's ``CouplingFlow(depth=ceil(layers / 2), transform=
    --bayesflow-transform, subnet widths --hidden)`` (each of its layers is a dual coupling,
    two couplings) in a ``BasicEstimator`` with ``standardize="all"``, trained by its Keras
    ``fit`` on the same stream, in a worker process (``benchmarks/bayesflow_worker.py``) run
    by ``--bayesflow-python`` (BayesFlow 2.1 needs Python >= 3.12 and numpy >= 2.5, so it
    lives in an environment of its own); the worker times its own blocks. BayesFlow runs as
    it ships: its ``compile`` leaves ``jit_compile`` False (a TF graph, no XLA), which the
    JSON records.

Training speed: ``interleaved`` (the one timing mechanism) times blocks of ``--steps`` steps,
round-robin; steps/s as median (min-max) over the repeats, and each system's rate over
nfzoo-nsf's, as the median of the per-round ratios. Quality: after training (first block,
one warm-up round, ``--repeats`` rounds: (2 + repeats) x steps steps), ``--samples`` posterior
samples per observation (inside the prior's support, as ``nfzoo.npe.sample_posterior``),
C2ST against as many reference samples (``nfzoo.npe.reference_posterior``, cached under
out/npe/reference), mean (min-max) over ``--observations``.
"""

from __future__ import annotations

import functools
import statistics
from pathlib import Path

import numpy as np

from . import tables
from .peers import NPE_BINS, NPE_LEARNING_RATE, NPE_SYSTEMS, add_bayesflow_option, make_npe
from .timing import error_text, interleaved, rate_stats

COMMAND = "npe"
HELP = "NPE: C2ST and steps/s vs zuko and BayesFlow"
THREADS = True


def add_arguments(p) -> None:
    from nfzoo import npe

    p.add_argument("--tasks", nargs="+", default=npe.list_tasks(), choices=npe.list_tasks())
    p.add_argument("--budget", type=int, default=10_000, help="simulations per task")
    p.add_argument("--batch", type=int, default=200)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--hidden", type=int, nargs="+", default=[50, 50])
    p.add_argument("--steps", type=int, default=500, help="training steps per timed block")
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--samples", type=int, default=2000, help="posterior and reference samples")
    p.add_argument("--observations", nargs="+", type=int, default=list(range(1, 11)))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--systems", nargs="+", default=list(NPE_SYSTEMS), choices=NPE_SYSTEMS)
    add_bayesflow_option(p)
    p.add_argument("--bayesflow-transform", default="affine", choices=["affine", "spline"])


def stream(task, args) -> tuple[np.ndarray, np.ndarray]:
    """The training stream: ``--budget`` simulated pairs, re-permuted for every pass, long
    enough for every block of the run."""
    from nfzoo.npe.training import TRAINING_SEED

    theta, x = task.simulate_pairs(args.budget, seed=TRAINING_SEED + args.seed)
    steps = (2 + args.repeats) * args.steps
    per_pass = args.budget // args.batch
    rng = np.random.default_rng(args.seed)
    passes = -(-steps // per_pass)
    order = np.concatenate(
        [rng.permutation(args.budget)[: per_pass * args.batch] for _ in range(passes)]
    )
    return theta[order].astype(np.float32), x[order].astype(np.float32)


def npe_side_by_side(args, threads: int) -> list[dict]:
    from nfzoo import npe

    rows = []
    cache = Path(args.out).parent / "npe" / "reference"
    for name in args.tasks:
        task = npe.get_task(name)
        theta, x = stream(task, args)
        makers = {
            s: functools.partial(make_npe, s, task, theta, x, args, threads) for s in args.systems
        }
        results = interleaved(makers, args.steps, args.repeats, name)
        for system in args.systems:
            row = {"task": name, "system": system, "budget": args.budget}
            result = results[system]
            if "error" in result:
                rows.append({**row, "error": result["error"]})
                continue
            runner = result["runner"]
            row.update(rate_stats(args.steps, result, "steps_per_s"))
            row.update(params=runner.params, steps_trained=(2 + args.repeats) * args.steps)
            try:
                scores, acceptance = [], []
                for i in args.observations:
                    ref = npe.reference_posterior(task, i, args.samples, args.seed, cache)
                    draw = runner.draw(task.observation(i))
                    samples, rate = npe.sample_in_support(draw, task, args.samples)
                    scores.append(npe.c2st(ref.samples, samples))
                    acceptance.append(rate)
                row.update(c2st=scores, acceptance=acceptance)
                print(f"{name} {system}: C2ST {np.mean(scores):.3f}", flush=True)
            except Exception as e:
                row["error"] = error_text(e)
                print(f"{name} {system} failed: {row['error']}")
            if hasattr(runner, "info"):
                row["bayesflow"] = runner.info
            rows.append(row)
        for result in results.values():
            if hasattr(result.get("runner"), "close"):
                result["runner"].close()
    return rows


def npe_table(rows: list[dict]) -> str:
    header = [
        "task",
        "system",
        "C2ST mean (min-max)",
        "steps/s median (min-max)",
        "x nfzoo-nsf (by round: median, min-max)",
        "parameters",
        "acceptance (min)",
    ]
    lines = []
    for task in dict.fromkeys(r["task"] for r in rows):
        here = {r["system"]: r for r in rows if r["task"] == task}
        base = here.get("nfzoo-nsf")
        for system, r in here.items():
            if "steps_per_s_by_round" not in r:
                lines.append([task, system, f"failed: {r['error'][:150]}", "", "", "", ""])
                continue
            speed = (
                f"{r['median_steps_per_s']:.0f} ({r['min_steps_per_s']:.0f}-"
                f"{r['max_steps_per_s']:.0f})"
            )
            ratio = "-"
            if base and "steps_per_s_by_round" in base:
                rounds = sorted(
                    a / b for a, b in zip(r["steps_per_s_by_round"], base["steps_per_s_by_round"])
                )
                ratio = (
                    f"{r['median_steps_per_s'] / base['median_steps_per_s']:.2f} "
                    f"({statistics.median(rounds):.2f}, {rounds[0]:.2f}-{rounds[-1]:.2f})"
                )
            if "c2st" in r:
                c = r["c2st"]
                quality = f"{np.mean(c):.3f} ({min(c):.3f}-{max(c):.3f})"
                acc = f"{min(r['acceptance']):.3f}"
            else:
                quality, acc = f"failed: {r['error'][:100]}", "-"
            lines.append([task, system, quality, speed, ratio, f"{r['params']:,}", acc])
    return tables.markdown(header, lines)


def run(args, meta: dict) -> int:
    rows = npe_side_by_side(args, args.threads)
    meta.update(rows=rows, learning_rate=NPE_LEARNING_RATE, bins=NPE_BINS)
    title = (
        f"NPE at {args.budget:,} simulations per task: C2ST (0.5 best) over observations "
        f"{args.observations} ({args.samples} samples each) after {(2 + args.repeats) * args.steps}"
        f" steps of batch {args.batch} (Adam {NPE_LEARNING_RATE}), {args.layers} layers, hidden "
        f"{args.hidden}; steps/s: median (min-max) of {args.repeats} interleaved repeats of "
        f"{args.steps} steps; threads {meta['threads']}"
    )
    tables.write(args.out, "npe", meta, npe_table(rows), title)
    return 0
