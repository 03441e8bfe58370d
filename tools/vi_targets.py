"""Reverse-KL fits of flows to Rezende & Mohamed's energies U1-U4, as a table and PNG figures.

    .venv/bin/python tools/vi_targets.py [--steps 4000] [--archs planar sylvester-orthogonal]
                                         [--targets u1 u2 u3 u4] [--anneal-fraction 0.25]
                                         [--out out/vi]

Each (target, architecture) pair is trained and measured with the protocol of the
registry's reverse-KL entries, ``nfzoo.presets.reverse_kl(arch, target)`` (the protocol's
values are declared there once): nfzoo.build(arch, 2, seed=0) at the paper's sizes (planar
and radial K = 32), ReverseKL under XLA with 256 samples a step, Adam 3e-3, beta annealed from
0.01 to 1 over the first quarter of the steps (Rezende & Mohamed 2015, section 6.1;
``--anneal-fraction``), noise seed 0; then ``vi.diagnostics`` on 100,000 fresh samples
(seed 1). log Z of U1-U4 is unknown in closed form, so the table's reference log Z is
``targets.quadrature_log_z``: a 2001 x 2001 grid over [-6, 6]^2 (the energies are smooth and,
with the wall on U2-U4, hold no mass outside it); KL(q || p) = log Z_quad - ELBO. Figures
(target | fitted flows, one row per target) go to
``<out>/<target>.png`` and ``<out>/figure3.png``; out/ is ignored by git.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from nfzoo import kinds, plots, presets, targets


def main() -> None:
    defaults = presets.reverse_kl("planar", "u1")  # the protocol's defaults
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=defaults.training["steps"])
    parser.add_argument("--archs", nargs="*", default=["planar", "sylvester-orthogonal"])
    parser.add_argument("--targets", nargs="*", default=["u1", "u2", "u3", "u4"])
    parser.add_argument(
        "--anneal-fraction",
        type=float,
        default=defaults.training["anneal_fraction"],
        help="share of the steps over which beta is annealed to 1",
    )
    parser.add_argument("--out", default="out/vi")
    args = parser.parse_args()

    t = defaults.training
    print(
        f"reverse KL, {args.steps} steps x {t['num_samples']} samples, Adam "
        f"{t['learning_rate']:g}, seed {t['seed']}, XLA, beta annealed over "
        f"{args.anneal_fraction:g} of the steps"
    )
    print(
        "| target | flow | -ELBO | log Z (IS) +- se | log Z (ref) | KL(q\\|\\|p) | ESS | time (s) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    kind = kinds.KINDS.get("reverse-kl")
    rows = []
    for name in args.targets:
        target = targets.get(name)
        fitted = {}
        for arch in args.archs:
            preset = presets.reverse_kl(
                arch, name, steps=args.steps, anneal_fraction=args.anneal_fraction
            )
            trained = kind.train(preset, verbose=0)
            m = trained.metrics
            print(
                f"| {name} | {arch} | {-m['elbo']:.3f} | {m['log_z_is']:.3f} +- "
                f"{m['log_z_is_se']:.3f} | {m['log_z_reference']:.3f} | {m['kl_nats']:.3f} | "
                f"{m['ess_fraction']:.3f} | {trained.run['wall_time_seconds']:.0f} |",
                flush=True,
            )
            fitted[arch] = trained.model
        plots.plot_fits([(target, fitted)], os.path.join(args.out, f"{name}.png"))
        rows.append((target, fitted))
    path = plots.plot_fits(rows, os.path.join(args.out, "figure3.png"))
    print(f"figures: {path} and one per target in {args.out}/")


if __name__ == "__main__":
    main()
