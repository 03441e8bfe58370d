"""Every use of a private Keras or TensorFlow API outside the XLA matmul (``nfzoo.ops``), each
behind a named function saying what public behaviour it stands in for, so that an upgrade
breaks in one place."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf
from keras.src.losses.loss import scale_loss_for_distribution, unscale_loss_for_distribution

__all__ = [
    "all_replicas",
    "apply_if",
    "scale_loss_for_distribution",
    "unscale_loss_for_distribution",
]


def all_replicas(flag: tf.Tensor) -> tf.Tensor:
    """``flag`` AND-ed over the replicas in sync (itself outside a distribution strategy), so
    that every replica takes the same branch of ``apply_if``. Public API only."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return flag
    failed = context.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(flag, tf.float32))
    return failed < 0.5  # no replica failed


def apply_if(pred: tf.Tensor, fn: Callable[..., object], args: Sequence) -> None:
    """Runs ``fn(*args)`` when ``pred`` holds, from a replica context, where ``fn`` may call
    ``merge_call`` (a Keras optimizer's ``apply_gradients`` does under MirroredStrategy).

    TensorFlow refuses a ``tf.cond`` in a replica context whose branch calls ``merge_call``;
    Keras's own LossScaleOptimizer therefore moves the cond to the cross-replica context and
    runs the branch on each replica with its own ``args``, which is done here. Whether a
    strategy needs that is told by the private
    ``tf.__internal__.distribute.strategy_supports_no_merge_call`` (as Keras asks it); ``pred``
    must agree across replicas (``all_replicas``)."""
    if tf.__internal__.distribute.strategy_supports_no_merge_call():

        def run_here():
            fn(*args)
            return tf.constant(True)

        tf.cond(pred, run_here, lambda: tf.constant(False))
        return

    def cross_replica(distribution, pred, args):
        first = distribution.experimental_local_results(pred)[0]

        def run():
            distribution.extended.call_for_each_replica(fn, args=tuple(args))
            return tf.constant(True)

        tf.cond(first, run, lambda: tf.constant(False))

    tf.distribute.get_replica_context().merge_call(cross_replica, args=(pred, list(args)))
