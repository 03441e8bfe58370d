"""BayesFlow's side of ``tools/bench.py``: a worker process, run by the bench with an
interpreter that has ``bayesflow`` (BayesFlow 2.1 needs Python >= 3.12 and numpy >= 2.5, newer
than nfzoo's environment, hence a separate process), as ``python -m benchmarks.bayesflow_worker``
with tools/ on its path; it needs neither nfzoo nor the rest of this package. Its environment:

    python3.12 -m venv /path/to/bf-env && /path/to/bf-env/bin/pip install bayesflow tensorflow

(BayesFlow does not pull a Keras backend itself; pip picks BayesFlow 2.1.0 with TensorFlow
2.21, Keras 3.15 and numpy 2.5; then ``--bayesflow-python /path/to/bf-env/bin/python``.)

It builds BayesFlow's coupling flow, then answers one JSON command per line on stdin with one
reply line starting with ``@@`` (anything else on stdout is library noise); a command that
raises is answered ``{"error": "Type: message"}`` and the worker goes on. Two modes:

``--mode npe`` (``tools/bench.py npe``): the training stream of (theta, x) pairs from the
.npz ``--data``; the model ``bf.networks.CouplingFlow(depth, transform, subnet_kwargs=
{"widths": hidden})`` in a ``bf.estimators.BasicEstimator`` that standardises theta and x
(``standardize="all"``), compiled with Adam at the bench's learning rate and otherwise
BayesFlow's defaults; trained by Keras ``fit`` on the bench's batches, in the bench's order.

    {"cmd": "block", "steps": n}            -> {"seconds": t}  (n training steps, timed here)
    {"cmd": "sample", "x": [...], "n": m, "seed": s} -> {"samples": [[...], ...]}

``--mode density`` (train-throughput, density-throughput, density-quality): an unconditional
flow on D = ``--dim`` features (no conditions: BayesFlow's ``CouplingFlow`` takes
``conditions=None``), ``BasicEstimator(standardize=None)`` (the bench's data are standardised
already, and nfzoo's flows standardise nothing either), trained by Keras ``fit`` on a tf.data
pipeline of the .npz ``--data`` (``x``) in batches of ``--batch``, in order, restarted at the
first batch by every ``fit`` call, as nfzoo's trainer is. ``log_prob`` and ``sample`` are the
network's own, each in one ``tf.function`` (XLA when the estimator's ``jit_compile`` is on).

    {"cmd": "block", "steps": n}                     -> {"seconds": t}
    {"cmd": "log_prob", "points": "p.npy"}           -> {"log_prob": [...]}
    {"cmd": "time_log_prob", "points": "p.npy", "calls": k} -> {"seconds": t}
    {"cmd": "time_sample", "n": m, "calls": k}       -> {"seconds": t}

Every ``seconds`` is timed here, so it excludes the pipe: a training block from its epoch's
start to its end (a Keras callback, as nfzoo's trainer), a call block from before the first
call to after the last result is on the host (as ``timing.CallRunner``). Both modes:

    {"cmd": "info"}    -> {"params", "kernels", "jit_compile", "version", "config"}
    {"cmd": "memory"}  -> {"baseline_mib": VmHWM after the imports, "peak_mib": VmHWM now}
    {"cmd": "quit"}

``--permutation``, ``--actnorm``, ``--activation`` and ``--dropout`` left out keep BayesFlow's
defaults (random permutations, an ActNorm before each dual coupling, hard_silu, dropout 0.05);
``--bins`` and ``--bound`` (spline) set ``transform_kwargs={"bins": K, "default_domain": (-B, B,
-B, B)}``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM; ru_maxrss where /proc is missing), MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def parse_args(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", default="npe", choices=["npe", "density"])
    parser.add_argument("--data", help=".npz: theta and x (npe) or x (density), in batch order")
    parser.add_argument("--dim", type=int, help="density: the number of features D")
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--depth", type=int, required=True)
    parser.add_argument("--hidden", type=int, nargs="+", required=True)
    parser.add_argument("--transform", default="affine", choices=["affine", "spline"])
    parser.add_argument("--bins", type=int)
    parser.add_argument("--bound", type=float)
    parser.add_argument("--permutation", help='"none" for none; left out: BayesFlow\'s default')
    parser.add_argument("--actnorm", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--activation")
    parser.add_argument("--dropout", type=float)
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.mode == "npe" and not args.data:
        parser.error("--mode npe needs --data")
    if args.mode == "density" and not args.dim:
        parser.error("--mode density needs --dim")
    return args


def network_options(args) -> dict:
    """``CouplingFlow``'s arguments: those given, BayesFlow's defaults for the rest."""
    subnet = {"widths": list(args.hidden)}
    if args.activation is not None:
        subnet["activation"] = args.activation
    if args.dropout is not None:
        subnet["dropout"] = args.dropout or None
    options = {"depth": args.depth, "transform": args.transform, "subnet_kwargs": subnet}
    if args.permutation is not None:
        options["permutation"] = None if args.permutation == "none" else args.permutation
    if args.actnorm is not None:
        options["use_actnorm"] = args.actnorm
    transform = {}
    if args.bins is not None:
        transform["bins"] = args.bins
    if args.bound is not None:
        transform["default_domain"] = (-args.bound, args.bound, -args.bound, args.bound)
    if transform:
        options["transform_kwargs"] = transform
    return options


def reply(payload: dict) -> None:
    sys.stdout.write("@@" + json.dumps(payload) + "\n")
    sys.stdout.flush()


def main(argv=None) -> int:
    args = parse_args(argv)
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import bayesflow as bf
    import keras

    baseline_mib = peak_rss_mib()
    keras.utils.set_random_seed(args.seed)
    options = network_options(args)
    network = bf.networks.CouplingFlow(**options)
    times = {}

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            times["start"] = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times["end"] = time.perf_counter()

    if args.mode == "npe":
        estimator, commands = npe_commands(args, bf, keras, network)
    else:
        estimator, commands = density_commands(args, bf, keras, tf, network)

    def block(command):
        if "dataset" not in commands:
            raise ValueError("no training data: the worker was started without --data")
        estimator.fit(
            dataset=commands["dataset"],
            epochs=1,
            steps_per_epoch=command["steps"],
            verbose=0,
            shuffle=False,
            callbacks=[Timer()],
        )
        return {"seconds": times["end"] - times["start"]}

    def info(command):
        variables = estimator.trainable_variables
        return {
            "params": int(sum(np.prod(v.shape) for v in variables)),
            "kernels": [list(map(int, v.shape)) for v in variables if len(v.shape) == 2],
            "jit_compile": str(estimator.jit_compile),
            "version": bf.__version__,
            "config": {k: v for k, v in options.items()},
        }

    def memory(command):
        return {"baseline_mib": baseline_mib, "peak_mib": peak_rss_mib()}

    commands.update(block=block, info=info, memory=memory)
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "quit":
            break
        try:
            if command["cmd"] not in commands:
                raise ValueError(f"unknown command {command['cmd']!r}")
            reply(commands[command["cmd"]](command))
        except Exception as e:  # the bench records it in the table
            reply({"error": " ".join(f"{type(e).__name__}: {e}".split())[:300]})
    return 0


def npe_commands(args, bf, keras, network):
    with np.load(args.data) as f:
        theta, x = f["theta"].astype(np.float32), f["x"].astype(np.float32)
    adapter = (
        bf.adapters.Adapter()
        .convert_dtype("float64", "float32")
        .rename("theta", "inference_variables")
        .rename("x", "inference_conditions")
    )

    class Stream(keras.utils.PyDataset):
        """The bench's batches in the bench's order, continuing across ``fit`` calls."""

        def __init__(self):
            super().__init__()
            self.i, self.batches = 0, len(theta) // args.batch

        def __len__(self):
            return self.batches

        def __getitem__(self, item):
            k = self.i % self.batches
            self.i += 1
            sl = slice(k * args.batch, (k + 1) * args.batch)
            return adapter({"theta": theta[sl], "x": x[sl]})

    estimator = bf.estimators.BasicEstimator(
        inference_network=network, adapter=adapter, standardize="all"
    )
    estimator.compile(optimizer=keras.optimizers.Adam(learning_rate=args.lr))

    def sample(command):
        conditions = {"x": np.asarray(command["x"], np.float32)[None, :]}
        out = estimator.sample(
            num_samples=command["n"], conditions=conditions, seed=command["seed"]
        )
        return {"samples": np.asarray(out["theta"])[0].tolist()}

    return estimator, {"dataset": Stream(), "sample": sample}


def density_commands(args, bf, keras, tf, network):
    estimator = bf.estimators.BasicEstimator(inference_network=network, standardize=None)
    estimator.compile(optimizer=keras.optimizers.Adam(learning_rate=args.lr))
    # built here, from the shape alone: fit would otherwise build it on its first batch
    estimator.build_from_data({"inference_variables": keras.ops.zeros((args.batch, args.dim))})
    commands = {}
    if args.data:
        with np.load(args.data) as f:
            x = f["x"].astype(np.float32)
        ds = tf.data.Dataset.from_tensor_slices({"inference_variables": x})
        ds = ds.batch(args.batch, drop_remainder=True).repeat().prefetch(tf.data.AUTOTUNE)
        commands["dataset"] = ds
    jit = bool(estimator.jit_compile)
    log_prob = tf.function(lambda v: network.log_prob(v), jit_compile=jit)
    samplers, points = {}, {}

    def load(path):
        if path not in points:
            points[path] = tf.constant(np.load(path).astype(np.float32))
        return points[path]

    def log_prob_command(command):
        return {"log_prob": np.asarray(log_prob(load(command["points"]))).tolist()}

    def time_log_prob(command):
        xt = load(command["points"])
        start = time.perf_counter()
        for _ in range(command["calls"]):
            np.asarray(log_prob(xt))
        return {"seconds": time.perf_counter() - start}

    def time_sample(command):
        n = command["n"]
        if n not in samplers:
            samplers[n] = tf.function(lambda: network.sample((n,)), jit_compile=jit)
        start = time.perf_counter()
        for _ in range(command["calls"]):
            np.asarray(samplers[n]())
        return {"seconds": time.perf_counter() - start}

    commands.update(log_prob=log_prob_command, time_log_prob=time_log_prob)
    commands["time_sample"] = time_sample
    return estimator, commands


if __name__ == "__main__":
    raise SystemExit(main())
