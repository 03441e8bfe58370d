"""BayesFlow's side of ``tools/bench.py npe``: a worker process, run by the bench with an
interpreter that has ``bayesflow`` (it may need other versions of numpy and Python than
nfzoo's environment, hence a separate process), as ``python -m benchmarks.bayesflow_worker``
with tools/ on its path; it needs neither nfzoo nor the rest of this package. It reads the
training stream from an .npz file, builds BayesFlow's coupling flow and answers one JSON
command per line on stdin:

    {"cmd": "block", "steps": n}            -> {"seconds": t}  (n training steps, timed here)
    {"cmd": "sample", "x": [...], "n": m, "seed": s} -> {"samples": [[...], ...]}
    {"cmd": "info"}                         -> {"params": ..., "jit_compile": ..., "version": ...}
    {"cmd": "quit"}

Replies are single lines starting with ``@@`` (anything else on stdout is library noise).

Model: ``bf.networks.CouplingFlow(depth, transform, subnet_kwargs={"widths": hidden})`` in a
``bf.estimators.BasicEstimator`` that standardises theta and x (``standardize="all"``),
compiled with Adam at the bench's learning rate and otherwise BayesFlow's defaults; trained
by Keras ``fit`` on the bench's batches, in the bench's order.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True, help=".npz with theta and x, in batch order")
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--depth", type=int, required=True)
    parser.add_argument("--hidden", type=int, nargs="+", required=True)
    parser.add_argument("--transform", default="affine")
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()

    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import bayesflow as bf
    import keras

    keras.utils.set_random_seed(args.seed)
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

    network = bf.networks.CouplingFlow(
        depth=args.depth, transform=args.transform, subnet_kwargs={"widths": args.hidden}
    )
    estimator = bf.estimators.BasicEstimator(
        inference_network=network, adapter=adapter, standardize="all"
    )
    estimator.compile(optimizer=keras.optimizers.Adam(learning_rate=args.lr))
    stream = Stream()
    times = {}

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            times["start"] = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times["end"] = time.perf_counter()

    def reply(payload: dict) -> None:
        sys.stdout.write("@@" + json.dumps(payload) + "\n")
        sys.stdout.flush()

    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "block":
            estimator.fit(
                dataset=stream,
                epochs=1,
                steps_per_epoch=command["steps"],
                verbose=0,
                callbacks=[Timer()],
            )
            reply({"seconds": times["end"] - times["start"]})
        elif command["cmd"] == "sample":
            conditions = {"x": np.asarray(command["x"], np.float32)[None, :]}
            out = estimator.sample(
                num_samples=command["n"], conditions=conditions, seed=command["seed"]
            )
            reply({"samples": np.asarray(out["theta"])[0].tolist()})
        elif command["cmd"] == "info":
            reply(
                {
                    "params": int(sum(np.prod(v.shape) for v in estimator.trainable_variables)),
                    "jit_compile": str(estimator.jit_compile),
                    "version": bf.__version__,
                }
            )
        elif command["cmd"] == "quit":
            break
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
