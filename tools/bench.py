"""Benchmarks: every speed figure nfzoo states comes from here, as medians of repeated,
interleaved measurements taken in one run (these machines are shared and noisy).

    .venv/bin/python tools/bench.py export-latency [--flows maf-moons realnvp-moons] [--repeats 7]
    .venv/bin/python tools/bench.py train-throughput [--dims 8 64] [--steps 20] [--repeats 5]

export-latency: per-call latency of the exported ``log_prob`` and ``generate`` endpoints at
batch 1 and 1024, in TensorFlow (the SavedModel signature, as TF Serving runs it),
onnxruntime and LiteRT. Each flow is exported afresh (with its parity check) into a temporary
folder; the runtimes are called in rotating order within every repeat, each repeat timing a
block of calls after one warm-up call. Writes JSON and a Markdown table to out/bench/.

train-throughput: training steps/s (batch 512, Adam at 1e-3, negative log-likelihood) of MAF
and RealNVP, 5 layers, hidden [256, 256], at every D of ``--dims``, on one fixed float32 sample
of a Gaussian mixture, for
  - nfzoo: ``nfzoo.build(arch, D, num_layers=5, hidden_units=[256, 256])`` trained by Keras
    ``fit`` with the default ``flow.compile()`` (XLA) on a repeated tf.data pipeline; every
    block is one ``fit(epochs=1, steps_per_epoch=steps)`` call, timed from the epoch's start to
    its end by a callback (the time of the whole ``fit`` call is kept in the JSON too);
  - TFP stock: ``tfb.MaskedAutoregressiveFlow(tfb.AutoregressiveNetwork(params=2, ...))`` and
    ``tfb.RealNVP(D // 2, shift_and_log_scale_fn=tfb.real_nvp_default_template(...))``, 5 of
    them with ``tfb.Permute`` reversals between, in a ``tfd.TransformedDistribution``, trained
    by a ``tf.function`` step with tf_keras' Adam, once in graph mode and once with
    ``jit_compile=True``, fed by the same tf.data pipeline;
  - zuko (PyTorch, CPU): ``zuko.flows.MAF(D, transforms=5, hidden_features=[256, 256])`` and
    ``zuko.flows.RealNVP`` (zuko's NICE with affine couplings, alternating checkered masks),
    a plain loop with ``torch.optim.Adam`` over the same batches; torch is set to as many
    intra- and inter-op threads as TF uses by default (the cores this process may run on).
The first block of every system (tracing, XLA compilation, variable creation) is timed apart:
``compile_s`` = first block - steps / median steps/s. Then every repeat times one block of
``--steps`` steps per system, in rotating order. A system that fails gets its error in the
table. Writes JSON and a Markdown table to out/bench/; only ratios within one run count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

import nfzoo
from nfzoo.exporting.formats import OnnxRunner, SavedModelRunner, TFLiteRunner

ROOT = Path(__file__).resolve().parents[1]
RUNTIMES = ("tensorflow", "onnxruntime", "litert")


def _time_block(runner, endpoint: str, inputs: dict, calls: int) -> float:
    """Seconds per call, over ``calls`` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(calls):
        runner(endpoint, inputs)
    return (time.perf_counter() - start) / calls


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
                    times = {r: [] for r in RUNTIMES}
                    for r in RUNTIMES:
                        runners[r](endpoint, inputs)  # warm-up (session creation, tracing)
                    for rep in range(repeats):
                        order = RUNTIMES[rep % 3 :] + RUNTIMES[: rep % 3]
                        for r in order:
                            times[r].append(_time_block(runners[r], endpoint, inputs, calls))
                    for r in RUNTIMES:
                        t = sorted(times[r])
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
                        print(
                            f"{name} {endpoint} batch {batch} {r}: {rows[-1]['median_ms']:.3f} ms"
                        )
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


# ---- train-throughput ----------------------------------------------------------------

TRAIN_SYSTEMS = ("nfzoo", "tfp-graph", "tfp-xla", "zuko")
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


def _tf_dataset(x):
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(x).batch(TRAIN_BATCH, drop_remainder=True)
    return ds.repeat().prefetch(tf.data.AUTOTUNE)


class _NfzooTrainer:
    """nfzoo's flow, trained by ``fit`` (default compile: Adam, XLA)."""

    def __init__(self, arch: str, x):
        import keras

        self.flow = nfzoo.build(
            arch, x.shape[1], num_layers=TRAIN_LAYERS, hidden_units=TRAIN_HIDDEN
        )
        self.flow.compile(learning_rate=TRAIN_LR)
        self.ds = _tf_dataset(x)
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


