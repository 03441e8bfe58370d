"""Reverse-KL fits of flows to Rezende & Mohamed's energies U1-U4, as a table and PNG figures.

    .venv/bin/python tools/vi_targets.py [--steps 4000] [--archs planar sylvester-orthogonal]
                                         [--targets u1 u2 u3 u4] [--anneal-fraction 0.25]
                                         [--out out/vi]

Each (target, architecture) pair: nfzoo.build(arch, 2, seed=0, **ARCH_OPTIONS[arch]), then
ReverseKL under XLA with 256 samples a step, Adam 3e-3, beta annealed from 0.01 to 1 over the
first quarter of the steps (Rezende & Mohamed 2015, section 6.1; ``--anneal-fraction``), noise
seed 0. Then ``vi.diagnostics`` on 100,000 fresh samples (seed 1). log Z of U1-U4 is unknown
in closed form, so the table's reference log Z is ``targets.quadrature_log_z``: a 2001 x 2001
grid over [-6, 6]^2 (the energies are smooth and, with the wall on U2-U4, hold no mass outside it);
KL(q || p) = log Z_quad - ELBO. Figures (target | fitted flows, one row per target) go to
``<out>/<target>.png`` and ``<out>/figure3.png``; out/ is ignored by git.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import nfzoo
from nfzoo import plots, targets, vi

#: paper sizes: K = 32 planar layers (figure 3's largest); Sylvester as built by default
ARCH_OPTIONS = {"planar": {"num_layers": 32}, "radial": {"num_layers": 32}}
#: the fit and its measurement, shared with the registry's entries (tools/train_zoo.py)
NUM_SAMPLES, LEARNING_RATE, SEED = 256, 3e-3, 0
EVAL_SAMPLES, EVAL_SEED = 100_000, 1
#: share of the steps over which beta rises from 0.01 to 1
ANNEAL_FRACTION = 0.25


def build_flow(arch: str, name: str | None = None) -> nfzoo.Flow:
    """``arch`` on 2-D events, seed 0, with its ARCH_OPTIONS."""
    return nfzoo.build(arch, 2, seed=SEED, name=name, **ARCH_OPTIONS.get(arch, {}))


def measure(flow, target) -> vi.Diagnostics:
    """vi.diagnostics on EVAL_SAMPLES samples of the flow from EVAL_SEED."""
    return vi.diagnostics(flow, target, num_samples=EVAL_SAMPLES, seed=EVAL_SEED)


def fit(flow, target, steps: int, anneal_fraction: float = ANNEAL_FRACTION):
    """Fits ``flow`` in place by reverse KL to ``target`` for ``steps`` steps of NUM_SAMPLES,
    Adam LEARNING_RATE, beta annealed over the first ``anneal_fraction`` of the steps, noise
    seed SEED; then measures it. Returns (``measure(flow, target)``, fit seconds)."""
    start = time.perf_counter()
    vi.fit_reverse_kl(
        flow,
        target,
        steps=steps,
        num_samples=NUM_SAMPLES,
        learning_rate=LEARNING_RATE,
        anneal_steps=int(steps * anneal_fraction),
        seed=SEED,
    )
    seconds = time.perf_counter() - start
    return measure(flow, target), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--archs", nargs="*", default=["planar", "sylvester-orthogonal"])
    parser.add_argument("--targets", nargs="*", default=["u1", "u2", "u3", "u4"])
    parser.add_argument(
        "--anneal-fraction",
        type=float,
        default=ANNEAL_FRACTION,
        help="share of the steps over which beta is annealed to 1",
    )
    parser.add_argument("--out", default="out/vi")
    args = parser.parse_args()

    print(
        f"reverse KL, {args.steps} steps x 256 samples, Adam 3e-3, seed 0, XLA, beta annealed "
        f"over {args.anneal_fraction:g} of the steps"
    )
    print(
        "| target | flow | -ELBO | log Z (IS) +- se | log Z (ref) | KL(q\\|\\|p) | ESS | time (s) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for name in args.targets:
        target = targets.get(name)
        log_z_ref = targets.reference_log_z(target)
        fitted = {}
        for arch in args.archs:
            flow = build_flow(arch)
            d, seconds = fit(flow, target, args.steps, args.anneal_fraction)
            print(
                f"| {name} | {arch} | {-d.elbo:.3f} | {d.log_z:.3f} +- {d.log_z_se:.3f} | "
                f"{log_z_ref:.3f} | {log_z_ref - d.elbo:.3f} | {d.ess:.3f} | {seconds:.0f} |",
                flush=True,
            )
            fitted[arch] = flow
        plots.plot_fits([(target, fitted)], os.path.join(args.out, f"{name}.png"))
        rows.append((target, fitted))
    path = plots.plot_fits(rows, os.path.join(args.out, "figure3.png"))
    print(f"figures: {path} and one per target in {args.out}/")


if __name__ == "__main__":
    main()
