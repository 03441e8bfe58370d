"""glow-throughput: training steps/s (batch 64, Adam at 1e-3, negative log-likelihood) of Glow
on sklearn's digits as 8x8x1 images (``nfzoo.data.digits_images``, the 1000 training images,
counts 0..16 dequantized once with + U[0, 1), so data in [0, 17]^64), in one fixed order, for
  - nfzoo: ``nfzoo.build("glow", (8, 8, 1), num_scales=2, layers_per_scale=8,
    hidden_channels=64, num_levels=17)`` (logit pre-processing included) trained by Keras
    ``fit`` as in train-throughput, with ``compile(learning_rate=1e-3)`` (XLA) and, as
    ``nfzoo-graph``, with ``jit_compile=False``;
  - TFP stock: ``tfb.Glow(output_shape=(8, 8, 1), num_glow_blocks=2, num_steps_per_block=8,
    coupling_bijector_fn=partial(tfb.GlowDefaultNetwork, num_hidden=64),
    exit_bijector_fn=tfb.GlowDefaultExitNetwork)`` (its helpers are tf_keras networks, used as
    TFP ships them), chained under nfzoo's ``Logit(17)`` as a TFP bijector, so both losses are
    nats per image of the same dequantized data; base ``tfd.Sample(tfd.Normal(0, 1), [64])``;
    trained as in train-throughput (tf.function step, tf_keras Adam, graph and XLA).
Both initialise their ActNorms from the first batch before the first block. Reported too:
trainable parameters, and each system's NLL on the 350 validation images (dequantized once)
after its (1 + repeats) x steps steps, which only shows that the losses are comparable.
"""

from __future__ import annotations

import functools

import numpy as np

import nfzoo

from . import tables
from .peers import GLOW_BATCH, GLOW_NFZOO, GLOW_TFP, TRAIN_LR, make_glow_trainer
from .timing import interleaved, rate_stats

COMMAND = "glow-throughput"
HELP = "Glow training steps/s vs TFP's stock Glow"
THREADS = True
GLOW_SYSTEMS = ("nfzoo", "nfzoo-graph", "tfp-graph", "tfp-xla")


def add_arguments(p) -> None:
    p.add_argument("--steps", type=int, default=20, help="training steps per timed block")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--systems", nargs="+", default=list(GLOW_SYSTEMS), choices=GLOW_SYSTEMS)


def digits_dequantized(split: int = 0, seed: int = 0) -> np.ndarray:
    """One split of ``nfzoo.data.digits_images(seed)`` (0: train, 1: validation), counts
    0..16, dequantized once: + U[0, 1) (``nfzoo.data.dequantize``), so in [0, 17]^64."""
    return nfzoo.data.dequantize(nfzoo.data.digits_images(seed)[split], seed + split)


def glow_throughput(steps: int, repeats: int, systems=GLOW_SYSTEMS) -> list[dict]:
    """Training steps/s of nfzoo's Glow and TFP's on dequantized digits (batch 64), and, as a
    check that the losses are comparable, each one's NLL on the validation split after its
    (1 + repeats) x steps steps (the same batches in the same order for all)."""
    x, valid = digits_dequantized(0), digits_dequantized(1)
    makers = {s: functools.partial(make_glow_trainer, s, x) for s in systems}
    results = interleaved(makers, steps, repeats, "glow")
    rows = []
    for s in systems:
        row = {"system": s, "steps_per_block": steps, "batch": GLOW_BATCH}
        if "error" in results[s]:
            row["error"] = results[s]["error"]
            rows.append(row)
            continue
        runner = results[s]["runner"]
        row.update(rate_stats(steps, results[s], "steps_per_s"))
        row["trainable_params"] = int(sum(np.prod(v.shape) for v in runner.variables))
        row["steps_trained"] = steps * (1 + repeats)
        row["valid_nll"] = float(-np.mean(runner.log_prob(valid)))
        if s.startswith("nfzoo"):
            row["fit_call_s"] = runner.fit_call_s
        print(
            f"glow {s}: {row['median_steps_per_s']:.1f} steps/s, compile "
            f"{row['compile_s']:.1f} s, {row['trainable_params']} parameters, validation NLL "
            f"{row['valid_nll']:.1f} nats"
        )
        rows.append(row)
    return rows


def glow_table(rows: list[dict]) -> str:
    systems = [r["system"] for r in rows]
    by = {r["system"]: r for r in rows}
    names = [tables.NAMES[s] for s in systems]
    cells = [tables.cell(by[s], "steps_per_s") for s in systems]
    ratio = tables.ratio_cell(by, systems, "steps_per_s")
    speed = tables.markdown(
        ["flow", "batch", *names, "nfzoo / fastest peer"],
        [["glow 8x8x1", GLOW_BATCH, *cells, ratio]],
    )
    detail = []
    for s in systems:
        r = by[s]
        if "error" in r:
            detail.append([tables.NAMES[s], "-", "-", f"failed: {r['error'][:120]}"])
            continue
        nll = f"{r['valid_nll']:.1f} (after {r['steps_trained']} steps)"
        detail.append([tables.NAMES[s], f"{r['compile_s']:.1f}", f"{r['trainable_params']:,}", nll])
    header = [
        "system",
        "compile / first-block overhead, s",
        "trainable parameters",
        "validation NLL after training, nats per image",
    ]
    return speed + "\n\n" + tables.markdown(header, detail)


def run(args, meta: dict) -> int:
    rows = glow_throughput(args.steps, args.repeats, args.systems)
    meta.update(
        batch=GLOW_BATCH,
        learning_rate=TRAIN_LR,
        nfzoo_model=GLOW_NFZOO,
        tfp_model=GLOW_TFP,
        data="nfzoo.data.digits_images()[0] + U[0, 1) (one fixed draw), 1000 images",
        rows=rows,
    )
    title = (
        f"Glow (8x8x1 digits) training steps/s (batch {GLOW_BATCH}, Adam 1e-3, NLL): "
        f"median (min-max) of {args.repeats} repeats of {args.steps} steps; threads "
        f"{meta['threads']}\n\nnfzoo: `{GLOW_NFZOO}`\n\nTFP: `{GLOW_TFP}`"
    )
    tables.write(args.out, "glow_throughput", meta, glow_table(rows), title)
    return 0
