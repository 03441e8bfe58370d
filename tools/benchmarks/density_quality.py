"""density-quality: KL(p || q) = E_p[log p - log q] of each ``--archs`` flow (5 layers, hidden
[64, 64]) trained at equal budget (same steps, the same batches of 512 fresh samples, Adam at
1e-3) in nfzoo, TFP (XLA step; MAF only: TFP has no stock spline flow) and zuko (``maf``:
``zuko.flows.MAF``; ``nsf-ar``: ``zuko.flows.NSF``, autoregressive; ``nsf``: ``zuko.flows.NSF``
with ``passes=2``, a coupling; 8 bins on [-5, 5] in both libraries), on D-dimensional
Gaussian mixtures (``--dims``, ``mixture``: an ``nfzoo.targets.GaussianMixture``) whose log
density is known exactly; estimated on 20,000 held-out samples of p, with its standard error;
over several seeds the mean +- standard error across seeds, and the paired difference to
zuko's flow of the same kind, seed by seed. ``--systems bayesflow`` (realnvp and nsf only)
adds BayesFlow's ``CouplingFlow`` (affine or spline, ``peers.BayesFlowTrainer``), trained on
the same batches by its Keras ``fit`` in a worker process run by ``--bayesflow-python``, which
returns log q of the test points.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import tables
from .peers import (
    BAYESFLOW,
    TRAIN_BATCH,
    TRAIN_LAYERS,
    add_bayesflow_option,
    close,
    make_trainer,
    supports,
)
from .timing import error_text

COMMAND = "density-quality"
HELP = "KL(p||q) at equal budget and size"
THREADS = True
QUALITY_SYSTEMS = ("nfzoo", "tfp-xla", "zuko")
#: in the order of the table
ALL_QUALITY_SYSTEMS = (*QUALITY_SYSTEMS, BAYESFLOW)

if TYPE_CHECKING:
    from nfzoo.targets import GaussianMixture


def add_arguments(p) -> None:
    p.add_argument(
        "--archs", nargs="+", default=["maf"], choices=["maf", "realnvp", "nsf", "nsf-ar"]
    )
    p.add_argument("--dims", nargs="+", type=int, default=[8])
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--hidden", nargs="+", type=int, default=[64, 64])
    p.add_argument("--test", type=int, default=20_000, help="held-out samples of p")
    p.add_argument(
        "--systems", nargs="+", default=list(QUALITY_SYSTEMS), choices=ALL_QUALITY_SYSTEMS
    )
    add_bayesflow_option(p)


def mixture(dim: int = 8, components: int = 8, seed: int = 0) -> GaussianMixture:
    """A D-dimensional mixture of axis-aligned Gaussians (Dirichlet(2) weights, means
    3 N(0, 1), scales U[0.3, 1.5]), standardised exactly: each coordinate has mean 0 and
    variance 1 under p."""
    from nfzoo.targets import GaussianMixture  # imports TensorFlow: not for --help

    rng = np.random.RandomState(seed)
    w = rng.dirichlet(2.0 * np.ones(components))
    m = 3.0 * rng.randn(components, dim)
    s = rng.uniform(0.3, 1.5, size=(components, dim))
    mean = w @ m
    std = np.sqrt(w @ (s**2 + m**2) - mean**2)
    return GaussianMixture((m - mean) / std, s / std, w, name=f"mixture-{dim}d")


def density_quality(
    steps: int,
    seeds: list[int],
    hidden: list[int],
    n_test: int,
    dims: list[int] = (8,),
    archs: list[str] = ("maf",),
    systems=QUALITY_SYSTEMS,
    bayesflow_python: str = "python",
    threads: int = 0,
) -> list[dict]:
    """Per D, architecture, seed and system: train ``steps`` steps on fresh batches (the same
    for every system), then KL(p || q) on ``n_test`` held-out samples of p, with its standard
    error."""
    rows = []
    for dim in dims:
        mix = mixture(dim)
        for seed in seeds:
            # one stream: the training batches, then the test set
            rng = np.random.RandomState(1000 + seed)
            train = mix.sample(steps * TRAIN_BATCH, rng)
            test = mix.sample(n_test, rng)
            log_p = mix.log_prob(test.astype(np.float64)).numpy()
            for arch in archs:
                for system in [s for s in systems if supports(s, arch)]:
                    row = {"system": system, "arch": arch, "seed": seed, "steps": steps}
                    row.update(hidden=hidden, dim=dim)
                    label = f"D={dim} {arch} seed {seed} {system}"
                    trainer = None
                    try:
                        trainer = make_trainer(
                            system, arch, train, hidden, seed, bayesflow_python, threads
                        )
                        row["train_s"] = trainer.block(steps)
                        d = log_p - trainer.log_prob(test).astype(np.float64)
                        row["finite"] = int(np.isfinite(d).sum())
                        d = d[np.isfinite(d)]
                        row["kl"] = float(d.mean())
                        row["kl_se"] = float(d.std(ddof=1) / np.sqrt(len(d)))
                        print(f"{label}: KL {row['kl']:.4f} +- {row['kl_se']:.4f} nats")
                        if system == BAYESFLOW:
                            row["bayesflow"] = trainer.info
                    except Exception as e:
                        row["error"] = error_text(e)
                        print(f"{label} failed: {row['error']}")
                    finally:
                        close(trainer)
                    rows.append(row)
    return rows


def quality_table(rows: list[dict]) -> str:
    header = [
        "D",
        "flow",
        "system",
        "KL(p \\|\\| q), nats: mean +- se over seeds",
        "per seed (+- se on the test set)",
        "training s (per seed)",
        "KL - zuko's",
    ]
    lines = []
    keys = sorted({(r["dim"], r.get("arch", "maf")) for r in rows})
    for dim, arch in keys:
        here = [r for r in rows if (r["dim"], r.get("arch", "maf")) == (dim, arch)]
        zuko = {r["seed"]: r["kl"] for r in here if r["system"] == "zuko" and "kl" in r}
        for system in ALL_QUALITY_SYSTEMS:
            rs = [r for r in here if r["system"] == system]
            if not rs:
                continue
            ok = [r for r in rs if "kl" in r]
            per_seed = ", ".join(
                f"{r['kl']:.4f} +- {r['kl_se']:.4f}" if "kl" in r else f"failed: {r['error'][:80]}"
                for r in rs
            )
            secs = ", ".join(f"{r['train_s']:.1f}" for r in ok)
            gap = tables.mean_se([r["kl"] - zuko[r["seed"]] for r in ok if r["seed"] in zuko])
            kls = tables.mean_se([r["kl"] for r in ok])
            lines.append([dim, arch, tables.NAMES[system], kls, per_seed, secs, gap])
    return tables.markdown(header, lines)


def run(args, meta: dict) -> int:
    rows = density_quality(
        args.steps,
        args.seeds,
        args.hidden,
        args.test,
        args.dims,
        args.archs,
        args.systems,
        args.bayesflow_python,
        args.threads,
    )
    meta.update(
        rows=rows,
        mixture="benchmarks.density_quality.mixture(dim=D, components=8, seed=0), "
        "an nfzoo.targets.GaussianMixture",
    )
    title = (
        f"KL(p || q) of {', '.join(args.archs)} ({TRAIN_LAYERS} layers, hidden "
        f"{args.hidden}) after {args.steps} steps of batch {TRAIN_BATCH} (Adam 1e-3) on "
        f"the D-dimensional mixture, D in {args.dims}; {args.test} held-out samples"
    )
    title += tables.bayesflow_note(args.systems)
    tables.write(args.out, "density_quality", meta, quality_table(rows), title)
    return 0
