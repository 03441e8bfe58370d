"""Benchmarks: every speed figure nfzoo states comes from here, as medians of repeated,
interleaved measurements taken in one run (these machines are shared and noisy).

    .venv/bin/python tools/bench.py export-latency [--flows maf-moons realnvp-moons] [--repeats 7]
    .venv/bin/python tools/bench.py train-throughput [--dims 8 64] [--steps 20] [--repeats 5]
    .venv/bin/python tools/bench.py matmul-limit [--dims 8 64] [--steps 20] [--repeats 5]
    .venv/bin/python tools/bench.py dot-orientation [--dims 8 64] [--calls 20] [--repeats 7]
    .venv/bin/python tools/bench.py density-throughput [--dims 8 64] [--repeats 5]
    .venv/bin/python tools/bench.py density-quality [--archs maf nsf nsf-ar] [--dims 2 8]
    .venv/bin/python tools/bench.py glow-throughput [--steps 20] [--repeats 5] [--threads 1]
    .venv/bin/python tools/bench.py peak-memory --system nfzoo --arch maf --dim 8
    .venv/bin/python tools/bench.py npe [--tasks two-moons slcp] [--budget 10000]  (bench_npe.py)

One timing mechanism (``interleaved``) serves every speed figure: each system is a runner with
``block(n) -> seconds``; its first block (tracing, XLA compilation, variable creation) is timed
apart, ``compile_s`` = first block - n / median rate; then one untimed round of one block per
system warms every system up; then every repeat times one block per system, in rotating
order; a system that fails gets its error in the table. Figures are the median (min-max) over
repeats. Only ratios within one run count.

export-latency: per-call latency of the exported ``log_prob`` and ``generate`` endpoints at
batch 1 and 1024, in TensorFlow (the SavedModel signature, as TF Serving runs it),
onnxruntime and LiteRT. Each flow is exported afresh (with its parity check) into a temporary
folder; a block is 200 calls (batch 1) or 20 calls (batch 1024).

train-throughput: training steps/s (batch 512, Adam at 1e-3, negative log-likelihood) of MAF
and RealNVP (``--archs``: also nsf and nsf-ar, against zuko's NSF as in density-quality; TFP
has no stock spline flow), 5 layers, hidden [256, 256], at every D of ``--dims``, on one fixed
float32 sample of a Gaussian mixture, for
  - nfzoo: ``nfzoo.build(arch, D, num_layers=5, hidden_units=[256, 256])`` trained by Keras
    ``fit`` with the default ``flow.compile()`` (XLA, 10 steps per call of the compiled
    function) on a repeated tf.data pipeline; every
    block is one ``fit(epochs=1, steps_per_epoch=steps)`` call, timed from the epoch's start to
    its end by a callback (the time of the whole ``fit`` call is kept in the JSON too);
    ``nfzoo-graph`` (not in the default set) is the same with ``compile(jit_compile=False)``;
  - TFP stock: ``tfb.MaskedAutoregressiveFlow(tfb.AutoregressiveNetwork(params=2, ...,
    activation="relu"))`` and ``tfb.RealNVP(D // 2, shift_and_log_scale_fn=
    tfb.real_nvp_default_template(...))`` (ReLU too), 5 of them with ``tfb.Permute`` reversals
    between, in a ``tfd.TransformedDistribution``, trained by a ``tf.function`` step with
    tf_keras' Adam, once in graph mode and once with ``jit_compile=True``, fed by the same
    tf.data pipeline;
  - zuko (PyTorch, CPU): ``zuko.flows.MAF(D, transforms=5, hidden_features=[256, 256])`` and
    ``zuko.flows.RealNVP`` (zuko's NICE with affine couplings, alternating checkered masks),
    a plain loop with ``torch.optim.Adam`` over the same batches; torch is set to as many
    intra- and inter-op threads as TF uses by default (the cores this process may run on);
    ``--threads N`` gives both N intra- and N inter-op threads.
  Interleaved with them, the machine's limit (see matmul-limit), so that each system's rate is
  also given as achieved matmul FLOP/s (``step_flops`` of its own kernels x steps/s) over that
  limit. With ``--memory`` (default), each system then trains again alone in a subprocess
  (``peak-memory``: first block + one block) whose peak RSS is reported with the increment
  over the same interpreter's RSS after its imports (the baseline).

matmul-limit: the float32 matmul rate (FLOP/s) TensorFlow reaches on exactly the dense matmuls
of one training step of the train-throughput models (nfzoo's kernel shapes at batch 512: per
kernel the forward product and the two backward products, see ``_MatmulRunner``), compiled
with XLA and as a TF graph; the limit is the faster of the two.

dot-orientation: under XLA, the time of one kernel gradient dW = X^T dY (X [512, n_in]) of a
dense product Y = X W, for every kernel shape of the train-throughput models, computed by
XLA's own gradient of ``tf.matmul`` and by ``nfzoo.ops.matmul``'s (which computes (dY^T X)^T
where n_in > n_out); 20 gradients per compiled call, each followed by a tiny update of X and W
so that none is dead code or loop-invariant.

density-throughput: ``log_prob`` throughput (points/s at batch 10,000) and sampling throughput
(one call drawing 10,000 samples) of the same MAF and RealNVP models, untrained, in nfzoo
(``flow.log_prob`` / ``flow.sample`` in ``tf.function(jit_compile=True)``), TFP stock
(``dist.log_prob`` / ``dist.sample`` in ``tf.function``, graph and XLA) and zuko
(``flow().log_prob`` / ``flow().sample`` under ``torch.inference_mode``). MAF sampling is the
sequential direction (D conditioner passes per layer) in all three.

density-quality: KL(p || q) = E_p[log p - log q] of each ``--archs`` flow (5 layers, hidden
[64, 64]) trained at equal budget (same steps, the same batches of 512 fresh samples, Adam at
1e-3) in nfzoo, TFP (XLA step; MAF only: TFP has no stock spline flow) and zuko (``maf``:
``zuko.flows.MAF``; ``nsf-ar``: ``zuko.flows.NSF``, autoregressive; ``nsf``: ``zuko.flows.NSF``
with ``passes=2``, a coupling; 8 bins on [-5, 5] in both libraries), on D-dimensional
Gaussian mixtures (``--dims``) whose log density is known exactly (``GaussianMixture``);
estimated on 20,000 held-out samples of p, with its standard error; over several seeds the
mean +- standard error across seeds, and the paired difference to zuko's flow of the same
kind, seed by seed.

glow-throughput: training steps/s (batch 64, Adam at 1e-3, negative log-likelihood) of Glow
on sklearn's digits as 8x8x1 images (``nfzoo.data.digits_images``, the 1000 training images,
counts 0..16 dequantized once with + U[0, 1), so data in [0, 17]^64), in one fixed order, for
  - nfzoo: ``nfzoo.build("glow", (8, 8, 1), num_scales=2, layers_per_scale=8, hidden_channels=64,
    num_levels=17)`` (logit pre-processing included) trained by Keras ``fit`` as in
    train-throughput, with ``compile(learning_rate=1e-3)`` (XLA) and, as ``nfzoo-graph``,
    with ``jit_compile=False``;
  - TFP stock: ``tfb.Glow(output_shape=(8, 8, 1), num_glow_blocks=2, num_steps_per_block=8,
    coupling_bijector_fn=partial(tfb.GlowDefaultNetwork, num_hidden=64),
    exit_bijector_fn=tfb.GlowDefaultExitNetwork)`` (its helpers are tf_keras networks, used as
    TFP ships them), chained under nfzoo's ``Logit(17)`` as a TFP bijector, so both losses are
    nats per image of the same dequantized data; base ``tfd.Sample(tfd.Normal(0, 1), [64])``;
    trained as in train-throughput (tf.function step, tf_keras Adam, graph and XLA).
  Both initialise their ActNorms from the first batch before the first block. Reported too:
  trainable parameters, and each system's NLL on the 350 validation images (dequantized once)
  after its (1 + repeats) x steps steps, which only shows that the losses are comparable.

peak-memory: one system's training alone in this process; prints one JSON line with VmHWM
after the imports (all peers imported, so every system's baseline is the same interpreter) and
at the end. ``--system none`` gives the baseline alone.

Every subcommand writes JSON and a Markdown table to ``--out`` (default out/bench/).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

import nfzoo
from nfzoo.exporting.formats import OnnxRunner, SavedModelRunner, TFLiteRunner

ROOT = Path(__file__).resolve().parents[1]
RUNTIMES = ("tensorflow", "onnxruntime", "litert")

# ---- the one timing mechanism -----------------------------------------------------------


def interleaved(
    makers: dict[str, Callable[[], object]], work: int, repeats: int, label: str
) -> dict[str, dict]:
    """Times every runner ``makers[name]()`` (an object with ``block(work) -> seconds``): its
    first block apart, then ``repeats`` rounds of one block each, in rotating order. Returns,
    per name, ``{"runner", "first_s", "times_s"}`` or ``{"error"}`` if building or the first
    block failed."""
    runners, first, errors = {}, {}, {}
    times: dict[str, list[float]] = {name: [] for name in makers}
    for name, make in makers.items():
        try:
            runners[name] = make()
            first[name] = runners[name].block(work)
        except Exception as e:  # recorded in the table instead of a number
            errors[name] = _error(e)
            runners.pop(name, None)
            print(f"{label} {name} failed: {errors[name]}")
    live = [name for name in makers if name in runners]
    # one untimed round first: a graph system's second block can still pay one-off costs
    # (seen as a first timed block 5-7 s slower than the rest), which would skew the spread
    for name in live:
        runners[name].block(work)
    for rep in range(repeats):
        order = live[rep % len(live) :] + live[: rep % len(live)] if live else []
        for name in order:
            times[name].append(runners[name].block(work))
    return {
        name: (
            {"error": errors[name]}
            if name in errors
            else {"runner": runners[name], "first_s": first[name], "times_s": times[name]}
        )
        for name in makers
    }


def rate_stats(work: float, result: dict, unit: str) -> dict:
    """Median, min and max of ``work / seconds`` over the repeats of one ``interleaved``
    result, and the first-block overhead ``compile_s`` = first block - work / median rate."""
    in_order = [work / t for t in result["times_s"]]
    rates = sorted(in_order)
    med = statistics.median(rates)
    return {
        f"{unit}_by_round": in_order,
        f"median_{unit}": med,
        f"min_{unit}": rates[0],
        f"max_{unit}": rates[-1],
        "repeats": len(rates),
        "first_block_s": result["first_s"],
        "compile_s": max(0.0, result["first_s"] - work / med),
    }


def _error(e: BaseException) -> str:
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text[:300]


def _cell(row: dict, unit: str, scale: float = 1.0, fmt: str = ".1f") -> str:
    """ "median (min-max)" of a row's rate, or its error."""
    if "error" in row:
        return f"failed: {row['error'][:120]}"
    med, lo, hi = (row[f"{k}_{unit}"] / scale for k in ("median", "min", "max"))
    return f"{med:{fmt}} ({lo:{fmt}}-{hi:{fmt}})"


