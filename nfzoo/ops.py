"""Small numerical helpers shared by the flow layers."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def soft_clamp(x: tf.Tensor, bound: float | None) -> tf.Tensor:
    """``bound * tanh(x / bound)``: identity near 0, smooth, and never beyond +-bound.

    Log-scales pass through this so that ``exp(log_scale)`` stays finite in float32 whatever
    the conditioner outputs. ``bound=None`` disables the clamp."""
    if bound is None:
        return x
    return bound * tf.tanh(x / bound)


def sum_event(x: tf.Tensor, event_ndims: int) -> tf.Tensor:
    """Sums the trailing ``event_ndims`` axes of ``x`` (per-dimension log-dets to one value
    per batch element)."""
    if event_ndims == 0:
        return x
    return tf.reduce_sum(x, axis=list(range(-event_ndims, 0)))


def batch_constant(value: tf.Tensor, like: tf.Tensor, event_ndims: int) -> tf.Tensor:
    """Broadcasts a scalar ``value`` to the batch shape of ``like`` (its shape without the
    trailing ``event_ndims`` axes): for layers whose log-det does not depend on the input."""
    batch_shape = tf.shape(like)[: tf.rank(like) - event_ndims]
    return tf.fill(batch_shape, tf.cast(value, like.dtype))


def per_image(fn, u: tf.Tensor) -> tf.Tensor:
    """Applies ``fn``, an op on image batches [N, H, W, C] (a convolution, space-to-depth), to
    ``u`` of shape [batch..., H, W, C] by folding the batch axes into one and back."""
    images = fn(tf.reshape(u, [-1, *u.shape[-3:]]))
    return tf.reshape(images, tf.concat([tf.shape(u)[:-3], tf.shape(images)[1:]], axis=0))


def householder_product(vectors: tf.Tensor) -> tf.Tensor:
    """Q = H_1 H_2 ... H_K for the rows v_k of ``vectors`` ([..., K, D]), H_k = I - 2 v v^T /
    |v|^2; leading axes are a batch of independent products (per-example Q in ``nfzoo.vae``).

    Q is orthogonal to rounding error whatever the v_k. Cost O(K D^2) per product."""
    dim = vectors.shape[-1]
    q = tf.eye(dim, dtype=vectors.dtype)
    for k in range(vectors.shape[-2]):
        v = vectors[..., k, :]
        # Q H_k = Q - 2 (Q v) v^T / |v|^2
        qv = tf.linalg.matvec(q, v)
        q = (
            q
            - 2.0
            * (qv[..., :, None] * v[..., None, :])
            / tf.reduce_sum(v**2, axis=-1)[..., None, None]
        )
    return q


#: ``compile``'s default for flows, ReverseKL and FlowVAE: training steps run per call of
#: the compiled function. Keras runs one by default, and for models this small the Python
#: and executor work around each call is a large share of a step (MAF D=8, 5 x [256, 256],
#: batch 512, one thread: 54.8 -> 63.9 steps/s going from 1 to 10 in one interleaved run).
#: As in Keras, batch-level callbacks then run once per 10 steps; pass 1 to have every step.
DEFAULT_STEPS_PER_EXECUTION = 10


def resolve_steps_per_execution(steps: int | None) -> int:
    """``steps``, or where None the default: ``DEFAULT_STEPS_PER_EXECUTION``, but 1 inside a
    ``tf.distribute`` strategy's scope, where Keras's multi-step loop fails under
    MirroredStrategy (TF 2.21: "You must feed a value for placeholder tensor
    'while/body/.../Placeholder'")."""
    if steps is not None:
        return steps
    return 1 if tf.distribute.has_strategy() else DEFAULT_STEPS_PER_EXECUTION


def resolve_optimizer(optimizer, learning_rate: float | None, global_clipnorm: float | None = None):
    """``optimizer`` as ``Model.compile`` takes it, except that "adam" with a
    ``learning_rate`` and/or a ``global_clipnorm`` becomes an Adam at that rate (Keras's
    default otherwise) that rescales each step's gradients to at most that global norm (the
    flows' and ReverseKL's default optimizer; ``Flow.compile`` passes a clip norm)."""
    if isinstance(optimizer, str) and optimizer.lower() == "adam":
        options = {}
        if learning_rate:
            options["learning_rate"] = learning_rate
        if global_clipnorm is not None:
            if not global_clipnorm > 0:
                raise ValueError(
                    f"global_clipnorm must be positive or None; received {global_clipnorm!r}."
                )
            options["global_clipnorm"] = float(global_clipnorm)
        if options:
            import keras

            return keras.optimizers.Adam(**options)
    return optimizer


def build_optimizer_variables(model) -> None:
    """Creates ``model.optimizer``'s slot variables now, eagerly, under the model's
    distribution strategy. Without a strategy, Keras's TensorFlow trainer defers this to the
    first trace of the training step; creating variables there makes ``tf.function`` trace
    the whole step a second time, which costs as much again as the first trace (measured:
    2 traces of MAF D=64's step in the first ``fit``; ``tools/bench.py train-throughput``
    reports the compile time). A no-op once built or before the model has weights."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or optimizer.built or not model.trainable_variables:
        return
    with model.distribute_strategy.scope():
        optimizer.build(model.trainable_variables)


def fixed_seed(seed: int | None) -> int:
    """``seed``, or a fresh random one when it is None: layers fix their seed at construction
    so that their config alone reproduces their initial weights and orderings."""
    if seed is None:
        return int(np.random.randint(0, 2**31 - 1))
    return int(seed)
