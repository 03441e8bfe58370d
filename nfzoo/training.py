"""Training by maximum likelihood with a fixed budget, on one device or several.

One function, used by ``tools/train_zoo.py`` and by ``nfzoo train``: it builds the flow
inside the chosen ``tf.distribute`` strategy's scope, streams the training set as a shuffled,
repeated ``tf.data`` pipeline, and runs Keras ``fit`` (XLA-compiled wherever each replica
has a physical device of its own; see ``_can_jit``).

Multi-device and multi-host use TensorFlow's own strategies:

* ``"mirrored"``: ``tf.distribute.MirroredStrategy`` over the local GPUs (or logical CPUs);
  the global batch is split across replicas and gradients are all-reduced.
* ``"multiworker"``: ``tf.distribute.MultiWorkerMirroredStrategy``; start one process per
  worker with ``TF_CONFIG`` describing the cluster, e.g. on two hosts
  ``TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
  "task": {"type": "worker", "index": 0}}'`` (index 1 on the second host), each running
  the same ``nfzoo train ... --strategy multiworker`` command.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from nfzoo import data as nfzoo_data
from nfzoo.console import progress_verbosity

__all__ = ["STRATEGIES", "TrainResult", "get_strategy", "train_flow"]

STRATEGIES = ("none", "mirrored", "multiworker")


def get_strategy(name: str) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy called ``name`` (one of ``STRATEGIES``)."""
    if name == "none":
        return tf.distribute.get_strategy()  # the default, single-device strategy
    if name == "mirrored":
        # every local GPU; without GPUs, every logical CPU (tf.config can split one CPU)
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}; received {name!r}.")


def _can_jit(name: str, dist: tf.distribute.Strategy) -> bool:
    """XLA needs each replica on its own physical device: it runs single-device and on
    mirrored GPUs; replicas on logical CPUs (one physical CPU split) and multi-worker
    collectives run as TF graphs instead."""
    if name == "none" or dist.num_replicas_in_sync == 1:
        return True
    return name == "mirrored" and bool(tf.config.list_logical_devices("GPU"))


@dataclass
class TrainResult:
    flow: keras.Model
    steps: int
    seconds: float
    final_loss: float
    replicas: int


def train_flow(
    make_flow: Callable[[], keras.Model],
    train: np.ndarray,
    *,
    steps: int,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    seed: int = 0,
    strategy: str = "none",
    validation: np.ndarray | None = None,
    patience: int | None = None,
    dequantize: bool = False,
    callbacks: list | None = None,
    verbose: int | str = "auto",
) -> TrainResult:
    """Builds a flow with ``make_flow()`` inside the strategy's scope and trains it by
    maximum likelihood for exactly ``steps`` steps of ``batch_size`` (global) examples.

    Args:
      make_flow: returns a new, untrained Flow (called inside the strategy scope).
      train: training data, float array [n, *event_shape].
      steps, batch_size, learning_rate, seed: the budget and the randomness (Adam, fixed
        shuffling seed, Keras global seed).
      strategy: "none", "mirrored" or "multiworker" (see the module docstring).
      validation: held-out data scored every 100 steps (reported as ``val_loss``).
      patience: with ``validation``, stop after this many evaluations without improvement
        and restore the best weights (early stopping); None trains for all ``steps``.
      dequantize: ``train`` and ``validation`` hold integer counts (pixels); each training
        batch gets fresh uniform noise (``nfzoo.data.dequantized``), the validation set and
        the initialisation batch one fixed draw each.
      callbacks: more Keras callbacks for ``fit`` (an epoch is 100 steps).
      verbose: Keras progress display; "auto": a progress bar on a terminal, one plain line
        per epoch otherwise (``nfzoo.console.progress_verbosity``).
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1; received {steps}, {batch_size}.")
    keras.utils.set_random_seed(seed)
    dist = get_strategy(strategy)
    with dist.scope():
        flow = make_flow()
        flow.compile(learning_rate=learning_rate, jit_compile=_can_jit(strategy, dist))
    data = (
        tf.data.Dataset.from_tensor_slices(np.asarray(train, dtype=flow.compute_dtype))
        .shuffle(min(len(train), 100_000), seed=seed, reshuffle_each_iteration=True)
        .repeat()
        .batch(batch_size, drop_remainder=True)
    )
    init = np.asarray(train[: max(batch_size, 1024)])
    if dequantize:
        data = nfzoo_data.dequantized(data, seed=seed)
        init = nfzoo_data.dequantize(init, seed=seed)
        if validation is not None:
            validation = nfzoo_data.dequantize(validation, seed=seed + 1)
    data = data.prefetch(tf.data.AUTOTUNE)
    flow.initialize(init)
    steps_per_epoch = min(steps, 100)
    epochs, rest = divmod(steps, steps_per_epoch)
    if rest:
        raise ValueError(f"steps must be a multiple of {steps_per_epoch}; received {steps}.")
    callbacks = list(callbacks or [])
    if validation is not None and patience is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(patience=patience, restore_best_weights=True)
        )
    if verbose == "auto":
        verbose = progress_verbosity()
    start = time.perf_counter()
    history = flow.fit(
        data,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        validation_data=None if validation is None else (np.asarray(validation),),
        callbacks=callbacks,
        verbose=verbose,
    )
    seconds = time.perf_counter() - start
    done = len(history.history["loss"]) * steps_per_epoch
    final_loss = float(history.history["loss"][-1])
    return TrainResult(flow, done, seconds, final_loss, dist.num_replicas_in_sync)