def _ratio_cell(by: dict[str, dict], systems: list[str], unit: str) -> str:
    """nfzoo's median over the fastest peer's (peers: systems not named nfzoo*), then the
    median (min-max) of the same ratio taken round by round: both systems ran one block in
    every round of ``interleaved``, seconds apart, so the per-round ratio is the one
    least moved by the machine's load drifting during the run."""
    peers = [s for s in systems if not s.startswith("nfzoo") and "error" not in by[s]]
    if "nfzoo" not in by or "error" in by["nfzoo"] or not peers:
        return "-"
    best = max(peers, key=lambda s: by[s][f"median_{unit}"])
    ratio = by["nfzoo"][f"median_{unit}"] / by[best][f"median_{unit}"]
    rounds = sorted(
        a / b for a, b in zip(by["nfzoo"][f"{unit}_by_round"], by[best][f"{unit}_by_round"])
    )
    return (
        f"{ratio:.2f} (vs {NAMES[best]}; by round {statistics.median(rounds):.2f}, "
        f"{rounds[0]:.2f}-{rounds[-1]:.2f})"
    )


NAMES = {
    "nfzoo": "nfzoo (fit, XLA)",
    "nfzoo-graph": "nfzoo (fit, graph)",
    "tfp-graph": "TFP (tf.function)",
    "tfp-xla": "TFP (XLA)",
    "zuko": "zuko (torch)",
    "matmul-xla": "TF matmuls (XLA)",
    "matmul-graph": "TF matmuls (graph)",
}

# ---- export-latency ---------------------------------------------------------------------


class _EndpointRunner:
    """One exported endpoint in one runtime; a block is ``calls`` back-to-back calls."""

    def __init__(self, runner, endpoint: str, inputs: dict):
        self.runner, self.endpoint, self.inputs = runner, endpoint, inputs

    def block(self, calls: int) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            self.runner(self.endpoint, self.inputs)
        return time.perf_counter() - start


def export_latency(flows: list[str], repeats: int, batches=(1, 1024)) -> list[dict]:
    rows = []
    for name in flows:
        flow = nfzoo.load(name)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / name
            nfzoo.export(flow, folder)
            runners = {
                "tensorflow": SavedModelRunner(folder / "saved_model"),
                "onnxruntime": OnnxRunner(folder),
                "litert": TFLiteRunner(folder / "model.tflite"),
            }
            rng = np.random.RandomState(0)
            for endpoint, arg in (("log_prob", "x"), ("generate", "z")):
                for batch in batches:
                    inputs = {arg: rng.randn(batch, flow.event_size).astype(np.float32)}
                    calls = 200 if batch == 1 else 20
                    makers = {
                        r: functools.partial(_EndpointRunner, runners[r], endpoint, inputs)
                        for r in RUNTIMES
                    }
                    label = f"{name} {endpoint} batch {batch}"
                    results = interleaved(makers, calls, repeats, label)
                    for r in RUNTIMES:
                        t = sorted(s / calls for s in results[r]["times_s"])
                        rows.append(
                            {
                                "flow": name,
                                "endpoint": endpoint,
                                "batch": batch,
                                "runtime": r,
                                "median_ms": 1e3 * statistics.median(t),
                                "min_ms": 1e3 * t[0],
                                "max_ms": 1e3 * t[-1],
                                "repeats": repeats,
                                "calls_per_repeat": calls,
                            }
                        )
                        print(f"{label} {r}: {rows[-1]['median_ms']:.3f} ms")
    return rows


