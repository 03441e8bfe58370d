"""Two-moons held-out NLL for every builder at one fixed budget, as a Markdown table.

    .venv/bin/python tools/moons_table.py [--epochs 100] [--archs maf realnvp ...]

Data: nfzoo.data.make_moons(3000, seed=0), split 80/10/10; batch 256, Adam 2e-3, seed 0.
Builders without an inverse (Sylvester) cannot be fitted by likelihood: listed as n/a.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

import nfzoo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--archs", nargs="*", default=nfzoo.list_architectures(event_rank=1))
    args = parser.parse_args()

    train, _, test = nfzoo.data.split(nfzoo.data.make_moons(3000, seed=0))
    steps = args.epochs * int(np.ceil(len(train) / 256))
    gaussian = nfzoo.data.gaussian_baseline_nll(train, test)
    # No wall-clock column: speed is claimed only from tools/bench.py, as ratios in one run.
    print(f"| architecture | held-out NLL (nats), {steps} steps | trainable parameters |")
    print("|---|---|---|")
    print(f"| best single Gaussian | {gaussian:.3f} | 5 |")
    for arch in args.archs:
        flow = nfzoo.build(arch, 2, seed=0)
        params = sum(int(np.prod(w.shape)) for w in flow.trainable_weights)
        if not flow.has_inverse:
            print(f"| {arch} | n/a (no inverse: fitted by reverse KL) | {params} |")
            continue
        flow.compile(learning_rate=2e-3)
        flow.fit(train, batch_size=256, epochs=args.epochs, verbose=0)
        nll = float(flow.evaluate(test, batch_size=300, verbose=0))
        print(f"| {arch} | {nll:.3f} | {params} |", flush=True)


if __name__ == "__main__":
    main()
