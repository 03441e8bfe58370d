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


def fixed_seed(seed: int | None) -> int:
    """``seed``, or a fresh random one when it is None: layers fix their seed at construction
    so that their config alone reproduces their initial weights and orderings."""
    if seed is None:
        return int(np.random.randint(0, 2**31 - 1))
    return int(seed)
