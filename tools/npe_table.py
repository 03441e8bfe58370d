"""C2ST of neural posterior estimation per task and simulation budget (Lueckmann et al. 2021,
arXiv:2101.04653, figure 2's protocol, single round).

    .venv/bin/python tools/npe_table.py [--tasks two-moons slcp] [--archs nsf maf]
        [--budgets 1000 10000 100000] [--observations 1 2 ... 10] [--samples 10000] [--seed 0]

For every task, architecture and budget: ``nfzoo.npe.train_npe(task, budget, arch, seed)``
(simulations, ``flow.fit(theta, x)`` under XLA with 10% validation and early stopping, sbi's
defaults), then for each observation ``--samples`` posterior samples (inside the prior's
support) against as many reference samples (cached under out/npe/reference), scored by C2ST.
Prints and writes a Markdown table of C2ST mean (min-max) over the observations, with the
epochs and seconds of training, to ``--out`` (default out/npe/), and the per-observation
figures as JSON; each row is written as soon as it is done.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from nfzoo import npe

ROOT = Path(__file__).resolve().parents[1]


def table(rows: list[dict]) -> str:
    lines = [
        "| task | flow | simulations | C2ST mean (min-max) | observations | epochs | "
        "training s | posterior acceptance (min) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        obs = r["observations"]
        lines.append(
            f"| {r['task']} | {r['arch']} | {r['training']['num_simulations']:,} | "
            f"{r['c2st_mean']:.3f} ({r['c2st_min']:.3f}-{r['c2st_max']:.3f}) | {len(obs)} | "
            f"{r['training']['epochs']} | {r['training']['seconds']:.0f} | "
            f"{min(o['acceptance'] for o in obs):.3f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=npe.list_tasks(), choices=npe.list_tasks())
    parser.add_argument("--archs", nargs="+", default=["nsf", "maf"])
    parser.add_argument("--budgets", nargs="+", type=int, default=list(npe.BUDGETS))
    parser.add_argument("--observations", nargs="+", type=int, default=list(range(1, 11)))
    parser.add_argument("--samples", type=int, default=10_000, help="posterior and reference")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "npe")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python tools/npe_table.py " + " ".join(sys.argv[1:])
    rows = []
    for task in args.tasks:
        for budget in args.budgets:
            for arch in args.archs:
                start = time.perf_counter()
                _, report = npe.train_and_evaluate(
                    task,
                    budget,
                    arch,
                    args.seed,
                    num_samples=args.samples,
                    observations=args.observations,
                    cache_dir=args.out / "reference",
                )
                rows.append({"arch": arch, **report})
                print(
                    f"{task} {arch} {budget}: C2ST {report['c2st_mean']:.3f} "
                    f"({report['c2st_min']:.3f}-{report['c2st_max']:.3f}), "
                    f"{time.perf_counter() - start:.0f} s",
                    flush=True,
                )
                title = (
                    f"NPE C2ST (0.5 best) over observations {args.observations}, "
                    f"{args.samples} samples each; seed {args.seed}\n\n`{command}`"
                )
                (args.out / "table.md").write_text(title + "\n\n" + table(rows) + "\n")
                meta = {"command": command, "args": vars(args) | {"out": str(args.out)}}
                (args.out / "table.json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    print("\n" + table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
