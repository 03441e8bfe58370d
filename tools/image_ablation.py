"""Glow's ablation on sklearn's 8x8 digits, at equal budget: channel mixing (reverse /
shuffle / plain 1x1 conv / LU / QR) x coupling (additive / affine), with multi-scale RealNVP
beside them. Prints a Markdown table of test and validation bits/dim and training steps/s, and
writes it with the raw figures as JSON.

    .venv/bin/python tools/image_ablation.py [--steps 1000] [--out out/ablation]

Every run: 2 levels x 8 steps (Glow) of 64 hidden channels, logit pre-processing on 17 levels,
Adam 1e-3, batch 64, seed 0, fresh uniform dequantization every batch, validation bits/dim
every 100 steps with the best weights kept (early stopping, patience 5). Bits/dim are
averaged over 4 fixed dequantizations of each split (``nfzoo.data.bits_per_dim``).
Steps/s is the median over epochs after the first (which holds the XLA compile) of 99
training steps' wall time, excluding validation.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

import nfzoo
from nfzoo.data import DIGITS_LEVELS, bits_per_dim, digits_images
from nfzoo.files import write_file_atomically
from nfzoo.training import train_flow

#: (label, architecture, options)
VARIANTS = [
    *(
        (f"glow {perm} {coupling}", "glow", {"permutation": perm, "coupling": coupling})
        for coupling in ("additive", "affine")
        for perm in ("reverse", "shuffle", "1x1")
    ),
    ("glow lu affine", "glow", {"permutation": "lu", "coupling": "affine"}),
    ("glow qr affine", "glow", {"permutation": "qr", "coupling": "affine"}),
    ("realnvp-image affine", "realnvp-image", {"coupling": "affine"}),
]

COMMON = {"hidden_channels": 64, "num_levels": DIGITS_LEVELS}


class StepTimer(keras.callbacks.Callback):
    """Steps/s of each epoch, from the first batch-end call to the last. Keras calls
    ``on_train_batch_end`` once per ``steps_per_execution`` steps with the index of the last
    step run, so steps are counted by index, not by call."""

    def __init__(self):
        super().__init__()
        self.rates: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._first = self._last = None

    def on_train_batch_end(self, batch, logs=None):
        mark = (batch, time.perf_counter())
        if self._first is None:
            self._first = mark
        else:
            self._last = mark

    def on_epoch_end(self, epoch, logs=None):
        if self._last is not None:
            (b0, t0), (b1, t1) = self._first, self._last
            self.rates.append((b1 - b0) / (t1 - t0))


def run(label: str, arch: str, options: dict, steps: int, seed: int = 0) -> dict:
    train, val, test = digits_images()
    timer = StepTimer()
    result = train_flow(
        lambda: nfzoo.build(arch, (8, 8, 1), seed=seed, **COMMON, **options),
        train,
        steps=steps,
        batch_size=64,
        learning_rate=1e-3,
        seed=seed,
        validation=val,
        patience=5,
        dequantize=True,
        callbacks=[timer],
        verbose=0,
    )
    flow = result.flow
    return {
        "label": label,
        "architecture": arch,
        "options": {**COMMON, **options},
        "steps_run": result.steps,
        "test_bits_per_dim": bits_per_dim(flow, test, DIGITS_LEVELS, draws=4, seed=100),
        "val_bits_per_dim": bits_per_dim(flow, val, DIGITS_LEVELS, draws=4, seed=200),
        "train_bits_per_dim": bits_per_dim(flow, train, DIGITS_LEVELS, draws=1, seed=300),
        "steps_per_second": float(np.median(timer.rates[1:] or timer.rates)),
        "parameters": int(flow.count_params()),
        "seconds": round(result.seconds, 1),
    }


def table(rows: list[dict], steps: int) -> str:
    lines = [
        f"| model | test bits/dim | validation | train | steps run (of {steps}) | steps/s | "
        "parameters |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['test_bits_per_dim']:.3f} | {r['val_bits_per_dim']:.3f} | "
            f"{r['train_bits_per_dim']:.3f} | {r['steps_run']} | {r['steps_per_second']:.1f} | "
            f"{r['parameters']:,} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--only", nargs="*", help="labels to run (default: all)")
    parser.add_argument("--out", default="out/ablation")
    args = parser.parse_args()
    rows = []
    for label, arch, options in VARIANTS:
        if args.only and label not in args.only:
            continue
        rows.append(run(label, arch, options, args.steps))
        print(json.dumps(rows[-1]), flush=True)
    text = table(rows, args.steps)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_file_atomically(out / "ablation.json", lambda p: p.write_text(json.dumps(rows, indent=2)))
    write_file_atomically(out / "ablation.md", lambda p: p.write_text(text + "\n"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
