"""The one timing mechanism behind every speed figure, and the runners it times.

Each system is a runner with ``block(n) -> seconds``. ``interleaved`` times its first block
(tracing, XLA compilation, variable creation) apart, ``compile_s`` = first block - n / median
rate; then one untimed round of one block per system warms every system up; then every
repeat times one block per system, in rotating order; a system that fails gets its error in
the table. Figures are the median (min-max) over repeats. Only ratios within one run count:
these machines are shared and noisy.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable

import numpy as np


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
            errors[name] = error_text(e)
            # a runner with a worker process ends it
            getattr(runners.pop(name, None), "close", lambda: None)()
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


def error_text(e: BaseException) -> str:
    """An exception as one short line, for a table cell."""
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text[:300]


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


# ---- runners: block(n) -> seconds -------------------------------------------------------


class CallRunner:
    """A block is ``calls`` calls of ``fn``, each result brought to the host (numpy)."""

    def __init__(self, fn: Callable[[], object]):
        self.fn = fn

    def block(self, calls: int) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            np.asarray(self.fn())
        return time.perf_counter() - start


@contextlib.contextmanager
def swap_ratio(value: float | None):
    """``nfzoo.ops.SWAP_RATIO`` set to ``value`` inside (None: left as it is). The ratio is
    read when a gradient is traced, so what counts is its value while a step is traced."""
    if value is None:
        yield
        return
    from nfzoo import ops

    saved, ops.SWAP_RATIO = ops.SWAP_RATIO, value
    try:
        yield
    finally:
        ops.SWAP_RATIO = saved


class NfzooTrainer:
    """An nfzoo flow ``make_flow()``, trained by Keras ``fit`` with nfzoo's default compile
    (Adam at ``learning_rate``; XLA, or a TF graph with ``jit=False``) on a repeated tf.data
    pipeline of ``x``. A block is one ``fit(epochs=1, steps_per_epoch=steps)`` call, timed from
    the epoch's start to its end by a callback (the whole call's time is kept in
    ``fit_call_s``). With ``swap_ratio``, every block (so every trace of the step) runs with
    ``nfzoo.ops.SWAP_RATIO`` at that value."""

    def __init__(
        self,
        make_flow: Callable[[], object],
        x,
        learning_rate: float,
        batch: int,
        seed: int = 0,
        jit: bool = True,
        swap_ratio: float | None = None,
    ):
        import keras

        keras.utils.set_random_seed(seed)
        self.swap_ratio = swap_ratio
        self.flow = make_flow()
        self.flow.compile(learning_rate=learning_rate, jit_compile=jit)
        self.kernels = [tuple(v.shape) for v in self.flow.trainable_variables if len(v.shape) == 2]
        self.variables = self.flow.trainable_variables
        self.ds = tf_dataset(x, batch)
        self.fit_call_s: list[float] = []
        outer = self

        class EpochTimer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                outer._t0 = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                outer._t1 = time.perf_counter()

        self.timer = EpochTimer()

    def block(self, steps: int) -> float:
        with swap_ratio(self.swap_ratio):
            start = time.perf_counter()
            self.flow.fit(
                self.ds, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[self.timer]
            )
            self.fit_call_s.append(time.perf_counter() - start)
        return self._t1 - self._t0

    def log_prob(self, x) -> np.ndarray:
        return self.flow.log_prob(x.astype(np.float32)).numpy()


class TfpTrainer:
    """A TFP distribution ``make_dist() -> (dist, trainable variables)``, trained by a
    ``tf.function`` step (``jit_compile=jit``) with tf_keras' Adam on the same pipeline."""

    def __init__(
        self,
        make_dist: Callable[[], tuple],
        x,
        learning_rate: float,
        batch: int,
        jit: bool,
    ):
        import tensorflow as tf
        import tf_keras

        self.dist, self.variables = make_dist()
        self.kernels = [tuple(v.shape) for v in self.variables if len(v.shape) == 2]
        self.optimizer = tf_keras.optimizers.Adam(learning_rate=learning_rate)

        @tf.function(jit_compile=jit)
        def step(batch):
            with tf.GradientTape() as tape:
                loss = -tf.reduce_mean(self.dist.log_prob(batch))
            grads = tape.gradient(loss, self.variables)
            self.optimizer.apply_gradients(zip(grads, self.variables))
            return loss

        self.step = step
        self.it = iter(tf_dataset(x, batch))

    def block(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            loss = self.step(next(self.it))
        loss.numpy()
        return time.perf_counter() - start

    def log_prob(self, x) -> np.ndarray:
        return self.dist.log_prob(x.astype(np.float32)).numpy()


class ZukoTrainer:
    """A zuko flow (a torch module), a plain torch loop with torch.optim.Adam over the same
    batches of ``x``, in order."""

    def __init__(self, flow, x, learning_rate: float, batch: int):
        import torch

        self.flow = flow
        self.kernels = [tuple(p.shape[::-1]) for p in flow.parameters() if p.ndim == 2]
        self.optimizer = torch.optim.Adam(self.flow.parameters(), lr=learning_rate)
        n = len(x) // batch
        self.batches = torch.from_numpy(x[: n * batch]).reshape(n, batch, -1)
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


def tf_dataset(x, batch: int):
    """``x`` in batches of ``batch`` (the remainder dropped), repeated, prefetched."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(x).batch(batch, drop_remainder=True)
    return ds.repeat().prefetch(tf.data.AUTOTUNE)