def latency_table(rows: list[dict]) -> str:
    lines = [
        "| flow | endpoint | batch | TensorFlow (SavedModel) | onnxruntime | LiteRT |",
        "|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["flow"], r["endpoint"], r["batch"]) for r in rows}, key=str)
    for flow, endpoint, batch in keys:
        cells = []
        for runtime in RUNTIMES:
            (r,) = [
                r
                for r in rows
                if (r["flow"], r["endpoint"], r["batch"], r["runtime"])
                == (flow, endpoint, batch, runtime)
            ]
            cells.append(f"{r['median_ms']:.3f} ({r['min_ms']:.3f}-{r['max_ms']:.3f})")
        lines.append(f"| {flow} | {endpoint} | {batch} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---- models of train-throughput, density-throughput and density-quality -----------------

TRAIN_SYSTEMS = ("nfzoo", "tfp-graph", "tfp-xla", "zuko")
ALL_SYSTEMS = ("nfzoo", "nfzoo-graph", "tfp-graph", "tfp-xla", "zuko")
LIMIT_SYSTEMS = ("matmul-xla", "matmul-graph")
TRAIN_BATCH = 512
TRAIN_LAYERS = 5
TRAIN_HIDDEN = [256, 256]
TRAIN_LR = 1e-3


def mixture_sample(dim: int, n: int = 16 * TRAIN_BATCH, components: int = 8, seed: int = 0):
    """A fixed float32 sample of a D-dimensional Gaussian mixture, standardised."""
    rng = np.random.RandomState(seed)
    means = 3.0 * rng.randn(components, dim)
    scales = rng.uniform(0.3, 1.5, size=(components, dim))
    k = rng.randint(components, size=n)
    x = means[k] + scales[k] * rng.randn(n, dim)
    x = (x - x.mean(0)) / x.std(0)
    return x.astype(np.float32)


def step_flops(kernels: list[tuple[int, int]], batch: int = TRAIN_BATCH) -> float:
    """FLOPs of the dense matmuls of one training step, counted from the kernel shapes:

        forward = sum over kernels W [n_in, n_out] of 2 * batch * n_in * n_out
        step    = 3 * forward

    since the backward pass does two products of the forward one's size per kernel
    (dX = dY W^T and dW = X^T dY). MADE masks do not reduce it: the masked kernel W * M is
    still multiplied densely. Not counted: biases, activations, log-dets, the optimizer update
    and the mask products W * M (all O(batch * width) or O(parameters))."""
    return 3.0 * sum(2.0 * batch * n_in * n_out for n_in, n_out in kernels)


def _tf_dataset(x, batch: int = TRAIN_BATCH):
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(x).batch(batch, drop_remainder=True)
    return ds.repeat().prefetch(tf.data.AUTOTUNE)


def _nfzoo_flow(arch: str, dim: int, hidden=TRAIN_HIDDEN, seed: int = 0):
    return nfzoo.build(arch, dim, num_layers=TRAIN_LAYERS, hidden_units=hidden, seed=seed)


def _nfzoo_kernels(flow) -> list[tuple[int, int]]:
    return [tuple(v.shape) for v in flow.trainable_variables if len(v.shape) == 2]


def _tfp_flow(arch: str, dim: int, hidden=TRAIN_HIDDEN, seed: int = 0):
    """TFP's stock bijectors in a TransformedDistribution; returns (dist, trainable vars)."""
    import tensorflow as tf
    import tensorflow_probability as tfp

    tfb, tfd = tfp.bijectors, tfp.distributions
    tf.random.set_seed(seed)
    bijectors, nets = [], []
    for i in range(TRAIN_LAYERS):
        if i:
            bijectors.append(tfb.Permute(list(reversed(range(dim)))))
        if arch == "maf":
            # ReLU as nfzoo's and zuko's MADE (TFP's default is no activation: a linear MADE)
            net = tfb.AutoregressiveNetwork(params=2, hidden_units=hidden, activation="relu")
            bijectors.append(tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=net))
        else:
            net = tfb.real_nvp_default_template(hidden_layers=hidden)
            bijectors.append(tfb.RealNVP(num_masked=dim // 2, shift_and_log_scale_fn=net))
        nets.append(net)
    dist = tfd.TransformedDistribution(
        tfd.MultivariateNormalDiag(loc=tf.zeros(dim)), tfb.Chain(bijectors[::-1])
    )
    dist.log_prob(np.zeros((2, dim), np.float32))  # creates the variables, eagerly
    return dist, [v for net in nets for v in net.trainable_variables]


#: the zuko flow of each nfzoo architecture: MAF, RealNVP (affine couplings), and NSF, zuko's
#: neural spline flow (8 bins on [-5, 5] as nfzoo's defaults), autoregressive (``nsf-ar``) or
#: with two passes, i.e. a coupling (``nsf``)
ZUKO_FLOWS = {
    "maf": ("MAF", {}),
    "realnvp": ("RealNVP", {}),
    "nsf": ("NSF", {"bins": 8, "passes": 2}),
    "nsf-ar": ("NSF", {"bins": 8}),
}
#: architectures TFP ships a stock flow of
TFP_ARCHS = ("maf", "realnvp")


def _zuko_flow(arch: str, dim: int, hidden=TRAIN_HIDDEN, seed: int = 0):
    import torch
    import zuko

    torch.manual_seed(seed)
    name, options = ZUKO_FLOWS[arch]
    cls = getattr(zuko.flows, name)
    return cls(features=dim, transforms=TRAIN_LAYERS, hidden_features=hidden, **options)


def supports(system: str, arch: str) -> bool:
    """Whether ``system`` has a flow of ``arch`` (TFP has no stock spline flow)."""
    return not system.startswith("tfp") or arch in TFP_ARCHS


def _zuko_kernels(flow) -> list[tuple[int, int]]:
    return [tuple(p.shape[::-1]) for p in flow.parameters() if p.ndim == 2]


# ---- trainers: block(steps) -> seconds ----


class _NfzooTrainer:
    """nfzoo's flow, trained by ``fit`` (default compile: Adam, XLA; ``jit=False``: graph).
    ``make_flow()``, if given, builds the flow in place of ``_nfzoo_flow(arch, ...)``."""

    def __init__(
        self,
        arch: str,
        x,
        hidden=TRAIN_HIDDEN,
        seed: int = 0,
        jit: bool = True,
        make_flow: Callable[[], object] | None = None,
        batch: int = TRAIN_BATCH,
    ):
        import keras

        keras.utils.set_random_seed(seed)
        self.flow = make_flow() if make_flow else _nfzoo_flow(arch, x.shape[1], hidden, seed)
        self.flow.compile(learning_rate=TRAIN_LR, jit_compile=jit)
        self.kernels = _nfzoo_kernels(self.flow)
        self.variables = self.flow.trainable_variables
        self.ds = _tf_dataset(x, batch)
        self.fit_call_s: list[float] = []
        outer = self

        class EpochTimer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                outer._t0 = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                outer._t1 = time.perf_counter()

        self.timer = EpochTimer()

    def block(self, steps: int) -> float:
        start = time.perf_counter()
        self.flow.fit(self.ds, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[self.timer])
        self.fit_call_s.append(time.perf_counter() - start)
        return self._t1 - self._t0

    def log_prob(self, x) -> np.ndarray:
        return self.flow.log_prob(x.astype(np.float32)).numpy()


class _TfpTrainer:
    """TFP's stock flow (``_tfp_flow``, or ``make_dist() -> (dist, trainable variables)``), a
    tf.function step, tf_keras Adam."""

    def __init__(
        self,
        arch: str,
        x,
        jit: bool,
        hidden=TRAIN_HIDDEN,
        seed: int = 0,
        make_dist: Callable[[], tuple] | None = None,
        batch: int = TRAIN_BATCH,
    ):
        import tensorflow as tf
        import tf_keras

        if make_dist:
            self.dist, self.variables = make_dist()
        else:
            self.dist, self.variables = _tfp_flow(arch, x.shape[1], hidden, seed)
        self.kernels = [tuple(v.shape) for v in self.variables if len(v.shape) == 2]
        self.optimizer = tf_keras.optimizers.Adam(learning_rate=TRAIN_LR)

        @tf.function(jit_compile=jit)
        def step(batch):
            with tf.GradientTape() as tape:
                loss = -tf.reduce_mean(self.dist.log_prob(batch))
            grads = tape.gradient(loss, self.variables)
            self.optimizer.apply_gradients(zip(grads, self.variables))
            return loss

        self.step = step
        self.it = iter(_tf_dataset(x, batch))

    def block(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            loss = self.step(next(self.it))
        loss.numpy()
        return time.perf_counter() - start

    def log_prob(self, x) -> np.ndarray:
        return self.dist.log_prob(x.astype(np.float32)).numpy()


class _ZukoTrainer:
    """zuko's flow, a plain torch loop with torch.optim.Adam over the same batches."""

    def __init__(self, arch: str, x, hidden=TRAIN_HIDDEN, seed: int = 0):
        import torch

        self.flow = _zuko_flow(arch, x.shape[1], hidden, seed)
        self.kernels = _zuko_kernels(self.flow)
        self.optimizer = torch.optim.Adam(self.flow.parameters(), lr=TRAIN_LR)
        n = len(x) // TRAIN_BATCH
        self.batches = torch.from_numpy(x[: n * TRAIN_BATCH]).reshape(n, TRAIN_BATCH, -1)
        self.i = 0

    def block(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            batch = self.batches[self.i % len(self.batches)]
            self.i += 1
            loss = -self.flow().log_prob(batch).mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        loss.item()
        return time.perf_counter() - start

    def log_prob(self, x) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.flow().log_prob(torch.from_numpy(x.astype(np.float32))).numpy()


def _make_trainer(system: str, arch: str, x, hidden=TRAIN_HIDDEN, seed: int = 0):
    if system in ("nfzoo", "nfzoo-graph"):
        return _NfzooTrainer(arch, x, hidden, seed, jit=system == "nfzoo")
    if system in ("tfp-graph", "tfp-xla"):
        return _TfpTrainer(arch, x, system == "tfp-xla", hidden, seed)
    if system == "zuko":
        return _ZukoTrainer(arch, x, hidden, seed)
    raise ValueError(f"unknown system {system!r}")


class _MatmulRunner:
    """The dense matmuls of one training step and nothing else: for every kernel W
    [n_in, n_out] and an input X [batch, n_in], Y = X W, then dX = Y W^T and dW = X^T Y (Y
    standing in for dY), so ``step_flops(kernels, batch)`` FLOPs per step. dX and dW are
    applied to X and W as tiny SGD updates, so that no product is dead code or can be folded
    into a cheaper reduction. ``jit``: compiled by XLA, else a TF graph."""

    def __init__(self, kernels: list[tuple[int, int]], batch: int = TRAIN_BATCH, jit=True):
        import tensorflow as tf

        rng = np.random.RandomState(0)
        self.kernels = kernels
        self.xs = [tf.Variable(rng.randn(batch, i).astype(np.float32)) for i, _ in kernels]
        self.ws = [
            tf.Variable((rng.randn(i, o) / np.sqrt(i)).astype(np.float32)) for i, o in kernels
        ]

        @tf.function(jit_compile=jit)
        def step():
            for x, w in zip(self.xs, self.ws):
                y = tf.matmul(x, w)
                dx = tf.matmul(y, w, transpose_b=True)
                dw = tf.matmul(x, y, transpose_a=True)
                x.assign_sub(1e-7 * dx)
                w.assign_sub(1e-7 * dw)
            return self.ws[0][0, 0]

        self.step = step

    def block(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            out = self.step()
        out.numpy()
        return time.perf_counter() - start


def _limit_makers(arch: str, dim: int) -> dict[str, Callable[[], object]]:
    """The matmul-limit runners for nfzoo's kernel shapes of ``arch`` at ``dim``."""
    kernels = _nfzoo_kernels(_nfzoo_flow(arch, dim))
    return {
        name: functools.partial(_MatmulRunner, kernels, TRAIN_BATCH, name == "matmul-xla")
        for name in LIMIT_SYSTEMS
    }


def _limit_rows(arch: str, dim: int, steps: int, results: dict) -> list[dict]:
    rows = []
    for name in LIMIT_SYSTEMS:
        row = {"arch": arch, "dim": dim, "system": name, "steps_per_block": steps}
        if "error" in results[name]:
            row["error"] = results[name]["error"]
        else:
            kernels = results[name]["runner"].kernels
            flops = step_flops(kernels)
            row.update(rate_stats(steps * flops, results[name], "flop_per_s"))
            row.update(kernels=kernels, flops_per_step=flops)
            print(f"{arch} D={dim} {name}: {row['median_flop_per_s'] / 1e9:.1f} GFLOP/s")
        rows.append(row)
    return rows


def _limit(rows: list[dict]) -> float | None:
    """The limit: the fastest matmul program's median FLOP/s."""
    rates = [r["median_flop_per_s"] for r in rows if "median_flop_per_s" in r]
    return max(rates) if rates else None


def set_threads(threads: int = 0) -> dict:
    """Gives TF and torch the same thread counts: with ``threads`` > 0 that many intra- and
    inter-op threads each; with 0 TF's default (0 = all the cores this process may run on) and
    as many for torch. Must run before TensorFlow executes anything."""
    import tensorflow as tf
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    torch.set_num_threads(threads or cores)
    torch.set_num_interop_threads(threads or cores)
    return {
        "tf_intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "tf_inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        "tf_default_means": f"0 = all {cores} cores",
        "torch_intra_op": torch.get_num_threads(),
        "torch_inter_op": torch.get_num_interop_threads(),
    }


# ---- matmul-limit -----------------------------------------------------------------------


def matmul_limit(archs: list[str], dims: list[int], steps: int, repeats: int) -> list[dict]:
    rows = []
    for dim in dims:
        for arch in archs:
            results = interleaved(_limit_makers(arch, dim), steps, repeats, f"{arch} D={dim}")
            rows += _limit_rows(arch, dim, steps, results)
    return rows


def limit_table(rows: list[dict]) -> str:
    lines = [
        "| kernel shapes of | D | matmuls / step | GFLOP / step | "
        + " | ".join(f"{NAMES[s]}, GFLOP/s" for s in LIMIT_SYSTEMS)
        + " | limit, GFLOP/s |",
        "|---|---|---|---|" + "---|" * (len(LIMIT_SYSTEMS) + 1),
    ]
    for arch, dim in sorted({(r["arch"], r["dim"]) for r in rows}, key=lambda k: (k[1], k[0])):
        by = {r["system"]: r for r in rows if (r["arch"], r["dim"]) == (arch, dim)}
        ok = [r for r in by.values() if "error" not in r]
        kernels = len(ok[0]["kernels"]) * 3 if ok else "-"
        gflop = f"{ok[0]['flops_per_step'] / 1e9:.3f}" if ok else "-"
        limit = _limit(list(by.values()))
        cells = [_cell(by[s], "flop_per_s", 1e9) for s in LIMIT_SYSTEMS]
        lim = f"{limit / 1e9:.1f}" if limit else "-"
        lines.append(
            f"| {arch} (nfzoo) | {dim} | {kernels} | {gflop} | " + " | ".join(cells) + f" | {lim} |"
        )
    return "\n".join(lines)


# ---- dot-orientation --------------------------------------------------------------------

DOT_SYSTEMS = ("tf.matmul", "nfzoo.ops.matmul")
GRADIENTS_PER_CALL = 20


def _kernel_gradient_runner(n_in: int, n_out: int, product: Callable, batch: int = TRAIN_BATCH):
    """``GRADIENTS_PER_CALL`` kernel gradients of Y = X W under XLA per call (see the module
    docstring), with ``product`` = ``tf.matmul`` or ``nfzoo.ops.matmul``."""
    import tensorflow as tf

    rng = np.random.RandomState(0)
    x = tf.Variable(rng.randn(batch, n_in).astype(np.float32))
    w = tf.Variable((rng.randn(n_in, n_out) / np.sqrt(n_in)).astype(np.float32))
    dy = tf.constant(rng.randn(batch, n_out).astype(np.float32))

    @tf.function(jit_compile=True)
    def call():
        for _ in range(GRADIENTS_PER_CALL):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(product(x, w) * dy)
            w.assign_sub(1e-9 * tape.gradient(loss, w))
            x.assign_add(1e-9 * w[:1, :1] * tf.ones_like(x))
        return w[0, 0]

    return _CallRunner(call)


def dot_orientation(archs: list[str], dims: list[int], calls: int, repeats: int) -> list[dict]:
    import tensorflow as tf

    from nfzoo.ops import matmul

    products = {"tf.matmul": tf.matmul, "nfzoo.ops.matmul": matmul}
    shapes = sorted(
        {k for dim in dims for arch in archs for k in _nfzoo_kernels(_nfzoo_flow(arch, dim))}
    )
    rows = []
    for n_in, n_out in shapes:
        makers = {
            name: functools.partial(_kernel_gradient_runner, n_in, n_out, products[name])
            for name in DOT_SYSTEMS
        }
        results = interleaved(makers, calls, repeats, f"[{n_in}, {n_out}]")
        for name in DOT_SYSTEMS:
            row = {"kernel": [n_in, n_out], "system": name, "calls_per_block": calls}
            if "error" in results[name]:
                row["error"] = results[name]["error"]
            else:
                row.update(rate_stats(calls * GRADIENTS_PER_CALL, results[name], "grads_per_s"))
            rows.append(row)
        print(f"[{n_in}, {n_out}]: " + ", ".join(_cell(r, "grads_per_s") for r in rows[-2:]))
    return rows


def dot_table(rows: list[dict]) -> str:
    lines = [
        "| kernel [n_in, n_out] | "
        + " | ".join(f"{s}, ms per gradient" for s in DOT_SYSTEMS)
        + " | speed-up |",
        "|---|" + "---|" * (len(DOT_SYSTEMS) + 1),
    ]
    for kernel in sorted({tuple(r["kernel"]) for r in rows}):
        by = {r["system"]: r for r in rows if tuple(r["kernel"]) == kernel}
        ms = [
            1e3 / by[s]["median_grads_per_s"] if "median_grads_per_s" in by[s] else None
            for s in DOT_SYSTEMS
        ]
        cells = [f"{m:.3f}" if m else "error" for m in ms]
        speedup = f"{ms[0] / ms[1]:.2f}x" if all(ms) else "-"
        lines.append(f"| {list(kernel)} | " + " | ".join(cells) + f" | {speedup} |")
    return "\n".join(lines)


# ---- peak-memory ------------------------------------------------------------------------


def _import_peers() -> None:
    """Imports every system's framework, so that each peak-memory child starts from the same
    interpreter."""
    import keras  # noqa: F401
    import tensorflow  # noqa: F401
    import tensorflow_probability  # noqa: F401
    import tf_keras  # noqa: F401
    import torch  # noqa: F401
    import zuko  # noqa: F401


def _peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM; ru_maxrss where /proc is missing), MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def peak_memory_child(system: str, arch: str, dim: int, steps: int, threads: int = 0) -> dict:
    """In this process: imports, baseline, then the system's first block + one block."""
    _import_peers()
    set_threads(threads)
    row = {"arch": arch, "dim": dim, "system": system, "baseline_mib": _peak_rss_mib()}
    if system != "none":
        trainer = _make_trainer(system, arch, mixture_sample(dim))
        trainer.block(steps)
        trainer.block(steps)
    row["peak_mib"] = _peak_rss_mib()
    row["increment_mib"] = row["peak_mib"] - row["baseline_mib"]
    return row


def peak_memory(system: str, arch: str, dim: int, steps: int, threads: int = 0) -> dict:
    """``peak_memory_child`` in a fresh interpreter; its JSON line, or the error."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "peak-memory", "--system", system]
    cmd += ["--arch", arch, "--dim", str(dim), "--steps", str(steps), "--threads", str(threads)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=True)
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        print(
            f"{arch} D={dim} {system}: peak RSS {row['peak_mib']:.0f} MiB "
            f"(+{row['increment_mib']:.0f} over {row['baseline_mib']:.0f} after imports)"
        )
        return row
    except subprocess.CalledProcessError as e:
        tail = " ".join(e.stderr.strip().splitlines()[-3:])
        return {"arch": arch, "dim": dim, "system": system, "error": tail[-300:]}
    except Exception as e:
        return {"arch": arch, "dim": dim, "system": system, "error": _error(e)}


# ---- train-throughput -------------------------------------------------------------------


def train_throughput(
    archs: list[str],
    dims: list[int],
    steps: int,
    repeats: int,
    systems=TRAIN_SYSTEMS,
    limit: bool = True,
    memory: bool = True,
    threads: int = 0,
) -> tuple[list[dict], list[dict], list[dict]]:
    """Returns (rows per system, matmul-limit rows, peak-memory rows)."""
    rows, limit_rows, memory_rows = [], [], []
    for dim in dims:
        x = mixture_sample(dim)
        for arch in archs:
            arch_systems = [s for s in systems if supports(s, arch)]
            makers = {s: functools.partial(_make_trainer, s, arch, x) for s in arch_systems}
            if limit:
                makers.update(_limit_makers(arch, dim))
            results = interleaved(makers, steps, repeats, f"{arch} D={dim}")
            lim_rows = _limit_rows(arch, dim, steps, results) if limit else []
            lim = _limit(lim_rows)
            limit_rows += lim_rows
            for system in arch_systems:
                row = {"arch": arch, "dim": dim, "system": system, "steps_per_block": steps}
                res = results[system]
                if "error" in res:
                    row["error"] = res["error"]
                    rows.append(row)
                    continue
                row.update(rate_stats(steps, res, "steps_per_s"))
                runner = res["runner"]
                flops = step_flops(runner.kernels)
                rate = row["median_steps_per_s"] * flops
                row.update(kernels=runner.kernels, flops_per_step=flops, flop_per_s=rate)
                if lim:
                    row["limit_fraction"] = rate / lim
                if system.startswith("nfzoo"):
                    row["fit_call_s"] = runner.fit_call_s
                print(
                    f"{arch} D={dim} {system}: {row['median_steps_per_s']:.1f} steps/s, "
                    f"compile {row['compile_s']:.1f} s, {rate / 1e9:.1f} GFLOP/s"
                    + (f" = {row['limit_fraction']:.2f} of the limit" if lim else "")
                )
                rows.append(row)
            del results, makers
            if memory:
                memory_rows += [peak_memory(s, arch, dim, steps, threads) for s in arch_systems]
    return rows, limit_rows, memory_rows


def throughput_table(
    rows: list[dict], limit_rows: list[dict] = (), memory_rows: list[dict] = ()
) -> str:
    systems = [s for s in ALL_SYSTEMS if any(r["system"] == s for r in rows)]
    names = " | ".join(NAMES[s] for s in systems)
    short = " / ".join(systems)
    head = f"| flow | D | {names} | nfzoo / fastest peer |"
    if limit_rows:
        head += f" limit, GFLOP/s | fraction of limit ({short}) |"
    if memory_rows:
        head += f" peak RSS increment, MiB ({short}) |"
    lines = [head, "|" + "---|" * head.count(" |")]
    compile_lines = [f"| flow | D | {names} |", "|---|---|" + "---|" * len(systems)]
    memory_lines = [
        f"| flow | D | baseline (after imports) | {names} |",
        "|---|---|---|" + "---|" * len(systems),
    ]
    for arch, dim in sorted({(r["arch"], r["dim"]) for r in rows}, key=lambda k: (k[1], k[0])):
        by = {r["system"]: r for r in rows if (r["arch"], r["dim"]) == (arch, dim)}
        for s in systems:
            by.setdefault(s, {"error": "no such flow"})
        cells = [_cell(by[s], "steps_per_s") for s in systems]
        line = f"| {arch} | {dim} | " + " | ".join(cells)
        line += f" | {_ratio_cell(by, systems, 'steps_per_s')} |"
        if limit_rows:
            lim = _limit([r for r in limit_rows if (r["arch"], r["dim"]) == (arch, dim)])
            fr = " / ".join(
                f"{by[s]['limit_fraction']:.2f}" if "limit_fraction" in by[s] else "-"
                for s in systems
            )
            line += f" {lim / 1e9:.1f} | {fr} |" if lim else " - | - |"
        mem = {r["system"]: r for r in memory_rows if (r["arch"], r["dim"]) == (arch, dim)}
        if memory_rows:
            inc = " / ".join(
                f"+{mem[s]['increment_mib']:.0f}" if "increment_mib" in mem.get(s, {}) else "-"
                for s in systems
            )
            line += f" {inc} |"
            base = [m["baseline_mib"] for m in mem.values() if "baseline_mib" in m]
            mcells = [
                f"{mem[s]['peak_mib']:.0f} (+{mem[s]['increment_mib']:.0f})"
                if "peak_mib" in mem.get(s, {})
                else f"failed: {mem.get(s, {}).get('error', '-')[:120]}"
                for s in systems
            ]
            memory_lines.append(
                f"| {arch} | {dim} | {statistics.median(base):.0f} | " + " | ".join(mcells) + " |"
                if base
                else f"| {arch} | {dim} | - | " + " | ".join(mcells) + " |"
            )
        lines.append(line)
        ccells = [f"{by[s]['compile_s']:.1f}" if "compile_s" in by[s] else "-" for s in systems]
        compile_lines.append(f"| {arch} | {dim} | " + " | ".join(ccells) + " |")
    text = (
        "\n".join(lines)
        + "\n\ncompile / first-block overhead, s (first block - steps / median steps/s)\n\n"
        + "\n".join(compile_lines)
    )
    if memory_rows:
        text += (
            "\n\npeak RSS, MiB, of each system training alone in a fresh interpreter "
            "(first block + one block), with the increment over its RSS after the imports\n\n"
            + "\n".join(memory_lines)
        )
    return text


# ---- density-throughput -----------------------------------------------------------------

DENSITY_N = 10_000


class _CallRunner:
    """A block is ``calls`` calls of ``fn``, each result brought to the host (numpy)."""

    def __init__(self, fn: Callable[[], object]):
        self.fn = fn

    def block(self, calls: int) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            np.asarray(self.fn())
        return time.perf_counter() - start


def _density_runner(system: str, arch: str, dim: int, task: str, n: int) -> _CallRunner:
    """``log_prob`` of ``n`` points or ``sample`` of ``n`` points, one per call."""
    x = mixture_sample(dim, n=n)
    if system == "zuko":
        import torch

        flow, xt = _zuko_flow(arch, dim), torch.from_numpy(x)

        def call():
            with torch.inference_mode():
                return flow().log_prob(xt) if task == "log_prob" else flow().sample((n,))

        return _CallRunner(call)
    import tensorflow as tf

    if system in ("nfzoo", "nfzoo-graph"):
        flow = _nfzoo_flow(arch, dim)
        log_prob, sample = flow.log_prob, functools.partial(flow.sample, n)
        jit = system == "nfzoo"
    else:
        dist = _tfp_flow(arch, dim)[0]
        log_prob, sample = dist.log_prob, functools.partial(dist.sample, n)
        jit = system == "tfp-xla"
    if task == "log_prob":
        fn, xt = tf.function(log_prob, jit_compile=jit), tf.constant(x)
        return _CallRunner(functools.partial(fn, xt))
    return _CallRunner(tf.function(sample, jit_compile=jit))


def density_throughput(
    archs: list[str], dims: list[int], calls: int, repeats: int, n: int, systems=TRAIN_SYSTEMS
) -> list[dict]:
    rows = []
    for dim in dims:
        for arch in archs:
            for task in ("log_prob", "sample"):
                makers = {
                    s: functools.partial(_density_runner, s, arch, dim, task, n) for s in systems
                }
                label = f"{arch} D={dim} {task}"
                results = interleaved(makers, calls, repeats, label)
                for s in systems:
                    row = {"arch": arch, "dim": dim, "task": task, "system": s, "n": n}
                    row["calls_per_block"] = calls
                    if "error" in results[s]:
                        row["error"] = results[s]["error"]
                    else:
                        row.update(rate_stats(calls * n, results[s], "points_per_s"))
                        print(f"{label} {s}: {row['median_points_per_s']:.0f} points/s")
                    rows.append(row)
                del results, makers
    return rows


def density_table(rows: list[dict]) -> str:
    systems = [s for s in ALL_SYSTEMS if any(r["system"] == s for r in rows)]
    names = " | ".join(NAMES[s].replace("fit, ", "") for s in systems)
    lines = [
        f"| flow | D | task | {names} | nfzoo / fastest peer |",
        "|---|---|---|" + "---|" * (len(systems) + 1),
    ]
    compile_lines = [f"| flow | D | task | {names} |", "|---|---|---|" + "---|" * len(systems)]
    keys = sorted({(r["arch"], r["dim"], r["task"]) for r in rows}, key=lambda k: (k[1], k))
    for arch, dim, task in keys:
        by = {r["system"]: r for r in rows if (r["arch"], r["dim"], r["task"]) == (arch, dim, task)}
        cells = [_cell(by[s], "points_per_s", 1e3) for s in systems]
        ratio = _ratio_cell(by, systems, "points_per_s")
        lines.append(f"| {arch} | {dim} | {task} | " + " | ".join(cells) + f" | {ratio} |")
        ccells = [f"{by[s]['compile_s']:.1f}" if "compile_s" in by[s] else "-" for s in systems]
        compile_lines.append(f"| {arch} | {dim} | {task} | " + " | ".join(ccells) + " |")
    return "\n".join(lines) + "\n\ncompile / first-block overhead, s\n\n" + "\n".join(compile_lines)


# ---- glow-throughput --------------------------------------------------------------------

GLOW_SYSTEMS = ("nfzoo", "nfzoo-graph", "tfp-graph", "tfp-xla")
GLOW_SHAPE = (8, 8, 1)
GLOW_BATCH = 64
GLOW_OPTIONS = {"num_scales": 2, "layers_per_scale": 8, "hidden_channels": 64, "num_levels": 17}
GLOW_NFZOO = (
    'nfzoo.build("glow", (8, 8, 1), num_scales=2, layers_per_scale=8, hidden_channels=64, '
    "num_levels=17)"
)
GLOW_TFP = (
    "tfb.Chain([nfzoo.layers.Logit(17), tfb.Glow(output_shape=(8, 8, 1), num_glow_blocks=2, "
    "num_steps_per_block=8, coupling_bijector_fn=partial(tfb.GlowDefaultNetwork, "
    "num_hidden=64), exit_bijector_fn=tfb.GlowDefaultExitNetwork)]) on "
    "tfd.Sample(tfd.Normal(0, 1), [64])"
)


def digits_dequantized(split: int = 0, seed: int = 0) -> np.ndarray:
    """One split of ``nfzoo.data.digits_images(seed)`` (0: train, 1: validation), counts
    0..16, dequantized once: + U[0, 1) (``nfzoo.data.dequantize``), so in [0, 17]^64."""
    return nfzoo.data.dequantize(nfzoo.data.digits_images(seed)[split], seed + split)


def _num_params(variables) -> int:
    return int(sum(np.prod(v.shape) for v in variables))


def _nfzoo_glow(x0, seed: int = 0):
    """nfzoo's Glow (logit pre-processing included), its ActNorms initialised from ``x0``."""
    flow = nfzoo.build("glow", GLOW_SHAPE, seed=seed, **GLOW_OPTIONS)
    flow.initialize(x0)
    return flow


def _tfp_glow(x0, seed: int = 0):
    """TFP's stock Glow at nfzoo's configuration, its helpers as TFP ships them (tf_keras
    networks), under nfzoo's ``Logit(17)`` used as a TFP bijector, so that ``log_prob`` is a
    density on [0, 17]^64 as nfzoo's. Its ActNorms initialise from ``x0`` (eagerly, in the
    first ``log_prob``). Returns (dist, trainable variables)."""
    import tensorflow as tf
    import tensorflow_probability as tfp

    tfb, tfd = tfp.bijectors, tfp.distributions
    tf.random.set_seed(seed)
    glow = tfb.Glow(
        output_shape=GLOW_SHAPE,
        num_glow_blocks=GLOW_OPTIONS["num_scales"],
        num_steps_per_block=GLOW_OPTIONS["layers_per_scale"],
        coupling_bijector_fn=functools.partial(
            tfb.GlowDefaultNetwork, num_hidden=GLOW_OPTIONS["hidden_channels"]
        ),
        exit_bijector_fn=tfb.GlowDefaultExitNetwork,
        seed=seed,
    )
    logit = nfzoo.layers.Logit(GLOW_OPTIONS["num_levels"])
    logit.build((None, *GLOW_SHAPE))  # nfzoo's layers must be built before ``inverse``
    size = int(np.prod(GLOW_SHAPE))
    dist = tfd.TransformedDistribution(
        tfd.Sample(tfd.Normal(0.0, 1.0), [size]), tfb.Chain([logit, glow])
    )
    dist.log_prob(x0)  # data-dependent ActNorm initialisation
    return dist, list(dist.trainable_variables)


def _make_glow_trainer(system: str, x, seed: int = 0):
    x0 = x[:GLOW_BATCH]  # the first batch of the (unshuffled) pipeline
    if system in ("nfzoo", "nfzoo-graph"):
        make = functools.partial(_nfzoo_glow, x0, seed)
        jit = system == "nfzoo"
        return _NfzooTrainer("glow", x, seed=seed, jit=jit, make_flow=make, batch=GLOW_BATCH)
    if system in ("tfp-graph", "tfp-xla"):
        make = functools.partial(_tfp_glow, x0, seed)
        jit = system == "tfp-xla"
        return _TfpTrainer("glow", x, jit, seed=seed, make_dist=make, batch=GLOW_BATCH)
    raise ValueError(f"unknown system {system!r}")


def glow_throughput(steps: int, repeats: int, systems=GLOW_SYSTEMS) -> list[dict]:
    """Training steps/s of nfzoo's Glow and TFP's on dequantized digits (batch 64), and, as a
    check that the losses are comparable, each one's NLL on the validation split after its
    (1 + repeats) x steps steps (the same batches in the same order for all)."""
    x, valid = digits_dequantized(0), digits_dequantized(1)
    makers = {s: functools.partial(_make_glow_trainer, s, x) for s in systems}
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
        row["trainable_params"] = _num_params(runner.variables)
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
    names = " | ".join(NAMES[s] for s in systems)
    lines = [
        f"| flow | batch | {names} | nfzoo / fastest peer |",
        "|---|---|" + "---|" * (len(systems) + 1),
        f"| glow 8x8x1 | {GLOW_BATCH} | "
        + " | ".join(_cell(by[s], "steps_per_s") for s in systems)
        + f" | {_ratio_cell(by, systems, 'steps_per_s')} |",
    ]
    detail = [
        "| system | compile / first-block overhead, s | trainable parameters "
        "| validation NLL after training, nats per image |",
        "|---|---|---|---|",
    ]
    for s in systems:
        r = by[s]
        if "error" in r:
            detail.append(f"| {NAMES[s]} | - | - | failed: {r['error'][:120]} |")
            continue
        detail.append(
            f"| {NAMES[s]} | {r['compile_s']:.1f} | {r['trainable_params']:,} "
            f"| {r['valid_nll']:.1f} (after {r['steps_trained']} steps) |"
        )
    return "\n".join(lines) + "\n\n" + "\n".join(detail)


# ---- density-quality --------------------------------------------------------------------

QUALITY_SYSTEMS = ("nfzoo", "tfp-xla", "zuko")


class GaussianMixture:
    """A D-dimensional mixture of axis-aligned Gaussians with known density, standardised
    exactly (each coordinate has mean 0 and variance 1 under p):

        p(x) = sum_k w_k prod_d N(x_d; m_kd, s_kd^2)
    """

    def __init__(self, dim: int = 8, components: int = 8, seed: int = 0):
        rng = np.random.RandomState(seed)
        self.w = rng.dirichlet(2.0 * np.ones(components))
        m = 3.0 * rng.randn(components, dim)
        s = rng.uniform(0.3, 1.5, size=(components, dim))
        mean = self.w @ m
        std = np.sqrt(self.w @ (s**2 + m**2) - mean**2)
        self.m, self.s = (m - mean) / std, s / std

    def sample(self, n: int, rng: np.random.RandomState) -> np.ndarray:
        k = rng.choice(len(self.w), size=n, p=self.w)
        return self.m[k] + self.s[k] * rng.randn(n, self.m.shape[1])

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        z = (x[:, None, :] - self.m) / self.s  # [n, K, D]
        comp = -0.5 * (z**2).sum(-1) - np.log(self.s).sum(-1) - 0.5 * x.shape[1] * np.log(2 * np.pi)
        a = comp + np.log(self.w)
        top = a.max(-1, keepdims=True)
        return (top + np.log(np.exp(a - top).sum(-1, keepdims=True)))[:, 0]


def density_quality(
    steps: int,
    seeds: list[int],
    hidden: list[int],
    n_test: int,
    dims: list[int] = (8,),
    archs: list[str] = ("maf",),
) -> list[dict]:
    """Per D, architecture, seed and system: train ``steps`` steps on fresh batches (the same
    for every system), then KL(p || q) on ``n_test`` held-out samples of p, with its standard
    error."""
    rows = []
    for dim in dims:
        mix = GaussianMixture(dim)
        for seed in seeds:
            rng = np.random.RandomState(1000 + seed)
            train = mix.sample(steps * TRAIN_BATCH, rng).astype(np.float32)
            test = mix.sample(n_test, rng)
            log_p = mix.log_prob(test)
            for arch in archs:
                for system in [s for s in QUALITY_SYSTEMS if supports(s, arch)]:
                    row = {"system": system, "arch": arch, "seed": seed, "steps": steps}
                    row.update(hidden=hidden, dim=dim)
                    label = f"D={dim} {arch} seed {seed} {system}"
                    try:
                        trainer = _make_trainer(system, arch, train, hidden, seed)
                        row["train_s"] = trainer.block(steps)
                        d = log_p - trainer.log_prob(test).astype(np.float64)
                        row["finite"] = int(np.isfinite(d).sum())
                        d = d[np.isfinite(d)]
                        row["kl"] = float(d.mean())
                        row["kl_se"] = float(d.std(ddof=1) / np.sqrt(len(d)))
                        print(f"{label}: KL {row['kl']:.4f} +- {row['kl_se']:.4f} nats")
                    except Exception as e:
                        row["error"] = _error(e)
                        print(f"{label} failed: {row['error']}")
                    rows.append(row)
    return rows


def quality_table(rows: list[dict]) -> str:
    lines = [
        "| D | flow | system | KL(p \\|\\| q), nats: mean +- se over seeds | per seed (+- se on "
        "the test set) | training s (per seed) | KL - zuko's |",
        "|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["dim"], r.get("arch", "maf")) for r in rows})
    for dim, arch in keys:
        here = [r for r in rows if (r["dim"], r.get("arch", "maf")) == (dim, arch)]
        zuko = {r["seed"]: r["kl"] for r in here if r["system"] == "zuko" and "kl" in r}
        for system in QUALITY_SYSTEMS:
            rs = [r for r in here if r["system"] == system]
            if not rs:
                continue
            ok = [r for r in rs if "kl" in r]
            per_seed = ", ".join(
                f"{r['kl']:.4f} +- {r['kl_se']:.4f}" if "kl" in r else f"failed: {r['error'][:80]}"
                for r in rs
            )
            secs = ", ".join(f"{r['train_s']:.1f}" for r in ok)
            gap = _mean_se([r["kl"] - zuko[r["seed"]] for r in ok if r["seed"] in zuko])
            kls = _mean_se([r["kl"] for r in ok])
            lines.append(
                f"| {dim} | {arch} | {NAMES[system]} | {kls} | {per_seed} | {secs} | {gap} |"
            )
    return "\n".join(lines)


def _mean_se(values: list[float]) -> str:
    """ "mean +- standard error" of ``values`` (the value alone for one, "-" for none)."""
    if len(values) > 1:
        return f"{np.mean(values):.4f} +- {np.std(values, ddof=1) / np.sqrt(len(values)):.4f}"
    return f"{values[0]:.4f}" if values else "-"


# ---- command line -----------------------------------------------------------------------


def _write(out: Path, stem: str, meta: dict, table: str, title: str) -> None:
    (out / f"{stem}.json").write_text(json.dumps(meta, indent=1) + "\n")
    (out / f"{stem}.md").write_text(title + "\n\n" + table + "\n")
    print(f"\n{title}\n")
    print(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="bench", required=True)
    arch_choices = ["maf", "realnvp"]
    spline_choices = [*arch_choices, "nsf", "nsf-ar"]
    p = sub.add_parser("export-latency", help="exported endpoints in TF, onnxruntime, LiteRT")
    p.add_argument("--flows", nargs="+", default=["maf-moons", "realnvp-moons", "glow1d-moons"])
    p.add_argument("--repeats", type=int, default=7)
    p = sub.add_parser("train-throughput", help="training steps/s vs TFP's and zuko's flows")
    p.add_argument("--archs", nargs="+", default=arch_choices, choices=spline_choices)
    p.add_argument("--dims", nargs="+", type=int, default=[8, 64])
    p.add_argument("--steps", type=int, default=20, help="training steps per timed block")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--systems", nargs="+", default=list(TRAIN_SYSTEMS), choices=ALL_SYSTEMS)
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
    p = sub.add_parser("matmul-limit", help="TF float32 matmul FLOP/s on the training shapes")
    p.add_argument("--archs", nargs="+", default=arch_choices, choices=arch_choices)
    p.add_argument("--dims", nargs="+", type=int, default=[8, 64])
    p.add_argument("--steps", type=int, default=20, help="steps' matmuls per timed block")
    p.add_argument("--repeats", type=int, default=5)
    p = sub.add_parser("dot-orientation", help="XLA kernel-gradient time by orientation")
    p.add_argument("--archs", nargs="+", default=arch_choices, choices=arch_choices)
    p.add_argument("--dims", nargs="+", type=int, default=[8, 64])
    p.add_argument("--calls", type=int, default=20, help="compiled calls per timed block")
    p.add_argument("--repeats", type=int, default=7)
    p = sub.add_parser("density-throughput", help="log_prob and sample points/s")
    p.add_argument("--archs", nargs="+", default=arch_choices, choices=arch_choices)
    p.add_argument("--dims", nargs="+", type=int, default=[8, 64])
    p.add_argument("--n", type=int, default=DENSITY_N, help="points per call")
    p.add_argument("--calls", type=int, default=1, help="calls per timed block")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--systems", nargs="+", default=list(TRAIN_SYSTEMS), choices=ALL_SYSTEMS)
    p = sub.add_parser("density-quality", help="KL(p||q) at equal budget and size")
    p.add_argument("--archs", nargs="+", default=["maf"], choices=spline_choices)
    p.add_argument("--dims", nargs="+", type=int, default=[8])
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--hidden", nargs="+", type=int, default=[64, 64])
    p.add_argument("--test", type=int, default=20_000, help="held-out samples of p")
    p = sub.add_parser("glow-throughput", help="Glow training steps/s vs TFP's stock Glow")
    p.add_argument("--steps", type=int, default=20, help="training steps per timed block")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--systems", nargs="+", default=list(GLOW_SYSTEMS), choices=GLOW_SYSTEMS)
    p = sub.add_parser("peak-memory", help="one system's training alone; prints peak RSS")
    p.add_argument("--system", required=True, choices=[*ALL_SYSTEMS, "none"])
    p.add_argument("--arch", default="maf", choices=arch_choices)
    p.add_argument("--dim", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    import bench_npe  # the npe subcommand lives in tools/bench_npe.py

    bench_npe.add_parser(sub)
    for name, p in sub.choices.items():
        p.add_argument("--out", type=Path, default=ROOT / "out" / "bench")
        if name != "export-latency":
            p.add_argument(
                "--threads",
                type=int,
                default=0,
                help="intra- and inter-op threads of TF and torch alike (0: all cores)",
            )
    args = parser.parse_args()
    if args.bench == "peak-memory":
        row = peak_memory_child(args.system, args.arch, args.dim, args.steps, args.threads)
        print(json.dumps(row))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "args": {k: v for k, v in vars(args).items() if k != "out"},
    }
    if args.bench == "export-latency":
        rows = export_latency(args.flows, args.repeats)
        title = f"per-call latency, ms: median (min-max) of {args.repeats} repeats"
        _write(args.out, "export_latency", {**meta, "rows": rows}, latency_table(rows), title)
        return 0
    meta["threads"] = set_threads(args.threads)
    if args.bench == "npe":
        return bench_npe.run(args, meta, _write)
    if args.bench == "train-throughput":
        rows, limit_rows, memory_rows = train_throughput(
            args.archs,
            args.dims,
            args.steps,
            args.repeats,
            args.systems,
            args.limit,
            args.memory,
            args.threads,
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
        table = throughput_table(rows, limit_rows, memory_rows)
        _write(args.out, "train_throughput", meta, table, title)
    elif args.bench == "matmul-limit":
        rows = matmul_limit(args.archs, args.dims, args.steps, args.repeats)
        meta.update(batch=TRAIN_BATCH, rows=rows)
        title = (
            f"float32 matmul GFLOP/s of one training step's dense products (batch {TRAIN_BATCH}"
            f"): median (min-max) of {args.repeats} repeats of {args.steps} steps"
        )
        _write(args.out, "matmul_limit", meta, limit_table(rows), title)
    elif args.bench == "dot-orientation":
        rows = dot_orientation(args.archs, args.dims, args.calls, args.repeats)
        meta.update(batch=TRAIN_BATCH, gradients_per_call=GRADIENTS_PER_CALL, rows=rows)
        title = (
            f"XLA, ms per kernel gradient of a dense product (batch {TRAIN_BATCH}): from the "
            f"median of {args.repeats} repeats of {args.calls} calls x {GRADIENTS_PER_CALL}; "
            f"threads {meta['threads']}"
        )
        _write(args.out, "dot_orientation", meta, dot_table(rows), title)
    elif args.bench == "density-throughput":
        rows = density_throughput(
            args.archs, args.dims, args.calls, args.repeats, args.n, args.systems
        )
        meta.update(rows=rows)
        title = (
            f"thousands of points/s, {args.n} points per call: median (min-max) of "
            f"{args.repeats} repeats of {args.calls} call(s); threads {meta['threads']}"
        )
        _write(args.out, "density_throughput", meta, density_table(rows), title)
    elif args.bench == "glow-throughput":
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
        _write(args.out, "glow_throughput", meta, glow_table(rows), title)
    else:
        rows = density_quality(
            args.steps, args.seeds, args.hidden, args.test, args.dims, args.archs
        )
        meta.update(rows=rows, mixture="GaussianMixture(dim=D, components=8, seed=0)")
        title = (
            f"KL(p || q) of {', '.join(args.archs)} ({TRAIN_LAYERS} layers, hidden "
            f"{args.hidden}) after {args.steps} steps of batch {TRAIN_BATCH} (Adam 1e-3) on "
            f"the D-dimensional mixture, D in {args.dims}; {args.test} held-out samples"
        )
        _write(args.out, "density_quality", meta, quality_table(rows), title)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