class _TfpTrainer:
    """TFP's stock bijectors in a TransformedDistribution, a tf.function step, tf_keras Adam."""

    def __init__(self, arch: str, x, jit: bool):
        import tensorflow as tf
        import tensorflow_probability as tfp
        import tf_keras

        tfb, tfd = tfp.bijectors, tfp.distributions
        dim = x.shape[1]
        tf.random.set_seed(0)
        bijectors, self.nets = [], []
        for i in range(TRAIN_LAYERS):
            if i:
                bijectors.append(tfb.Permute(list(reversed(range(dim)))))
            if arch == "maf":
                net = tfb.AutoregressiveNetwork(params=2, hidden_units=TRAIN_HIDDEN)
                bijectors.append(tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=net))
            else:
                net = tfb.real_nvp_default_template(hidden_layers=TRAIN_HIDDEN)
                bijectors.append(tfb.RealNVP(num_masked=dim // 2, shift_and_log_scale_fn=net))
            self.nets.append(net)
        self.dist = tfd.TransformedDistribution(
            tfd.MultivariateNormalDiag(loc=tf.zeros(dim)), tfb.Chain(bijectors[::-1])
        )
        self.dist.log_prob(x[:2])  # creates the variables, eagerly
        self.variables = [v for net in self.nets for v in net.trainable_variables]
        self.optimizer = tf_keras.optimizers.Adam(learning_rate=TRAIN_LR)

        @tf.function(jit_compile=jit)
        def step(batch):
            with tf.GradientTape() as tape:
                loss = -tf.reduce_mean(self.dist.log_prob(batch))
            grads = tape.gradient(loss, self.variables)
            self.optimizer.apply_gradients(zip(grads, self.variables))
            return loss

        self.step = step
        self.it = iter(_tf_dataset(x))

    def block(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            loss = self.step(next(self.it))
        loss.numpy()
        return time.perf_counter() - start


class _ZukoTrainer:
    """zuko's flow, a plain torch loop with torch.optim.Adam over the same batches."""

    def __init__(self, arch: str, x):
        import torch
        import zuko

        torch.manual_seed(0)
        cls = zuko.flows.MAF if arch == "maf" else zuko.flows.RealNVP
        self.flow = cls(features=x.shape[1], transforms=TRAIN_LAYERS, hidden_features=TRAIN_HIDDEN)
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


def _make_trainer(system: str, arch: str, x):
    if system == "nfzoo":
        return _NfzooTrainer(arch, x)
    if system in ("tfp-graph", "tfp-xla"):
        return _TfpTrainer(arch, x, jit=system == "tfp-xla")
    return _ZukoTrainer(arch, x)


def _error(e: BaseException) -> str:
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text[:300]


def set_torch_threads() -> dict:
    """Gives torch the thread counts TF uses by default: intra- and inter-op = the cores this
    process may run on (TF's 0 = "all cores")."""
    import tensorflow as tf
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(cores)
    torch.set_num_interop_threads(cores)
    return {
        "tf_intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "tf_inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        "tf_default_means": f"0 = all {cores} cores",
        "torch_intra_op": torch.get_num_threads(),
        "torch_inter_op": torch.get_num_interop_threads(),
    }


def train_throughput(archs: list[str], dims: list[int], steps: int, repeats: int) -> list[dict]:
    rows = []
    for dim in dims:
        x = mixture_sample(dim)
        for arch in archs:
            trainers, first, times, errors = {}, {}, {s: [] for s in TRAIN_SYSTEMS}, {}
            for system in TRAIN_SYSTEMS:
                try:
                    trainers[system] = _make_trainer(system, arch, x)
                    first[system] = trainers[system].block(steps)
                except Exception as e:  # recorded in the table instead of a number
                    errors[system] = _error(e)
                    trainers.pop(system, None)
                    print(f"{arch} D={dim} {system} failed: {errors[system]}")
            live = [s for s in TRAIN_SYSTEMS if s in trainers]
            for rep in range(repeats):
                order = live[rep % len(live) :] + live[: rep % len(live)] if live else []
                for system in order:
                    times[system].append(trainers[system].block(steps))
            for system in TRAIN_SYSTEMS:
                row = {"arch": arch, "dim": dim, "system": system, "steps_per_block": steps}
                if system in errors:
                    row["error"] = errors[system]
                else:
                    rates = sorted(steps / t for t in times[system])
                    med = statistics.median(rates)
                    row.update(
                        median_steps_per_s=med,
                        min_steps_per_s=rates[0],
                        max_steps_per_s=rates[-1],
                        repeats=repeats,
                        first_block_s=first[system],
                        compile_s=max(0.0, first[system] - steps / med),
                    )
                    if system == "nfzoo":
                        row["fit_call_s"] = trainers[system].fit_call_s
                    print(
                        f"{arch} D={dim} {system}: {med:.1f} steps/s, "
                        f"compile {row['compile_s']:.1f} s"
                    )
                rows.append(row)
            del trainers
    return rows


def throughput_table(rows: list[dict]) -> str:
    names = {
        "nfzoo": "nfzoo (fit, XLA)",
        "tfp-graph": "TFP (tf.function)",
        "tfp-xla": "TFP (XLA)",
        "zuko": "zuko (torch)",
    }
    lines = [
        "| flow | D | " + " | ".join(names[s] for s in TRAIN_SYSTEMS) + " | nfzoo / fastest peer |",
        "|---|---|" + "---|" * (len(TRAIN_SYSTEMS) + 1),
    ]
    compile_lines = [
        "| flow | D | " + " | ".join(names[s] for s in TRAIN_SYSTEMS) + " |",
        "|---|---|" + "---|" * len(TRAIN_SYSTEMS),
    ]
    keys = sorted({(r["arch"], r["dim"]) for r in rows}, key=lambda k: (k[1], k[0]))
    for arch, dim in keys:
        by = {r["system"]: r for r in rows if (r["arch"], r["dim"]) == (arch, dim)}
        cells, ccells = [], []
        for s in TRAIN_SYSTEMS:
            r = by[s]
            if "error" in r:
                cells.append(f"failed: {r['error'][:120]}")
                ccells.append("-")
            else:
                cells.append(
                    f"{r['median_steps_per_s']:.1f} "
                    f"({r['min_steps_per_s']:.1f}-{r['max_steps_per_s']:.1f})"
                )
                ccells.append(f"{r['compile_s']:.1f}")
        peers = [by[s]["median_steps_per_s"] for s in TRAIN_SYSTEMS[1:] if "error" not in by[s]]
        if "error" in by["nfzoo"] or not peers:
            ratio = "-"
        else:
            best = max(TRAIN_SYSTEMS[1:], key=lambda s: by[s].get("median_steps_per_s", -1))
            ratio = f"{by['nfzoo']['median_steps_per_s'] / max(peers):.2f} (vs {names[best]})"
        lines.append(f"| {arch} | {dim} | " + " | ".join(cells) + f" | {ratio} |")
        compile_lines.append(f"| {arch} | {dim} | " + " | ".join(ccells) + " |")
    return (
        "\n".join(lines)
        + "\n\ncompile / first-block overhead, s (first block - steps / median steps/s)\n\n"
        + "\n".join(compile_lines)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="bench", required=True)
    p = sub.add_parser("export-latency", help="exported endpoints in TF, onnxruntime, LiteRT")
    p.add_argument("--flows", nargs="+", default=["maf-moons", "realnvp-moons", "glow1d-moons"])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", type=Path, default=ROOT / "out" / "bench")
    p = sub.add_parser("train-throughput", help="training steps/s vs TFP's and zuko's flows")
    p.add_argument("--archs", nargs="+", default=["maf", "realnvp"], choices=["maf", "realnvp"])
    p.add_argument("--dims", nargs="+", type=int, default=[8, 64])
    p.add_argument("--steps", type=int, default=20, help="training steps per timed block")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=ROOT / "out" / "bench")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    if args.bench == "train-throughput":
        threads = set_torch_threads()
        rows = train_throughput(args.archs, args.dims, args.steps, args.repeats)
        table = throughput_table(rows)
        meta = {
            "machine": machine,
            "threads": threads,
            "batch": TRAIN_BATCH,
            "layers": TRAIN_LAYERS,
            "hidden": TRAIN_HIDDEN,
            "rows": rows,
        }
        (args.out / "train_throughput.json").write_text(json.dumps(meta, indent=1) + "\n")
        (args.out / "train_throughput.md").write_text(table + "\n")
        print(
            f"\ntraining steps/s (batch {TRAIN_BATCH}): median (min-max) of {args.repeats} "
            f"repeats of {args.steps} steps; threads {threads}\n"
        )
        print(table)
        return 0
    rows = export_latency(args.flows, args.repeats)
    table = latency_table(rows)
    meta = {"machine": machine, "rows": rows}
    (args.out / "export_latency.json").write_text(json.dumps(meta, indent=1) + "\n")
    (args.out / "export_latency.md").write_text(table + "\n")
    print("\nper-call latency, ms: median (min-max) of", args.repeats, "repeats\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
